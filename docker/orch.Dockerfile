# The orch image: this checkout (distribution atlas-ha-orch) installed as a regular pip install into /opt/orch
# (orch, orch-keepalived-notify, orch-check-mysql on PATH), nothing else.
#   docker build -f docker/orch.Dockerfile -t atlas-ha-orch:orch .
# Build context: the repository root. Not built in CI (see docker/README.md).
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends default-mysql-client iputils-ping \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY orchestrator ./orchestrator
COPY hooks ./hooks
COPY conf ./conf
RUN python -m venv /opt/orch \
 && /opt/orch/bin/pip install --no-cache-dir --disable-pip-version-check /src \
 && rm -rf /src
ENV PATH=/opt/orch/bin:$PATH
WORKDIR /
ENTRYPOINT ["orch"]
CMD ["--help"]
