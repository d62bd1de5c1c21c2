# syntax=docker/dockerfile:1
# CPU image of the Chatterbox TTS server.
#   docker build -t chatterbox-tts .
#   docker run --rm -p 8000:8000 -v tts-cache:/cache -v tts-data:/data chatterbox-tts            # real model
#   docker run --rm -p 8000:8000 -e TTS_STAND_IN=true chatterbox-tts                             # tones, no weights
# Settings are TTS_* environment variables (flags after the image name override them: ... chatterbox-tts --port 9000).
# The GPU image is Dockerfile.cuda.

ARG BASE_IMAGE=python:3.11.14-slim-bookworm

FROM ${BASE_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
COPY requirements.txt ./
# onnxruntime-gpu is swapped for the smaller CPU-only onnxruntime wheel (same import name; never both), then the
# stamp of the ORIGINAL requirements.txt is written, so run.sh sees the venv as current and installs nothing.
RUN python3 -m venv /app/.venv \
    && sed -E 's/^onnxruntime-gpu([^A-Za-z0-9_.-]|$)/onnxruntime\1/' requirements.txt > /tmp/requirements-cpu.txt \
    && ! grep -q '^onnxruntime-gpu' /tmp/requirements-cpu.txt \
    && /app/.venv/bin/pip install --no-cache-dir -r /tmp/requirements-cpu.txt \
    && sha256sum requirements.txt | cut -d' ' -f1 > /app/.venv/.requirements.sha256

FROM ${BASE_IMAGE}
# uid 10001: a non-root user that matches no host account (the Helm chart's securityContext uses the same id).
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /app --shell /usr/sbin/nologin tts \
    && mkdir -p /data/voices /cache/huggingface /cache/stand-in /cache/numba \
    && chown -R tts:tts /data /cache
WORKDIR /app
# Code and venv stay root-owned (read-only to the server); only /data and /cache are written.
COPY --from=build /app/.venv /app/.venv
COPY requirements.txt run.sh server.py ./
COPY chatterbox_server ./chatterbox_server
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TTS_HOST=0.0.0.0 \
    TTS_PORT=8000 \
    TTS_VOICES_DIR=/data/voices \
    TTS_STAND_IN_DIR=/cache/stand-in/tiny \
    HF_HOME=/cache/huggingface \
    NUMBA_CACHE_DIR=/cache/numba
USER 10001:10001
VOLUME ["/data", "/cache"]
EXPOSE 8000
# Liveness only (the process answers); readiness (model loaded, not draining) is /health/ready, which compose and
# Kubernetes probe themselves. start-period covers a first model download + load + warm-up.
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["/app/.venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('TTS_PORT', '8000'), timeout=4)"]
# SIGTERM starts the drain: /health/ready turns 503, in-flight streams get TTS_SHUTDOWN_GRACE_S to finish.
STOPSIGNAL SIGTERM
ENTRYPOINT ["./run.sh"]
