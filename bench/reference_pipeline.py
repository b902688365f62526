"""The reference pipeline of bench/ingest.py: a bare paho subscriber, json.loads, and a batched
upsert, with no validation. It shows what the broker and the database allow on this machine.

Run by the benchmark as a process, configured from the environment like the listener:
DATABASE_URL, MQTT_HOST, MQTT_PORT, MQTT_USER, MQTT_PASSWORD, REFERENCE_METRICS_PORT.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sqlite3
import threading
import time
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry, Counter, start_http_server
from sqlalchemy.engine import make_url

BATCH_SIZE = 1000
FLUSH_SECONDS = 0.2
UPSERT = (
    "INSERT INTO clients (uuid, first_seen_at, last_seen_at, last_heartbeat_at) "
    "VALUES ({p}, {p}, {p}, {p}) ON CONFLICT (uuid) DO UPDATE SET "
    "last_seen_at = excluded.last_seen_at, last_heartbeat_at = excluded.last_heartbeat_at"
)

registry = CollectorRegistry()
stored = Counter("bench_reference_stored_total", "messages committed", registry=registry)
inbox: queue.SimpleQueue = queue.SimpleQueue()
stopping = threading.Event()


def connect_database(url: str):
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        conn = sqlite3.connect(parsed.database, isolation_level=None, timeout=10)
        return conn, UPSERT.format(p="?"), lambda value: value.replace(tzinfo=None)
    conn = psycopg.connect(
        dbname=parsed.database, user=parsed.username, password=parsed.password,
        host=parsed.host or parsed.query.get("host"), port=parsed.port or parsed.query.get("port"),
    )
    return conn, UPSERT.format(p="%s"), lambda value: value


def on_connect(client, _userdata, _flags, reason_code, _properties):
    if not reason_code.is_failure:
        prefix = os.environ.get("MQTT_TOPIC_PREFIX", "infoscreen")
        client.subscribe([(f"{prefix}/+/heartbeat", 1), (f"{prefix}/+/health", 1)])


def on_message(_client, _userdata, msg):
    json.loads(msg.payload)
    inbox.put((msg.topic.split("/")[1], datetime.now(UTC)))


def writer() -> None:
    conn, sql, stamp = connect_database(os.environ["DATABASE_URL"])
    batch: list = []
    started = None
    while not (stopping.is_set() and inbox.empty() and not batch):
        try:
            item = inbox.get(timeout=0.02)
            batch.append(item)
            started = started or time.monotonic()
        except queue.Empty:
            pass
        if batch and (len(batch) >= BATCH_SIZE or time.monotonic() - started >= FLUSH_SECONDS
                      or stopping.is_set()):
            rows = [(uuid, stamp(at), stamp(at), stamp(at)) for uuid, at in batch]
            if isinstance(conn, sqlite3.Connection):
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(sql, rows)
                conn.execute("COMMIT")
            else:
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(sql, rows)
            stored.inc(len(batch))
            batch, started = [], None


def main() -> None:
    start_http_server(int(os.environ["REFERENCE_METRICS_PORT"]), addr="127.0.0.1",
                      registry=registry)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-reference",
                         protocol=mqtt.MQTTv5)
    client.username_pw_set(os.environ["MQTT_USER"], os.environ["MQTT_PASSWORD"])
    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(os.environ["MQTT_HOST"], int(os.environ["MQTT_PORT"]))
    client.loop_start()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    writer()
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
