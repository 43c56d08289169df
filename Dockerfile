# eventsvc: one image for the web processes (default command), the outbox
# worker (`flask --app wsgi worker`) and migrations (`flask --app wsgi db upgrade`).
# See docs/deploy.md and compose.yaml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    EVENTSVC_ENV=production \
    EVENTSVC_INSTANCE_DIR=/var/lib/eventsvc

WORKDIR /app

RUN useradd --system --user-group --no-create-home --home-dir /app --shell /usr/sbin/nologin eventsvc \
    && mkdir -p /var/lib/eventsvc \
    && chown eventsvc:eventsvc /var/lib/eventsvc

COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY . .
RUN if ls translations/*/LC_MESSAGES/messages.po >/dev/null 2>&1; then pybabel compile -q -d translations; fi

USER eventsvc
EXPOSE 8000

# Metrics of all gunicorn processes are added up through files in
# PROMETHEUS_MULTIPROC_DIR, which must be empty at every start. It is set
# here, for the web processes only: the worker serves its own metrics.
CMD ["sh", "-c", "export PROMETHEUS_MULTIPROC_DIR=/tmp/eventsvc-metrics && rm -rf \"$PROMETHEUS_MULTIPROC_DIR\" && mkdir -p \"$PROMETHEUS_MULTIPROC_DIR\" && exec gunicorn -w 2 --threads 4 --reuse-port -b 0.0.0.0:8000 --worker-tmp-dir /dev/shm wsgi:app"]
