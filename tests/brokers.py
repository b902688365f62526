"""A throwaway Mosquitto, configured by the project's own generator, for integration tests."""

from __future__ import annotations

import shutil
import signal
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from infoscreen.dev import find_mosquitto
from mosquitto import certs
from mosquitto.accounts import AccountStore, generate_password
from mosquitto.config import BrokerConfig, Listener, TlsFiles, write_config
from mqtt_client import make_client
from tests.helpers import free_port, wait_until


@dataclass
class Login:
    username: str
    password: str
    service: bool = False  # a server or simulator account: logs in on the services' listener


@dataclass
class TestBroker:
    """`port` is the services' listener (server and simulator logins), `device_port` the
    devices' and monitors' (client id = username, no shared subscriptions)."""

    directory: Path
    port: int = field(default_factory=free_port)
    device_port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    process: subprocess.Popen | None = None
    server: Login = field(default_factory=lambda: Login("svc", generate_password(), True))
    monitor: Login = field(default_factory=lambda: Login("mon", generate_password()))
    simulator: Login = field(default_factory=lambda: Login("loadgen", generate_password(), True))
    device_a: Login = field(default_factory=lambda: Login(str(uuid.uuid4()), generate_password()))
    device_b: Login = field(default_factory=lambda: Login(str(uuid.uuid4()), generate_password()))

    @property
    def config(self) -> BrokerConfig:
        return BrokerConfig(
            self.directory,
            (Listener(self.port, "127.0.0.1", "tests: services", services=True),
             Listener(self.device_port, "127.0.0.1", "tests: devices and monitors")),
            log_dest=f"file {self.directory / 'mosquitto.log'}",
        )

    def port_for(self, login: Login | None) -> int:
        return self.port if login is not None and login.service else self.device_port

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

    def add_devices(self, count: int) -> list[Login]:
        """Provision `count` more device logins; a running broker reloads them."""
        devices = [Login(str(uuid.uuid4()), generate_password()) for _ in range(count)]
        AccountStore(self.directory).add_many([(d.username, "device", d.password)
                                               for d in devices])
        if self.process is not None:
            self.reload()
        return devices

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its configuration, password file, ACL and its listeners'
        certificate and key files."""
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)

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


@dataclass
class TlsTestBroker(TestBroker):
    """The same logins behind TLS only, as in production: `port` (services) and
    `device_port` (devices, monitors) are TLS listeners for password logins, `mtls_port` a
    mutual-TLS listener where a device's certificate (CN = its
    uuid) is its login. Certificates come from mosquitto.certs in directory/certs: our CA, a
    server certificate for localhost and 127.0.0.1, and a client certificate for device_a."""

    host: str = "localhost"
    mtls_port: int = field(default_factory=free_port)

    @property
    def certs(self) -> certs.CertStore:
        return certs.CertStore.in_broker_dir(self.directory)

    @property
    def config(self) -> BrokerConfig:
        files = TlsFiles(self.certs.bundle, self.certs.server_cert, self.certs.server_key)
        return BrokerConfig(
            self.directory,
            (
                Listener(self.port, "127.0.0.1", "tests: TLS, services", tls=files,
                         services=True),
                Listener(self.device_port, "127.0.0.1", "tests: TLS, devices and monitors",
                         tls=files),
                Listener(self.mtls_port, "127.0.0.1", "tests: mutual TLS, device certificates",
                         tls=files, require_certificate=True),
            ),
            log_dest=f"file {self.directory / 'mosquitto.log'}",
        )

    def provision(self) -> None:
        certs.init_ca(self.certs.directory)
        certs.issue_server(self.certs.directory, dns_names=["localhost"], ips=["127.0.0.1"])
        certs.issue_client(self.certs.directory, self.device_a.username)
        super().provision()

    def client_context(self, cafile: Path | None = None,
                       certificate: str | None = None) -> ssl.SSLContext:
        """What a careful client does: verify the chain against `cafile` (default: our CA
        bundle) and the host name, TLS 1.2 or newer; with `certificate` (a device uuid), present
        that device's certificate from the store."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_verify_locations(cafile or self.certs.bundle)
        if certificate:
            context.load_cert_chain(self.certs.client_cert(certificate),
                                    self.certs.client_key(certificate))
        return context

    def client(self, login: Login | None, client_id: str | None = None, *,
               context: ssl.SSLContext | None = None) -> mqtt.Client:
        """A paho MQTT 5 client over TLS (built here, not by mqtt_client.make_client)."""
        client = mqtt.Client(CallbackAPIVersion.VERSION2,
                             client_id=client_id or f"test-{uuid.uuid4().hex[:10]}",
                             protocol=mqtt.MQTTv5)
        if login:
            client.username_pw_set(login.username, login.password)
        client.tls_set_context(context or self.client_context())
        return client


def _connack_ok(client: mqtt.Client) -> bool:
    client.loop_start()
    try:
        return bool(wait_until(client.is_connected, timeout=5, message="CONNACK"))
    except AssertionError:
        return False


@contextmanager
def broker_with_devices(directory: Path, count: int) -> Iterator[tuple[TestBroker, list[Login]]]:
    """A broker of a test module's own (for tests whose devices leave retained messages that
    other tests should never see), with `count` device logins; stopped at the end."""
    broker = TestBroker(directory)
    broker.provision()
    devices = broker.add_devices(count)
    broker.start()
    try:
        yield broker, devices
    finally:
        broker.stop()
