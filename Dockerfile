# One image for the server, the listener, the scheduler and the one-shot migration.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md alembic.ini requirements.lock ./
COPY core core
COPY listener listener
COPY scheduler scheduler
COPY server server
COPY simulator simulator
COPY mosquitto mosquitto
COPY mqtt_client mqtt_client
COPY migrations migrations
COPY infoscreen infoscreen
COPY frontend frontend
RUN pip install -c requirements.lock . && useradd --system --uid 10001 infoscreen
USER infoscreen
ENTRYPOINT ["infoscreen"]
