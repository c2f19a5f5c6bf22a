# syntax=docker/dockerfile:1
# stablelb controller image: `docker build -t stablelb-controller:dev .`
# The build stage installs the package into a virtualenv; the final stage copies only that virtualenv onto a
# clean slim base, so no compiler, pip cache or source tree ends up in the image.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/stablelb
WORKDIR /src
# README.md is optional for the build (pyproject's readme); the wildcard keeps COPY from failing without it.
COPY pyproject.toml README.m[d] ./
COPY controller ./controller
RUN /opt/stablelb/bin/pip install --no-compile . \
 && /opt/stablelb/bin/python -m compileall -q /opt/stablelb/lib \
 && /opt/stablelb/bin/pip uninstall -y pip

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="stablelb-controller" \
      org.opencontainers.image.description="Assigns stable LoadBalancer IPs to Kubernetes Services from IPPools" \
      org.opencontainers.image.licenses="Apache-2.0"
# Bytecode was compiled in the build stage: the root filesystem is read-only at run time.
ENV PATH=/opt/stablelb/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/stablelb /opt/stablelb
# Numeric IDs so Kubernetes can verify runAsNonRoot without reading /etc/passwd.
RUN groupadd --system --gid 65532 stablelb \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin stablelb
USER 65532:65532
WORKDIR /
EXPOSE 8080
ENTRYPOINT ["python", "-m", "controller"]
