#!/usr/bin/env bash
# Build the pinned local control-plane binaries (kube-apiserver, etcd) and optionally Jaeger v2 from the
# Go module proxy, caching them under ~/.cache/stablelb/bin/<component>-<version>/.
# $KUBEBUILDER_ASSETS (envtest's convention: one folder with kube-apiserver and etcd), when set and complete,
# is used instead of building those two; e2e/harness/binaries.py looks in the same places in the same order.
# Usage: build-binaries.sh [kube|etcd|jaeger|promtool|kube-oldest|helm|actionlint|packaging|default|all]...
#   (one or more, built in that order under one lock; default: etcd kube; packaging: helm actionlint kube-oldest)
set -euo pipefail

K8S_VERSION="${STABLELB_K8S_VERSION:-v1.37.2}"
ETCD_VERSION="${STABLELB_ETCD_VERSION:-v3.6.16}"
JAEGER_VERSION="${STABLELB_JAEGER_VERSION:-v1.76.0}"
# promtool checks and unit-tests the alert rules: module github.com/prometheus/prometheus v0.316.0 = Prometheus 3.16.0.
PROMTOOL_VERSION="${STABLELB_PROMTOOL_VERSION:-v0.316.0}"
# Packaging checks: the oldest supported Kubernetes minor (the newest three are supported), helm, actionlint.
K8S_OLDEST_VERSION="${STABLELB_K8S_OLDEST_VERSION:-v1.35.4}"
HELM_VERSION="${STABLELB_HELM_VERSION:-v4.3.2}"
ACTIONLINT_VERSION="${STABLELB_ACTIONLINT_VERSION:-v1.7.12}"
CACHE="${STABLELB_CACHE:-$HOME/.cache/stablelb}"

START=$SECONDS
say() { printf '[stablelb build %4ds] %s\n' "$((SECONDS - START))" "$*" >&2; }

# Go is only needed when something has to be built: cached binaries and KUBEBUILDER_ASSETS work without it.
need_go() {
  if ! command -v go >/dev/null 2>&1; then
    say "Go is not installed. Install Go >= 1.24 (https://go.dev/doc/install, or 'apt-get install golang'),"
    say "or point KUBEBUILDER_ASSETS at a folder holding envtest's kube-apiserver and etcd binaries"
    say "(e.g. KUBEBUILDER_ASSETS=\$(setup-envtest use -p path 1.37.x))."
    exit 3
  fi
}

# True when $KUBEBUILDER_ASSETS names a folder with an executable $1.
from_assets() {
  [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/$1" ]]
}

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  if from_assets kube-apiserver && from_assets etcd; then
    say "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS holds kube-apiserver and etcd: using those, not building them"
  else
    say "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks kube-apiserver or etcd: using the cache/build instead"
  fi
fi

assets_complete() { from_assets kube-apiserver && from_assets etcd; }

work_module() {
  local dir
  dir=$(mktemp -d "${TMPDIR:-/tmp}/stablelb-build.XXXXXX")
  printf '%s' "$dir"
}

build_kube() {
  local out="$CACHE/bin/k8s-$K8S_VERSION"
  if assets_complete; then return; fi
  if [[ -x "$out/kube-apiserver" ]]; then say "kube-apiserver $K8S_VERSION cached in $out"; return; fi
  need_go
  local dir minor
  dir=$(work_module)
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  say "kube-apiserver $K8S_VERSION: resolving k8s.io/kubernetes module (step 1/3)"
  (cd "$dir" && go mod init kasbuild >/dev/null 2>&1)
  local gomod
  gomod=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p') || gomod=""
  [[ -n "$gomod" && -f "$gomod" ]] || { say "could not download k8s.io/kubernetes@$K8S_VERSION (network? GOPROXY?)"; exit 1; }
  {
    echo "module kasbuild"
    echo "go 1.24"
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo "replace ("
    grep -E '^\s*k8s\.io/[a-z0-9-]+ v0\.0\.0\s*$' "$gomod" | awk -v v="v0.$minor.${K8S_VERSION##*.}" '{print "\t" $1 " => " $1 " " v}' | sort -u
    echo ")"
  } >"$dir/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver"\n' >"$dir/tools.go"
  say "kube-apiserver $K8S_VERSION: go mod tidy (step 2/3, downloads modules)"
  (cd "$dir" && go mod tidy >/dev/null 2>&1) || { say "go mod tidy failed; rerun without cache to see why: cd $dir && go mod tidy"; exit 1; }
  say "kube-apiserver $K8S_VERSION: go build (step 3/3, ~7 min cold on 2 cores)"
  mkdir -p "$out.tmp"
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  (cd "$dir" && go build -ldflags "$ld" -o "$out.tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
  rm -rf "$out" && mv "$out.tmp" "$out"
  rm -rf "$dir"
  say "kube-apiserver $K8S_VERSION built into $out"
}

build_etcd() {
  local out="$CACHE/bin/etcd-$ETCD_VERSION"
  if assets_complete; then return; fi
  if [[ -x "$out/etcd" ]]; then say "etcd $ETCD_VERSION cached in $out"; return; fi
  need_go
  local dir
  dir=$(work_module)
  say "etcd $ETCD_VERSION: resolving and building (~1 min)"
  (cd "$dir" && go mod init etcdbuild >/dev/null 2>&1 \
     && printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >tools.go \
     && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1 && go mod tidy >/dev/null 2>&1) \
    || { say "resolving etcd failed (network? GOPROXY?); rerun by hand to see why: cd $dir && go mod tidy"; exit 1; }
  mkdir -p "$out.tmp"
  (cd "$dir" && go build -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3)
  rm -rf "$out" && mv "$out.tmp" "$out"
  rm -rf "$dir"
  say "etcd $ETCD_VERSION built into $out"
}

# A command from a module too large for a tools.go + tidy (its whole graph): `go get -tool` pins it in a
# throwaway module, then it is built from there. $1 name, $2 main package, $3 module version,
# $4 cold build estimate, $5 extra go build flags (tags), $6 -ldflags version stamp.
build_go_get_tool() {
  local name="$1" pkg="$2" version="$3" estimate="$4" flags="$5" ld="$6"
  local out="$CACHE/bin/$name-$version"
  if [[ -x "$out/$name" ]]; then say "$name $version cached in $out"; return; fi
  need_go
  local dir
  dir=$(work_module)
  say "$name $version: resolving and building ($estimate cold on 2 cores)"
  (cd "$dir" && go mod init "${name}build" >/dev/null 2>&1 && go get -tool "$pkg@$version" >/dev/null 2>&1) \
    || { say "resolving $name failed (network? GOPROXY?); rerun by hand: cd $dir && go get -tool $pkg@$version"; exit 1; }
  mkdir -p "$out.tmp"
  # $flags is a list of words (or nothing) on purpose.
  # shellcheck disable=SC2086
  (cd "$dir" && go build $flags -ldflags "-s -w $ld" -o "$out.tmp/$name" "$pkg")
  rm -rf "$out" && mv "$out.tmp" "$out"
  rm -rf "$dir"
  say "$name $version built into $out"
}

build_jaeger() {
  build_go_get_tool jaeger github.com/jaegertracing/jaeger/cmd/jaeger "$JAEGER_VERSION" "~8 min" "" ""
}

# The oldest supported kube-apiserver, for the version matrix; same recipe, its own cache folder.
build_kube_oldest() {
  K8S_VERSION="$K8S_OLDEST_VERSION" build_kube
}

# A Go command-line tool from one pinned module version: $1 name, $2 module, $3 package, $4 version,
# $5 extra -ldflags (version stamp).
build_go_tool() {
  local name="$1" module="$2" pkg="$3" version="$4" ld="$5"
  local out="$CACHE/bin/$name-$version"
  if [[ -x "$out/$name" ]]; then say "$name $version cached in $out"; return; fi
  need_go
  local dir
  dir=$(work_module)
  say "$name $version: resolving and building (~1-3 min cold on 2 cores)"
  (cd "$dir" && go mod init "${name}build" >/dev/null 2>&1 \
     && printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$pkg" >tools.go \
     && go get "$module@$version" >/dev/null 2>&1 && go mod tidy >/dev/null 2>&1) \
    || { say "resolving $name failed (network? GOPROXY?); rerun by hand: cd $dir && go get $module@$version"; exit 1; }
  mkdir -p "$out.tmp"
  (cd "$dir" && go build -ldflags "-s -w $ld" -o "$out.tmp/$name" "$pkg")
  rm -rf "$out" && mv "$out.tmp" "$out"
  rm -rf "$dir"
  say "$name $version built into $out"
}

build_helm() {
  build_go_tool helm helm.sh/helm/v4 helm.sh/helm/v4/cmd/helm "$HELM_VERSION" \
    "-X helm.sh/helm/v4/internal/version.version=$HELM_VERSION"
}

build_actionlint() {
  build_go_tool actionlint github.com/rhysd/actionlint github.com/rhysd/actionlint/cmd/actionlint \
    "$ACTIONLINT_VERSION" "-X github.com/rhysd/actionlint.version=$ACTIONLINT_VERSION"
}

# promtool from Prometheus's module. The remove_all_sd tag leaves out the service-discovery plugins (every
# cloud SDK), which the rule commands never use.
build_promtool() {
  build_go_get_tool promtool github.com/prometheus/prometheus/cmd/promtool "$PROMTOOL_VERSION" "~10 min" \
    "-tags remove_all_sd" "-X github.com/prometheus/common/version.Version=$PROMTOOL_VERSION"
}

[[ $# -gt 0 ]] || set -- default
# Two builders at once (two `make test` runs, a demo beside a test) would share each <component>.tmp folder
# and one would lose its work: the second waits here, then finds the first one's binaries cached.
mkdir -p "$CACHE/bin"
exec 9>"$CACHE/bin/.build.lock"
if ! flock -n 9; then
  say "another build of the local binaries is running; waiting for it (lock $CACHE/bin/.build.lock)"
  flock 9
fi
usage="usage: $0 [kube|etcd|jaeger|promtool|kube-oldest|helm|actionlint|packaging|default|all]..."
for what in "$@"; do
  case "$what" in
    kube|etcd|jaeger|promtool|kube-oldest|helm|actionlint|packaging|default|all) ;;
    *) say "$usage"; exit 2 ;;
  esac
done
for what in "$@"; do
  case "$what" in
    kube) build_kube ;;
    etcd) build_etcd ;;
    jaeger) build_jaeger ;;
    promtool) build_promtool ;;
    kube-oldest) build_kube_oldest ;;
    helm) build_helm ;;
    actionlint) build_actionlint ;;
    packaging) build_helm; build_actionlint; build_kube_oldest ;;
    default) build_etcd; build_kube ;;
    all) build_etcd; build_kube; build_jaeger; build_helm; build_actionlint; build_kube_oldest; build_promtool ;;
  esac
done
