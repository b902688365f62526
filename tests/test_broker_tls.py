"""The broker's TLS, as generated, against a real Mosquitto: who is refused, what each role may
do over TLS and mutual TLS, monitors with mosquitto_sub, server certificate and CA rotation.

How a refusal shows on the client side:
- the client's own checks (a CA it does not trust, a name missing from the SANs) fail the
  handshake with ssl.SSLCertVerificationError;
- the broker's checks of a client certificate: over TLS 1.2 the handshake fails with the alert
  that names the reason; over TLS 1.3 the client's side of the handshake finishes first and the
  broker then drops the connection, so those tests check the alert over 1.2 and "no CONNACK"
  over 1.3;
- a login the broker refuses: a CONNACK with a failure reason code.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from core.clock import utc_now
from mosquitto import certs
from tests.brokers import Login, TlsTestBroker
from tests.helpers import wait_until
from tests.mqtt_probe import Attempt, attempt
from tests.test_broker_acl import NOT_AUTHORIZED, Session, ok

pytestmark = pytest.mark.broker

TLS_1_2 = ssl.TLSVersion.TLSv1_2
TLS_1_3 = ssl.TLSVersion.TLSv1_3
# Mosquitto 2.0.11 answers a failed password login with 0x87 (not authorized), not 0x86.
LOGIN_REFUSED = (0x86, 0x87)


def refused(result: Attempt) -> bool:
    return result.error is not None and result.connack is None


def fingerprint(path: Path) -> str:
    return certs.load_cert(path).fingerprint(hashes.SHA256()).hex()


def as_server(broker: TlsTestBroker, **kw) -> dict:
    return {"username": broker.server.username, "password": broker.server.password, **kw}


# Certificates that must not get in


@pytest.fixture
def issuer(tls_broker: TlsTestBroker, tmp_path: Path) -> certs.CertStore:
    """Our CA, copied to a directory of its own: certificates issued there do not touch the
    broker's store."""
    store = certs.CertStore(tmp_path / "issuer")
    store.directory.mkdir()
    shutil.copy(tls_broker.certs.ca_cert, store.ca_cert)
    shutil.copy(tls_broker.certs.ca_key, store.ca_key)
    return store


@pytest.fixture
def other_ca(tmp_path: Path) -> certs.CertStore:
    """Another installation's CA: made by the same tooling, so it even has the same name."""
    store = certs.CertStore(tmp_path / "other-ca")
    certs.init_ca(store.directory)
    return store


def device_context(broker: TlsTestBroker, cert: Path, key: Path,
                   version: ssl.TLSVersion) -> ssl.SSLContext:
    context = broker.client_context()
    context.maximum_version = version
    context.load_cert_chain(cert, key)
    return context


def assert_certificate_refused(broker: TlsTestBroker, cert: Path, key: Path, alert: str) -> None:
    over_1_2 = attempt(broker.mtls_port, device_context(broker, cert, key, TLS_1_2))
    assert isinstance(over_1_2.error, ssl.SSLError) and over_1_2.connack is None
    assert over_1_2.error.reason == alert, over_1_2.error
    assert refused(attempt(broker.mtls_port, device_context(broker, cert, key, TLS_1_3)))


def without_client_auth(issuer: certs.CertStore, uuid: str, directory: Path) -> tuple[Path, Path]:
    """A certificate from our CA, for a device's uuid, valid now, but for serverAuth only."""
    ca, ca_key = issuer.load_ca()
    key = ec.generate_private_key(ec.SECP256R1())
    now = utc_now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, uuid)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server-auth-only.crt", directory / "server-auth-only.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_it_accepts_a_password_login_and_a_device_certificate(tls_broker):
    """The other tests' refusals mean something only if the right credentials get in."""
    assert attempt(tls_broker.port, tls_broker.client_context(), **as_server(tls_broker)).accepted
    uuid = tls_broker.device_a.username
    for version in (TLS_1_2, TLS_1_3):
        context = device_context(tls_broker, tls_broker.certs.client_cert(uuid),
                                 tls_broker.certs.client_key(uuid), version)
        assert attempt(tls_broker.mtls_port, context).accepted


def test_it_refuses_anonymous_clients(tls_broker):
    anonymous = attempt(tls_broker.port, tls_broker.client_context())
    assert anonymous.error is None and anonymous.connack == NOT_AUTHORIZED
    # On the mutual-TLS listener, no certificate means no login.
    no_certificate = tls_broker.client_context()
    no_certificate.maximum_version = TLS_1_2
    result = attempt(tls_broker.mtls_port, no_certificate)
    assert refused(result) and result.error.reason == "SSLV3_ALERT_HANDSHAKE_FAILURE"
    assert refused(attempt(tls_broker.mtls_port, tls_broker.client_context()))


def test_it_refuses_a_wrong_password(tls_broker):
    result = attempt(tls_broker.device_port, tls_broker.client_context(),
                     username=tls_broker.device_a.username, password="not-the-password")
    assert result.error is None and result.connack in LOGIN_REFUSED


def test_it_refuses_a_client_that_trusts_another_ca(tls_broker, other_ca):
    result = attempt(tls_broker.port, tls_broker.client_context(cafile=other_ca.bundle),
                     **as_server(tls_broker))
    assert isinstance(result.error, ssl.SSLCertVerificationError) and result.connack is None


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1"])
def test_it_serves_a_certificate_for_every_name_clients_use(tls_broker, name):
    result = attempt(tls_broker.port, tls_broker.client_context(), server_hostname=name,
                     **as_server(tls_broker))
    assert result.accepted


def test_a_client_refuses_a_server_name_missing_from_the_sans(tls_broker):
    # The client reaches 127.0.0.1 by a name the certificate does not cover, as it would if
    # that name resolved to the broker.
    result = attempt(tls_broker.port, tls_broker.client_context(),
                     server_hostname="broker.infoscreen.example", **as_server(tls_broker))
    assert isinstance(result.error, ssl.SSLCertVerificationError) and result.connack is None
    assert "Hostname mismatch" in result.error.verify_message


def test_it_refuses_an_expired_client_certificate(tls_broker, issuer):
    issued = certs.issue_client(issuer.directory, tls_broker.device_a.username, days=1,
                                now=utc_now() - timedelta(days=3))
    assert_certificate_refused(tls_broker, issued.cert_path, issued.key_path,
                               "SSLV3_ALERT_CERTIFICATE_EXPIRED")


def test_it_refuses_a_client_certificate_that_is_not_yet_valid(tls_broker, issuer):
    issued = certs.issue_client(issuer.directory, tls_broker.device_a.username, days=30,
                                now=utc_now() + timedelta(days=2))
    assert_certificate_refused(tls_broker, issued.cert_path, issued.key_path,
                               "SSLV3_ALERT_BAD_CERTIFICATE")


def test_it_refuses_a_client_certificate_signed_by_another_ca(tls_broker, other_ca):
    issued = certs.issue_client(other_ca.directory, tls_broker.device_a.username)
    assert_certificate_refused(tls_broker, issued.cert_path, issued.key_path,
                               "TLSV1_ALERT_UNKNOWN_CA")


def test_it_refuses_a_client_certificate_without_client_auth(tls_broker, issuer, tmp_path):
    cert, key = without_client_auth(issuer, tls_broker.device_a.username, tmp_path)
    assert_certificate_refused(tls_broker, cert, key, "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE")


@pytest.mark.parametrize("listener", ["port", "device_port", "mtls_port"])
def test_it_refuses_plain_tcp_on_a_tls_port(tls_broker, listener):
    result = attempt(getattr(tls_broker, listener), None, **as_server(tls_broker))
    assert result.connack is None
    assert isinstance(result.error, ConnectionError) or result.error is None  # reset or closed


# Access rules over TLS and mutual TLS


class MutualTls:
    """Where a device connects with its certificate: `Session` needs host, port and client()."""

    def __init__(self, broker: TlsTestBroker):
        self.broker, self.host, self.port = broker, broker.host, broker.mtls_port

    def port_for(self, _login: Login | None) -> int:
        return self.port

    def client(self, login: Login | None):
        assert login is not None
        return self.broker.client(
            None, context=self.broker.client_context(certificate=login.username))


@pytest.fixture
def connect(tls_broker) -> Iterator:
    sessions: list[Session] = []

    def make(login: Login, *, certificate: bool = False) -> Session:
        session = Session(MutualTls(tls_broker) if certificate else tls_broker, login)
        sessions.append(session)
        assert session.accepted, f"{login.username} was refused"
        return session

    yield make
    for session in sessions:
        session.close()


@pytest.fixture(params=["password", "certificate"])
def device_a(request, tls_broker, connect) -> Session:
    """Device A over the TLS listener with its password, or over mutual TLS with its
    certificate: the same access rules hold for both."""
    return connect(tls_broker.device_a, certificate=request.param == "certificate")


def test_a_device_publishes_its_own_telemetry(device_a, tls_broker):
    assert ok(device_a.publish(f"infoscreen/{tls_broker.device_a.username}/heartbeat"))


def test_a_device_cannot_publish_to_another_devices_topics(device_a, tls_broker):
    b = tls_broker.device_b.username
    suffixes = ["heartbeat", "health", "service_failed", "commands/ack", "discovery", "status",
                "logs/error"]
    assert [device_a.publish(f"infoscreen/{b}/{s}") for s in suffixes] == (
        [NOT_AUTHORIZED] * len(suffixes))


def test_a_device_cannot_publish_to_monitoring_or_any_commands_topic(device_a, tls_broker):
    a, b = tls_broker.device_a.username, tls_broker.device_b.username
    topics = ["infoscreen/monitoring/events", f"infoscreen/monitoring/clients/{a}",
              f"infoscreen/{a}/commands", f"infoscreen/{b}/commands"]
    assert [device_a.publish(t) for t in topics] == [NOT_AUTHORIZED] * len(topics)


def test_a_device_does_not_receive_another_devices_commands(device_a, tls_broker, connect):
    a, b = tls_broker.device_a.username, tls_broker.device_b.username
    device_a.subscribe("infoscreen/+/commands")
    server = connect(tls_broker.server)
    assert ok(server.publish(f"infoscreen/{b}/commands", b'{"for": "b"}'))
    assert ok(server.publish(f"infoscreen/{a}/commands", b'{"for": "a"}'))
    wait_until(lambda: device_a.received, timeout=5, message="A's own command")
    # Delivery is in order on one connection: once A's arrived, B's would have come first.
    assert [m.topic for m in device_a.received] == [f"infoscreen/{a}/commands"]


def test_a_monitor_receives_monitoring_and_telemetry(tls_broker, connect):
    monitor = connect(tls_broker.monitor)
    monitor.subscribe("infoscreen/#")
    device = connect(tls_broker.device_a, certificate=True)
    assert ok(device.publish(f"infoscreen/{tls_broker.device_a.username}/heartbeat"))
    assert ok(connect(tls_broker.server).publish("infoscreen/monitoring/events", b'{"t": 1}'))
    wait_until(lambda: len(monitor.received) >= 2, timeout=5, message="two messages")
    assert {m.topic.split("/")[-1] for m in monitor.received} == {"heartbeat", "events"}


def test_a_monitor_cannot_publish_anything(tls_broker, connect):
    monitor = connect(tls_broker.monitor)
    dev = tls_broker.device_a.username
    topics = ["infoscreen/monitoring/events", f"infoscreen/monitoring/clients/{dev}",
              f"infoscreen/{dev}/heartbeat", f"infoscreen/{dev}/commands", "anything"]
    assert [monitor.publish(t) for t in topics] == [NOT_AUTHORIZED] * len(topics)


# Monitors with the stock Mosquitto tools


def mosquitto_sub(broker: TlsTestBroker, *tls_options: str, wait: int) -> list[str]:
    return [
        "stdbuf", "-oL", "mosquitto_sub", "-h", "localhost", "-p", str(broker.device_port),
        "-V", "mqttv5", "-u", broker.monitor.username, "-P", broker.monitor.password,
        "-t", "infoscreen/monitoring/events", "-C", "1", "-W", str(wait), *tls_options,
    ]


def test_mosquitto_sub_with_our_ca_receives_fleet_events(tls_broker, connect):
    sub = subprocess.Popen(
        mosquitto_sub(tls_broker, "--cafile", str(tls_broker.certs.bundle), "-d", wait=10),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        seen = []
        assert sub.stdout is not None
        for line in sub.stdout:  # ends at EOF if mosquitto_sub gives up
            seen.append(line)
            if "received SUBACK" in line:
                break
        assert any("received SUBACK" in line for line in seen), "".join(seen) + sub.stderr.read()
        server = connect(tls_broker.server)
        assert ok(server.publish("infoscreen/monitoring/events", b'{"type": "client_down"}'))
        out, err = sub.communicate(timeout=15)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    assert sub.returncode == 0, err
    assert '{"type": "client_down"}' in out.splitlines()


@pytest.mark.parametrize("tls_options", [(), ("--tls-use-os-certs",),
                                         ("--capath", "/etc/ssl/certs")],
                         ids=["no-tls-options", "system-store", "system-capath"])
def test_mosquitto_sub_without_our_ca_fails(tls_broker, tls_options):
    # Without a TLS option mosquitto_sub speaks plain MQTT to the TLS port and waits in vain;
    # with the system's CAs it does not trust our private CA.
    done = subprocess.run(mosquitto_sub(tls_broker, *tls_options, wait=2),
                          capture_output=True, text=True, timeout=20)
    assert done.returncode != 0
    assert done.stdout == ""


# Rotation


@pytest.fixture
def own_tls_broker(tmp_path: Path) -> Iterator[TlsTestBroker]:
    """A TLS broker for one test that changes its certificates."""
    broker = TlsTestBroker(tmp_path / "broker")
    broker.provision()
    broker.start()
    yield broker
    broker.remove()


def serves(broker: TlsTestBroker, cafile: Path, cert: Path) -> bool:
    """A new connection that trusts `cafile` logs in and is served `cert`."""
    result = attempt(broker.port, broker.client_context(cafile), **as_server(broker))
    return result.accepted and result.peer_fingerprint == fingerprint(cert)


def device_gets_in(broker: TlsTestBroker, cert: Path, key: Path) -> bool:
    return attempt(broker.mtls_port, device_context(broker, cert, key, TLS_1_3)).accepted


def keep_copy(source: Path, directory: Path) -> Path:
    directory.mkdir(exist_ok=True)
    return Path(shutil.copy(source, directory / source.name))


def test_a_new_server_certificate_is_served_after_a_reload(own_tls_broker, tmp_path):
    broker = own_tls_broker
    client_ca = keep_copy(broker.certs.bundle, tmp_path / "client")  # what a device holds
    client_ca_before = client_ca.read_bytes()
    old = keep_copy(broker.certs.server_cert, tmp_path / "old")
    assert serves(broker, client_ca, old)
    connected = Session(broker, broker.server)
    try:
        certs.rotate_server(broker.certs.directory)
        assert fingerprint(broker.certs.server_cert) != fingerprint(old)
        broker.reload()

        wait_until(lambda: serves(broker, client_ca, broker.certs.server_cert), timeout=5,
                   message="the new server certificate on a new connection")
        assert client_ca.read_bytes() == client_ca_before
        # A connection made before the reload stays up.
        assert connected.client.is_connected()
        assert ok(connected.publish("infoscreen/monitoring/events"))
    finally:
        connected.close()


def test_the_ca_rollover_runbook(own_tls_broker, tmp_path):
    """certs.py's runbook, step by step. Mosquitto 2.0.11 re-reads its certfile and keyfile on
    SIGHUP but reads the cafile (the bundle) only when it starts: a changed bundle needs a
    restart (see the next test)."""
    broker, store = own_tls_broker, own_tls_broker.certs
    device = broker.device_a.username
    old_ca = keep_copy(store.ca_cert, tmp_path / "trusts-old-ca")
    old_device = (keep_copy(store.client_cert(device), tmp_path / "old-device"),
                  keep_copy(store.client_key(device), tmp_path / "old-device"))
    old_server = keep_copy(store.server_cert, tmp_path / "old-server")

    # 1. A new CA; the bundle trusts both. The server certificate is still the old CA's.
    certs.rollover_ca(store.directory)
    new_ca = keep_copy(store.ca_cert, tmp_path / "trusts-new-ca")
    bundle = keep_copy(store.bundle, tmp_path / "trusts-bundle")
    assert len(x509.load_pem_x509_certificates(bundle.read_bytes())) == 2
    broker.restart()  # the broker's cafile is the bundle
    assert serves(broker, old_ca, old_server)
    assert serves(broker, bundle, old_server)
    assert refused(attempt(broker.port, broker.client_context(new_ca), **as_server(broker)))

    # 2./3. Clients trust the bundle; the server certificate from the new CA, then a reload.
    certs.rotate_server(store.directory)
    broker.reload()
    wait_until(lambda: serves(broker, bundle, store.server_cert), timeout=5,
               message="the new CA's server certificate")
    assert serves(broker, new_ca, store.server_cert)
    old_only = attempt(broker.port, broker.client_context(old_ca), **as_server(broker))
    assert isinstance(old_only.error, ssl.SSLCertVerificationError)
    assert old_only.connack is None

    # Device certificates reissued from the new CA; the old ones still work in the overlap.
    certs.issue_client(store.directory, device)
    new_device = (store.client_cert(device), store.client_key(device))
    assert device_gets_in(broker, *new_device)
    assert device_gets_in(broker, *old_device)

    # 4. The previous CA leaves the bundle; the broker restarted with it refuses its devices.
    certs.finish_rollover(store.directory)
    assert [c.subject for c in x509.load_pem_x509_certificates(store.bundle.read_bytes())] == [
        certs.load_cert(new_ca).subject]
    assert not store.previous_ca.exists()
    broker.restart()
    assert device_gets_in(broker, *new_device)
    assert refused(attempt(broker.mtls_port,
                           device_context(broker, *old_device, TLS_1_3)))
    assert serves(broker, store.bundle, store.server_cert)


def test_mosquitto_reads_a_changed_ca_bundle_only_when_it_starts(own_tls_broker):
    """Mosquitto 2.0.11 on SIGHUP reloads certfile and keyfile, not cafile. If this test fails,
    a newer Mosquitto reloads the bundle too and the runbook's restarts can become reloads."""
    broker, store = own_tls_broker, own_tls_broker.certs
    certs.rollover_ca(store.directory)
    issued = certs.issue_client(store.directory, broker.device_a.username)
    certs.rotate_server(store.directory)  # shows when the reload has happened
    broker.reload()
    wait_until(lambda: serves(broker, store.bundle, store.server_cert), timeout=5,
               message="the reload")
    assert not device_gets_in(broker, issued.cert_path, issued.key_path)
    broker.restart()
    assert device_gets_in(broker, issued.cert_path, issued.key_path)
