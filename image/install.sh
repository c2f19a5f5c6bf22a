#!/bin/sh
# The two steps of the image build, shared by the Dockerfile and tests/packaging/test_image_install.py so
# the test installs exactly what the image installs.
#
#   install.sh build-env ENV SRC  a virtualenv without pip holding only the hash-locked build backend
#                                 (SRC/requirements-build.lock)
#   install.sh wheel SRC OUTDIR   build SRC's wheel with that backend, in a throwaway build-env
#   install.sh venv VENV SRC WHEELDIR
#                                 a virtualenv without pip: the runtime dependencies from SRC/requirements.lock
#                                 (hashes required, wheels only), then the wheel from WHEELDIR without its
#                                 dependencies, bytecode compiled (the root filesystem is read-only at run time)
#
# $PYTHON (default python3) runs pip; pip writes into the target environment with --python, so neither pip
# nor setuptools ends up in it.
set -eu
PYTHON="${PYTHON:-python3}"
PIP="$PYTHON -m pip --disable-pip-version-check --no-input"

build_env() {
  "$PYTHON" -m venv --without-pip "$1"
  $PIP --python "$1/bin/python" install --quiet --require-hashes --no-deps \
    --only-binary=:all: -r "$2/requirements-build.lock"
}

case "${1:-}" in
  build-env)
    build_env "$2" "$3"
    ;;
  wheel)
    src="$2" out="$3"
    env=$(mktemp -d "${TMPDIR:-/tmp}/stablelb-wheel-build.XXXXXX")
    trap 'rm -rf "$env"' EXIT
    build_env "$env" "$src"
    # No build isolation: the backend is the locked one, not whatever the index has today.
    $PIP --python "$env/bin/python" wheel --quiet --no-deps --no-build-isolation --wheel-dir "$out" "$src"
    ;;
  venv)
    venv="$2" src="$3" wheels="$4"
    "$PYTHON" -m venv --without-pip "$venv"
    $PIP --python "$venv/bin/python" install --quiet --require-hashes --no-deps \
      --only-binary=:all: --no-compile -r "$src/requirements.lock"
    $PIP --python "$venv/bin/python" install --quiet --no-deps --no-index --no-compile \
      "$wheels"/stablelb-*.whl
    "$venv/bin/python" -m compileall -q "$venv/lib"
    ;;
  *)
    echo "usage: $0 build-env ENV SRC | wheel SRC OUTDIR | venv VENV SRC WHEELDIR" >&2
    exit 2
    ;;
esac
