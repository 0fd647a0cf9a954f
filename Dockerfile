# syntax=docker/dockerfile:1
# kafka-expose: one image for the webhook server (`serve`), the controller (`controller`) and the CLI.
#   docker build -t ghcr.io/kafka-expose/kafka-expose:0.1.0 .
#
# Stage 1 builds the project's wheel with build tools pinned by hash (requirements-build.lock) and
# installs it into a virtualenv with exactly the dependencies of requirements.lock (binary wheels,
# every one checked against its hash: nothing is resolved at build time). Stage 2 is the same slim Python base with only that virtualenv copied
# in: no compiler, no build tools, no source tree. No HEALTHCHECK: Kubernetes probes /healthz and
# /readyz (manifests/base/deployment.yaml).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md requirements.lock requirements-build.lock ./
COPY webhook ./webhook
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes --only-binary=:all: -r requirements-build.lock \
 && /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
 && python -m venv /opt/kafka-expose \
 && /opt/kafka-expose/bin/pip install --require-hashes --only-binary=:all: -r requirements.lock \
 && /opt/kafka-expose/bin/pip install --no-deps --no-index /wheels/*.whl \
 && /opt/kafka-expose/bin/pip uninstall --yes pip \
 && /opt/kafka-expose/bin/python -m compileall -q /opt/kafka-expose

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.source="https://github.com/kafka-expose/kafka-expose" \
      org.opencontainers.image.title="kafka-expose" \
      org.opencontainers.image.licenses="Apache-2.0"
# A numeric, non-root user that exists in /etc/passwd (runAsUser in the manifests matches it).
RUN groupadd --system --gid 10001 kafka-expose \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin kafka-expose
COPY --from=build /opt/kafka-expose /opt/kafka-expose
ENV PATH=/opt/kafka-expose/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /tmp
USER 10001:10001
EXPOSE 8443
ENTRYPOINT ["kafka-expose"]
CMD ["--help"]
