# syntax=docker/dockerfile:1
# stablelb controller image. Build and push (README "Quick start"):
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg VERSION=$(python3 -c 'import controller; print(controller.__version__)') \
#     --build-arg REVISION=$(git rev-parse HEAD) -t REGISTRY/stablelb-controller:VERSION --push .
# The build stage builds the wheel with a hash-locked setuptools and installs the runtime dependencies from
# requirements.lock (hashes required, wheels only) into a virtualenv without pip; the final stage copies only
# that virtualenv. image/install.sh holds both steps; tests/packaging/test_image_install.py runs the same script.

# python:3.11-slim-bookworm, pinned by digest; it must be the multi-arch index digest (update tag and digest
# together: `docker buildx imagetools inspect python:3.11-slim-bookworm`). This digest was taken from a public
# record and could not be checked from the machine this was written on (no registry access there).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE requirements.lock requirements-build.lock ./
COPY image/install.sh ./image/
COPY controller ./controller
RUN sh image/install.sh wheel /src /dist \
 && sh image/install.sh venv /opt/stablelb /src /dist

FROM ${PYTHON_IMAGE}
ARG VERSION
ARG REVISION=unknown
ARG SOURCE=https://github.com/stablelb/stablelb
LABEL org.opencontainers.image.title="stablelb-controller" \
      org.opencontainers.image.description="Assigns stable LoadBalancer IPs to Kubernetes Services from IPPools" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"
# The base image's own pip, setuptools and wheel are not needed at run time: remove them (and their scripts).
RUN python -m pip uninstall --yes --quiet pip setuptools wheel \
 && ! python -c 'import pip' 2>/dev/null \
 && ! python -c 'import setuptools' 2>/dev/null
# Bytecode was compiled in the build stage: the root filesystem is read-only at run time.
# STABLELB_REVISION: the git commit in stablelb_build_info{revision}.
ENV PATH=/opt/stablelb/bin:$PATH \
    STABLELB_REVISION=${REVISION} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/stablelb /opt/stablelb
# Numeric IDs so Kubernetes can verify runAsNonRoot without reading /etc/passwd.
RUN groupadd --system --gid 65532 stablelb \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin stablelb
USER 65532:65532
WORKDIR /
EXPOSE 8080 8081
ENTRYPOINT ["stablelb-controller"]
