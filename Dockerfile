# AgentFlow operator image.
# Build from the repository root:  docker build -t agentflow-operator .
# (tests/e2e/cluster/images.sh builds it with buildah against a locally made Debian base.)
ARG BASE_IMAGE=debian:bookworm-slim

# ---- build: a virtualenv with agentflow[operator] and its dependencies -----------------
FROM ${BASE_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Optional package index settings for builds behind a mirror or a TLS-inspecting proxy.
ARG PIP_INDEX_URL
ARG PIP_CERT
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/agentflow \
 && /opt/agentflow/bin/pip install --upgrade pip
WORKDIR /src
# Dependencies first, from the metadata alone, so this layer is reused while only code changes.
COPY pyproject.toml README.md ./
RUN mkdir -p operator/agentflow \
 && touch operator/agentflow/__init__.py \
 && /opt/agentflow/bin/pip install ".[operator]" \
 && /opt/agentflow/bin/pip uninstall -y agentflow
COPY operator/ operator/
RUN /opt/agentflow/bin/pip install --no-deps ".[operator]" \
 && /opt/agentflow/bin/python -c "import agentflow"

# ---- final: Debian's python3, the virtualenv, a non-root user ----------------------------
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 agentflow \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/agentflow --create-home \
      --shell /usr/sbin/nologin agentflow
COPY --from=build /opt/agentflow /opt/agentflow
ENV PATH=/opt/agentflow/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /home/agentflow
ENTRYPOINT ["agentflow"]
CMD ["operator"]
