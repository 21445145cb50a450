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
#
# Build inputs, both optional:
#   --build-arg PYTHON_IMAGE=IMAGE   the base of both stages: any image with
#       python3 (3.11 or newer, with its venv module) on the PATH. Everything
#       is installed into the venv /opt/smtp-probe, so where the base keeps
#       its Python does not matter.
#   --build-context wheelhouse=DIR --build-arg PIP_NO_INDEX=1
#       install from a directory of wheels (the versions requirements.lock
#       pins, setuptools and wheel; authres, dkimpy and pyspf as sdists: they
#       publish no wheels) instead of PyPI, for a build without access to PyPI.
# CI builds this file with podman on a Debian base made by
# scripts/build-base-image and runs the image (tests/deploy/test_container.py).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Empty unless replaced by `--build-context wheelhouse=DIR`.
FROM scratch AS wheelhouse

# ---------------------------------------------------------------- build stage
FROM ${PYTHON_IMAGE} AS build
# 0: pip asks PyPI (and any wheels in /wheelhouse).
ARG PIP_NO_INDEX=0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_FIND_LINKS=/wheelhouse
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY smtp_probe ./smtp_probe
# The packaged demo config: smtp_probe/demo.yml may be a link to
# ../config/demo.yml, so the file goes to the same place here.
COPY config/demo.yml ./config/demo.yml
# pip lives in its own venv (Debian's python3 has none, and its system
# Python is externally managed); the image's venv gets no pip at all.
RUN python3 -m venv /opt/pip \
 && python3 -m venv --without-pip /opt/smtp-probe
# The runtime dependencies exactly as requirements.lock pins them (made by
# scripts/lock), every file checked against the lock's sha256 hashes; then
# the project itself, with no dependencies of its own choosing, and `pip
# check` that the lock gave it everything it needs.
# Binary wheels only: the runtime image has no compiler, and every
# dependency publishes wheels for CPython on manylinux, except authres,
# dkimpy and pyspf: pure Python, published as source only, built here (no
# compiler needed; a wheelhouse holds their sdists, and setuptools and wheel
# to build them).
RUN --mount=type=bind,from=wheelhouse,target=/wheelhouse \
    /opt/pip/bin/pip --python /opt/smtp-probe/bin/python install \
        --require-hashes --only-binary=:all: --no-binary=authres,dkimpy,pyspf \
        -r requirements.lock \
 && /opt/pip/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/pip/bin/pip --python /opt/smtp-probe/bin/python install --no-deps /wheels/*.whl \
 && /opt/pip/bin/pip --python /opt/smtp-probe/bin/python check

# -------------------------------------------------------------- runtime stage
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/smtp-probe/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A fixed numeric UID and GID, so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --gid 10001 smtp-probe \
 && useradd --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin smtp-probe
# The venv refers to the base image's Python by path: same base, same path.
COPY --from=build /opt/smtp-probe /opt/smtp-probe
COPY config/example.yml /etc/smtp-probe/config.example.yml
LABEL org.opencontainers.image.title="smtp-probe" \
      org.opencontainers.image.description="End-to-end SMTP->IMAP mail-flow monitor, exported to Prometheus" \
      org.opencontainers.image.licenses="Apache-2.0"

USER 10001:10001
EXPOSE 10587
# SIGTERM: stop scheduling, let runs in progress finish and delete their
# messages (up to 30 s), exit 0. Give it 35 s or more before SIGKILL.
STOPSIGNAL SIGTERM
# No curl in the image: its own Python asks /-/healthy (never through an
# HTTP proxy from the environment). Set SMTP_PROBE_HEALTHCHECK_URL when the
# daemon listens elsewhere than :10587, or to https://127.0.0.1:10587/-/healthy
# with a --web.config.file that turns TLS on (add --web.health-without-auth
# when it also asks for basic auth). The check asks its own loopback, so it
# does not verify the certificate: liveness, not identity, is the question.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/opt/smtp-probe/bin/python", "-c", "import os, ssl, sys, urllib.request as u; url = os.environ.get('SMTP_PROBE_HEALTHCHECK_URL', 'http://127.0.0.1:10587/-/healthy'); sys.exit(0 if u.build_opener(u.ProxyHandler({}), u.HTTPSHandler(context=ssl._create_unverified_context())).open(url, timeout=4).status == 200 else 1)"]
ENTRYPOINT ["/opt/smtp-probe/bin/smtp-probe"]
CMD ["run", "--config", "/etc/smtp-probe/config.yml"]
