# syntax=docker/dockerfile:1
# opa-sidecar image: docker build -t opa-sidecar:0.1.0 .
#
# The build stage makes wheels for the sidecar and every dependency; the runtime
# stage installs them from a bind mount (no network, no compiler, no wheel files
# left in a layer) and runs as an unprivileged user.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sidecar ./sidecar
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN groupadd --system --gid 10001 opa-sidecar \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin opa-sidecar
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels opa-sidecar
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# 9191: ext_authz gRPC (--grpc-addr); 9192: ext_authz HTTP mode and /v1/check (--http-addr);
# 9193: /healthz, /readyz, /metrics (--probe-addr).
EXPOSE 9191 9192 9193
ENTRYPOINT ["opa-sidecar", "serve"]
