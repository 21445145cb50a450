# syntax=docker/dockerfile:1
#
# smtp-probe container image.
#
#   docker build -t smtp-probe:0.1.0 .
#   docker run --rm -p 10587:10587 -v "$PWD/config.yml:/etc/smtp-probe/config.yml:ro" smtp-probe:0.1.0
#   docker run --rm -p 10587:10587 smtp-probe:0.1.0 demo --listen 0.0.0.0:10587
#
# The daemon reads /etc/smtp-probe/config.yml (mount your own; the image has
# only the documented example beside it, /etc/smtp-probe/config.example.yml).
# tests/deploy/test_container.py runs the commands of this file for real
# (wheel build, install, --version, validate, run + HEALTHCHECK): keep the RUN
# lines plain so that test can replay them.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- build stage
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY smtp_probe ./smtp_probe
RUN pip wheel --no-deps --wheel-dir /wheels .

# -------------------------------------------------------------- runtime stage
FROM ${PYTHON_IMAGE} AS runtime
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Binary wheels only: the slim image has no compiler, and every dependency
# publishes wheels for CPython 3.11 on manylinux.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --only-binary=:all: /wheels/*.whl
# A fixed numeric UID, so Kubernetes' runAsNonRoot can verify it.
RUN useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin smtp-probe
COPY config/example.yml /etc/smtp-probe/config.example.yml
LABEL org.opencontainers.image.title="smtp-probe" \
      org.opencontainers.image.description="End-to-end SMTP->IMAP mail-flow monitor, exported to Prometheus" \
      org.opencontainers.image.licenses="Apache-2.0"

USER 10001:10001
EXPOSE 10587
# SIGTERM: stop scheduling, let runs in progress finish and delete their
# messages (up to 30 s), exit 0. Give it 35 s or more before SIGKILL.
STOPSIGNAL SIGTERM
# No curl in the slim image: the image's own Python asks /-/healthy (never
# through an HTTP proxy from the environment). Set SMTP_PROBE_HEALTHCHECK_URL
# when the daemon listens elsewhere than :10587.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u; url = os.environ.get('SMTP_PROBE_HEALTHCHECK_URL', 'http://127.0.0.1:10587/-/healthy'); sys.exit(0 if u.build_opener(u.ProxyHandler({})).open(url, timeout=4).status == 200 else 1)"]
ENTRYPOINT ["smtp-probe"]
CMD ["run", "--config", "/etc/smtp-probe/config.yml"]
