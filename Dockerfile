# syntax=docker/dockerfile:1
# Attest worker image: `docker build -t attest .`, then `docker run attest worker`
# (or any other subcommand: `docker run attest db upgrade`). Configuration is ATTEST_*
# environment variables only; see config/settings.py and docker-compose.yml.

# ---- build: install the project and its dependencies into a virtualenv -------------------
FROM python:3.11-slim AS build

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# torch is by far the largest dependency: install it in its own layer so that a source
# change does not download it again. The pin is read from pyproject.toml (single source of
# truth). The CPU index's "2.13.0+cpu" satisfies "==2.13.0" and sorts above the CUDA build
# from PyPI, so no CUDA libraries end up in the image.
COPY pyproject.toml ./
RUN pip install --no-cache-dir --extra-index-url "$TORCH_INDEX" "$(python -c 'import tomllib; print(next(d for d in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"] if d.replace(" ", "").startswith("torch==")))')"

# The project itself (non-editable: the source folder is not needed at run time).
COPY . .
RUN pip install --no-cache-dir --extra-index-url "$TORCH_INDEX" .

# ---- runtime: the virtualenv only, run as an unprivileged user ---------------------------
FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ATTEST_STATE_DIR=/var/lib/attest

RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/attest \
        --shell /usr/sbin/nologin attest \
    && mkdir -p /var/lib/attest \
    && chown attest:attest /var/lib/attest

COPY --from=build /opt/venv /opt/venv

USER 10001:10001
WORKDIR /home/attest
# Faust's local state (ATTEST_STATE_DIR/worker) and any keys live here.
VOLUME ["/var/lib/attest"]

ENTRYPOINT ["attest"]
CMD ["worker"]
