# The gateway's container image: multi-stage (the build tools stay in the first stage), slim, non-root.
#   docker build -t multihome .
#   docker run -p 4000:4000 -v $PWD/multihome.yaml:/etc/multihome/config.yaml:ro multihome
# docs/deploy.md: compose, Kubernetes (deploy/helm/multihome), sizing.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY src ./src
# A wheel first (what `pip install` from a release installs), then a virtualenv with it and its dependencies.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/multihome \
 && /opt/multihome/bin/pip install -c constraints.txt /wheels/multihome-*.whl

FROM python:3.11-slim-bookworm
ENV PATH=/opt/multihome/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 MULTIHOME_CONFIG=/etc/multihome/config.yaml
RUN groupadd --system --gid 10001 multihome \
 && useradd --system --uid 10001 --gid multihome --home-dir /var/lib/multihome --create-home multihome
COPY --from=build /opt/multihome /opt/multihome
USER 10001:10001
WORKDIR /var/lib/multihome
EXPOSE 4000
# The orchestrator's probes are the real ones (/readyz, /healthz); this serves `docker run` alone.
HEALTHCHECK --interval=10s --timeout=3s CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:4000/readyz', timeout=2).status != 200)"]
# SIGTERM drains (docs/serving.md); SIGHUP reloads the config file (docs/serving.md "Reloading the config").
STOPSIGNAL SIGTERM
ENTRYPOINT ["multihome"]
CMD ["serve", "--host", "0.0.0.0", "--port", "4000"]
