# portal-monitor container image.
#
#   docker build -t portal-monitor .
#   docker run -d --name portal-monitor -p 9820:9820 \
#     --env-file /etc/portal-monitor/env \
#     -v /etc/portal-monitor/alert_rules.yaml:/etc/portal-monitor/alert_rules.yaml:ro \
#     -v portal-monitor-state:/var/lib/portal-monitor \
#     -v /var/log/bff:/var/log/bff:ro \
#     portal-monitor
#
# Config: /etc/portal-monitor/alert_rules.yaml (the shipped default is baked in; mount yours
# over it). State (SQLite): the volume /var/lib/portal-monitor. Listens on 0.0.0.0:9820.
# The process check sees only the container's own processes unless run with --pid=host.

# ---------------------------------------------------------------- build: a venv with the package
# The runtime dependencies come from requirements.lock, each file checked against its hash (the
# layer is rebuilt only when the lock changes); then the package itself, without dependencies.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/portal-monitor/venv
WORKDIR /src
COPY requirements.lock ./
RUN /opt/portal-monitor/venv/bin/pip install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY monitor ./monitor
COPY checks ./checks
RUN /opt/portal-monitor/venv/bin/pip install --no-deps .

# ---------------------------------------------------------------- runtime: the venv and the config only
FROM python:3.11-slim AS runtime
RUN groupadd --system --gid 9820 portal-monitor \
 && useradd --system --uid 9820 --gid portal-monitor --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin portal-monitor \
 && install -d -o portal-monitor -g portal-monitor -m 0700 /var/lib/portal-monitor
COPY --from=build /opt/portal-monitor/venv /opt/portal-monitor/venv
COPY alert_rules.yaml /etc/portal-monitor/alert_rules.yaml
ENV PATH=/opt/portal-monitor/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORTAL_MONITOR_CONFIG=/etc/portal-monitor/alert_rules.yaml \
    PORTAL_MONITOR_LISTEN=0.0.0.0:9820 \
    PORTAL_MONITOR_STATE_DIR=/var/lib/portal-monitor
USER portal-monitor:portal-monitor
WORKDIR /var/lib/portal-monitor
VOLUME /var/lib/portal-monitor
EXPOSE 9820
# /-/healthy on the port PORTAL_MONITOR_LISTEN names; urlopen raises (exit 1) on a refused
# connection, a timeout or a non-2xx answer. Python, because the slim image has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('PORTAL_MONITOR_LISTEN', ':9820').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/-/healthy', timeout=4)"]
CMD ["portal-monitor", "run", "-c", "/etc/portal-monitor/alert_rules.yaml"]
