# The hems image: one Python package, run as `hems <command>` (collector and api in docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the package needs to build and run (see .dockerignore): no tests, no local caches.
COPY pyproject.toml README.md ./
COPY hems ./hems
COPY collector ./collector
COPY pipeline ./pipeline
COPY access ./access
COPY devices ./devices
COPY seeds ./seeds
COPY config ./config
RUN pip install . && rm -rf /src

# An unprivileged user owning the state directory (spool, ledger) that compose mounts as a volume.
RUN useradd --system --home-dir /var/lib/hems --create-home --uid 10001 hems
USER hems
WORKDIR /var/lib/hems

ENTRYPOINT ["hems"]
CMD ["--help"]
