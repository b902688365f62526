"""A throwaway Mosquitto, configured by the project's own generator, for integration tests."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt

from infoscreen.dev import find_mosquitto
from mosquitto.accounts import AccountStore, generate_password
from mosquitto.config import BrokerConfig, Listener, write_config
from mqtt_client import make_client
from tests.helpers import free_port, wait_until


@dataclass
class Login:
    username: str
    password: str


@dataclass
class TestBroker:
    directory: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    process: subprocess.Popen | None = None
    server: Login = field(default_factory=lambda: Login("svc", generate_password()))
    monitor: Login = field(default_factory=lambda: Login("mon", generate_password()))
    simulator: Login = field(default_factory=lambda: Login("loadgen", generate_password()))
    device_a: Login = field(default_factory=lambda: Login(str(uuid.uuid4()), generate_password()))
    device_b: Login = field(default_factory=lambda: Login(str(uuid.uuid4()), generate_password()))

    @property
    def config(self) -> BrokerConfig:
        return BrokerConfig(
            self.directory, (Listener(self.port, "127.0.0.1", "tests"),),
            log_dest=f"file {self.directory / 'mosquitto.log'}",
        )

    def provision(self) -> None:
        AccountStore(self.directory).add_many(
            [
                (self.server.username, "server", self.server.password),
                (self.monitor.username, "monitor", self.monitor.password),
                (self.simulator.username, "simulator", self.simulator.password),
                (self.device_a.username, "device", self.device_a.password),
                (self.device_b.username, "device", self.device_b.password),
            ]
        )
        write_config(self.config)

    def start(self) -> None:
        binary = find_mosquitto()
        assert binary, "mosquitto is not installed: run scripts/bootstrap.sh"
        self.process = subprocess.Popen([binary, "-c", str(self.config.conf_file)])
        wait_until(self.accepts_connections, timeout=10, message="mosquitto to accept logins")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def accepts_connections(self) -> bool:
        client = self.client(self.server, "probe-" + uuid.uuid4().hex[:8])
        try:
            return client.connect(self.host, self.port, keepalive=10) == 0 and _connack_ok(client)
        except OSError:
            return False
        finally:
            client.disconnect()
            client.loop_stop()

    def client(self, login: Login | None, client_id: str | None = None) -> mqtt.Client:
        return make_client(
            client_id or f"test-{uuid.uuid4().hex[:10]}",
            username=login.username if login else None,
            password=login.password if login else None,
        )

    def log_text(self) -> str:
        path = self.directory / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def _connack_ok(client: mqtt.Client) -> bool:
    client.loop_start()
    try:
        return bool(wait_until(client.is_connected, timeout=5, message="CONNACK"))
    except AssertionError:
        return False
