"""Certificate tooling for the broker's TLS (mosquitto/certs/ and `infoscreen certs`).

Pure: no broker. The certificates are read back with `cryptography`, verified with its
X.509 path validation and with Python's ssl module over a local socket pair.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from infoscreen.cli import build_parser, main
from mosquitto.certs import (
    CertError,
    CertStore,
    check,
    finish_rollover,
    init_ca,
    issue_client,
    issue_server,
    load_cert,
    load_key,
    rollover_ca,
    rotate_server,
)
from tests.helpers import wait_until

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SCREEN = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
NAMES = ["broker.example", "localhost"]
ADDRESSES = ["10.0.0.5", "127.0.0.1", "::1"]


@pytest.fixture
def certs(tmp_path) -> CertStore:
    """A directory with a CA made at NOW."""
    init_ca(tmp_path, now=NOW)
    return CertStore(tmp_path)


@pytest.fixture
def full(certs) -> CertStore:
    """CA, server certificate and one device certificate, all made at NOW."""
    issue_server(certs.directory, dns_names=NAMES, ips=ADDRESSES, now=NOW)
    issue_client(certs.directory, SCREEN, now=NOW)
    return certs


def ext(cert: x509.Certificate, kind):
    return cert.extensions.get_extension_for_class(kind)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def files_of(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def verifier(bundle: Path, at: datetime) -> PolicyBuilder:
    return PolicyBuilder().store(Store(x509.load_pem_x509_certificates(bundle.read_bytes()))) \
        .time(at)


# The CA


def test_the_ca_is_a_critical_ca_with_key_usage_and_key_identifiers(certs):
    ca = load_cert(certs.ca_cert)
    constraints = ext(ca, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = ext(ca, x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign and usage.value.crl_sign and usage.value.digital_signature
    ski = ext(ca, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(ca.public_key())
    assert ext(ca, x509.AuthorityKeyIdentifier).value.key_identifier == ski.digest
    assert ca.subject == ca.issuer
    ca.verify_directly_issued_by(ca)
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"


def test_the_ca_key_is_private_and_the_certificates_are_readable(tmp_path):
    old = os.umask(0o077)  # a strict umask must not hide the certificates from the broker user
    try:
        init_ca(tmp_path, now=NOW)
    finally:
        os.umask(old)
    store = CertStore(tmp_path)
    assert mode(store.ca_key) == 0o600
    assert mode(store.ca_cert) == 0o644 and mode(store.bundle) == 0o644
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_bundle_trusts_the_ca(certs):
    assert x509.load_pem_x509_certificates(certs.bundle.read_bytes()) == [load_cert(certs.ca_cert)]


def test_it_rejects_overwriting_a_ca_and_keeps_the_old_one(certs):
    before = files_of(certs.directory)
    with pytest.raises(CertError, match="already exists") as refused:
        init_ca(certs.directory, now=NOW)
    assert "rollover-ca" in str(refused.value) and "--force" in str(refused.value)
    assert files_of(certs.directory) == before


def test_force_starts_over_with_a_new_ca(certs):
    old = load_cert(certs.ca_cert)
    init_ca(certs.directory, force=True, now=NOW)
    new = load_cert(certs.ca_cert)
    assert new.public_key() != old.public_key()
    assert x509.load_pem_x509_certificates(certs.bundle.read_bytes()) == [new]


def test_an_rsa_ca_is_3072_bits(tmp_path):
    init_ca(tmp_path, key_type="rsa", now=NOW)
    key = load_key(CertStore(tmp_path).ca_key)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 3072


# The server certificate


def test_the_server_certificate_serves_every_name_and_address(full):
    server, ca = load_cert(full.server_cert), load_cert(full.ca_cert)
    assert list(ext(server, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = ext(server, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == NAMES
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ADDRESSES
    assert ext(server, x509.AuthorityKeyIdentifier).value.key_identifier == \
        ext(ca, x509.SubjectKeyIdentifier).value.digest
    assert ext(server, x509.SubjectKeyIdentifier).value == \
        x509.SubjectKeyIdentifier.from_public_key(server.public_key())
    assert not ext(server, x509.BasicConstraints).value.ca
    usage = ext(server, x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_encipherment and not usage.key_cert_sign
    server.verify_directly_issued_by(ca)
    assert len(x509.load_pem_x509_certificates(full.server_cert.read_bytes())) == 1  # leaf only
    assert mode(full.server_key) == 0o600 and mode(full.server_cert) == 0o644


def test_an_rsa_server_key_may_also_encipher(certs):
    issue_server(certs.directory, dns_names=NAMES, key_type="rsa", now=NOW)
    server = load_cert(certs.server_cert)
    assert isinstance(server.public_key(), rsa.RSAPublicKey)
    assert server.public_key().key_size == 3072
    usage = ext(server, x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment


def test_names_are_normalised_and_not_repeated(certs):
    issued = issue_server(certs.directory, dns_names=["Broker.Example.", "broker.example"],
                          ips=["10.0.0.5", " 10.0.0.5"], now=NOW)
    assert issued.sans == ("broker.example", "10.0.0.5")


@pytest.mark.parametrize(
    ("names", "addresses", "message"),
    [
        ([], [], "none was given"),
        (["broker_1.example"], [], "not a valid host name"),
        (["-broker.example"], [], "not a valid host name"),
        (["broker..example"], [], "not a valid host name"),
        (["a" * 64 + ".example"], [], "not a valid host name"),
        (["*"], [], "not a valid host name"),
        (["*.com"], [], "wildcard"),
        (["10.0.0.5"], [], "pass it with --ip"),
        ([], ["10.0.0.256"], "not an IP address"),
        ([], ["broker.example"], "not an IP address"),
        ([], ["10.0.0.0/24"], "not an IP address"),
    ],
)
def test_it_rejects_bad_names_and_addresses_and_writes_nothing(certs, names, addresses,
                                                                message):
    before = files_of(certs.directory)
    with pytest.raises(CertError, match=message):
        issue_server(certs.directory, dns_names=names, ips=addresses, now=NOW)
    assert files_of(certs.directory) == before


@pytest.mark.parametrize("issue", [
    lambda d: issue_server(d, dns_names=NAMES, now=NOW),
    lambda d: issue_client(d, SCREEN, now=NOW),
    lambda d: rotate_server(d, now=NOW),
    lambda d: rollover_ca(d, now=NOW),
], ids=["issue_server", "issue_client", "rotate_server", "rollover_ca"])
def test_it_rejects_issuing_without_a_ca(tmp_path, issue):
    with pytest.raises(CertError, match="no CA in .*init-ca"):
        issue(tmp_path)
    assert files_of(tmp_path) == {}


def test_it_rejects_dropping_a_name_clients_use_unless_forced(full):
    before = files_of(full.directory)
    with pytest.raises(CertError, match="also covers localhost, 10.0.0.5.*--force"):
        issue_server(full.directory, dns_names=["broker.example"], now=NOW)
    assert files_of(full.directory) == before
    more = issue_server(full.directory, dns_names=[*NAMES, "mqtt.example"], ips=ADDRESSES,
                        now=NOW)
    assert "mqtt.example" in more.sans and more.dropped_sans == ()
    fewer = issue_server(full.directory, dns_names=["broker.example"], force=True, now=NOW)
    assert fewer.sans == ("broker.example",)
    assert set(fewer.dropped_sans) == {"localhost", "mqtt.example", *ADDRESSES}


# Device certificates


def test_a_device_certificate_is_for_client_auth_with_its_uuid_as_cn(full):
    cert = load_cert(full.client_cert(SCREEN))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == SCREEN
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not ext(cert, x509.BasicConstraints).value.ca
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == \
        ext(load_cert(full.ca_cert), x509.SubjectKeyIdentifier).value.digest
    cert.verify_directly_issued_by(load_cert(full.ca_cert))
    assert mode(full.client_key(SCREEN)) == 0o600
    assert mode(full.client_cert(SCREEN)) == 0o644


@pytest.mark.parametrize("name", ["screen-1", "3fa85f64571745 62b3fc2c963f66afa6", "../ca",
                                  f"{SCREEN}/x", ""])
def test_it_rejects_a_device_name_that_is_not_a_uuid(certs, name):
    before = files_of(certs.directory)
    with pytest.raises(CertError, match="uuid"):
        issue_client(certs.directory, name, now=NOW)
    assert files_of(certs.directory) == before


# Validity


def test_validity_is_configurable_and_has_defaults(tmp_path):
    ca = init_ca(tmp_path, now=NOW)
    server = issue_server(tmp_path, dns_names=NAMES, now=NOW)
    client = issue_client(tmp_path, SCREEN, now=NOW)
    assert (ca.not_after, server.not_after, client.not_after) == (
        NOW + timedelta(days=3650), NOW + timedelta(days=397), NOW + timedelta(days=825))
    assert server.not_before <= NOW and NOW - server.not_before < timedelta(hours=1)

    other = tmp_path / "other"
    assert init_ca(other, days=400, now=NOW).not_after == NOW + timedelta(days=400)
    assert issue_server(other, dns_names=NAMES, days=90, now=NOW).not_after == \
        NOW + timedelta(days=90)
    assert issue_client(other, SCREEN, days=30, now=NOW).not_after == NOW + timedelta(days=30)
    assert load_cert(CertStore(other).server_cert).not_valid_after_utc == NOW + timedelta(days=90)
    with pytest.raises(CertError, match="at least 1"):
        issue_client(other, SCREEN, days=0, now=NOW)


def test_a_certificate_never_outlives_its_ca(tmp_path):
    init_ca(tmp_path, days=100, now=NOW)
    issued = issue_server(tmp_path, dns_names=NAMES, days=397, now=NOW)
    assert issued.limited_by_ca and issued.not_after == NOW + timedelta(days=100)


# Rotation and CA rollover


def test_rotate_keeps_the_names_and_changes_the_key(full):
    before = load_cert(full.server_cert)
    old_key = full.server_key.read_bytes()
    issued = rotate_server(full.directory, days=30, now=NOW + timedelta(days=300))
    after = load_cert(full.server_cert)
    assert ext(after, x509.SubjectAlternativeName).value == \
        ext(before, x509.SubjectAlternativeName).value
    assert after.public_key() != before.public_key() and full.server_key.read_bytes() != old_key
    assert load_key(full.server_key).public_key() == after.public_key()
    assert issued.not_after == NOW + timedelta(days=330)
    after.verify_directly_issued_by(load_cert(full.ca_cert))


def test_rotate_without_a_server_certificate_is_refused(certs):
    with pytest.raises(CertError, match="no server certificate to rotate.*issue-server"):
        rotate_server(certs.directory, now=NOW)


def test_a_ca_rollover_trusts_both_cas_until_it_is_finished(full):
    old_ca = load_cert(full.ca_cert)
    old_server = load_cert(full.server_cert)
    rollover_ca(full.directory, now=NOW)
    new_ca = load_cert(full.ca_cert)

    assert new_ca.public_key() != old_ca.public_key()
    assert new_ca.subject != old_ca.subject  # clients tell the two CAs apart by name
    assert load_cert(full.previous_ca) == old_ca
    assert x509.load_pem_x509_certificates(full.bundle.read_bytes()) == [new_ca, old_ca]
    assert load_cert(full.server_cert) == old_server  # nothing served changes yet
    at = NOW + timedelta(days=1)
    server_verifier = verifier(full.bundle, at).build_server_verifier(
        x509.DNSName("broker.example"))
    server_verifier.verify(old_server, [])  # clients with the new bundle still reach the broker

    rotate_server(full.directory, now=NOW)
    issue_client(full.directory, SCREEN, now=NOW)
    new_server = load_cert(full.server_cert)
    new_server.verify_directly_issued_by(new_ca)
    server_verifier.verify(new_server, [])

    assert finish_rollover(full.directory) == []
    assert x509.load_pem_x509_certificates(full.bundle.read_bytes()) == [new_ca]
    assert not full.previous_ca.exists()
    after = verifier(full.bundle, at).build_server_verifier(x509.DNSName("broker.example"))
    after.verify(new_server, [])
    with pytest.raises(VerificationError):
        after.verify(old_server, [])
    assert not check(full.directory, at).errors


def test_finishing_a_rollover_is_refused_while_certificates_need_the_previous_ca(full):
    rollover_ca(full.directory, now=NOW)
    before = files_of(full.directory)
    with pytest.raises(CertError, match=f"server.crt, clients/{SCREEN}.crt.*rotate-server"):
        finish_rollover(full.directory)
    assert files_of(full.directory) == before
    stale = finish_rollover(full.directory, force=True)
    assert stale == [full.server_cert, full.client_cert(SCREEN)]
    report = check(full.directory, NOW + timedelta(days=1))
    assert {(s.role, p.code) for s, p in report.errors} == {
        ("server", "untrusted"), ("client", "untrusted")}


def test_a_second_rollover_waits_for_the_first(certs):
    rollover_ca(certs.directory, now=NOW)
    with pytest.raises(CertError, match="already in progress.*finish-rollover"):
        rollover_ca(certs.directory, now=NOW)
    assert finish_rollover(certs.directory) == []
    with pytest.raises(CertError, match="no CA rollover is in progress"):
        finish_rollover(certs.directory)


# check()


def test_check_reports_every_certificate_of_a_healthy_directory(full):
    report = check(full.directory, NOW + timedelta(days=1))
    assert not report.errors and not report.warnings and not report.rollover_in_progress
    assert [c.role for c in report.certificates] == ["ca", "server", "client"]
    server = report.get("server")
    assert server.sans == (*NAMES, *ADDRESSES)
    assert server.days_left == 396 and server.not_after == NOW + timedelta(days=397)
    assert all(c.chains_to_bundle and c.signed_by_current_ca and c.level == "ok"
               for c in report.certificates)
    assert report.get("client").common_name == SCREEN


@pytest.mark.parametrize(
    ("at", "level", "code"),
    [
        (NOW + timedelta(days=397 - 45), None, None),
        (NOW + timedelta(days=397 - 30), "warning", "expiring"),
        (NOW + timedelta(days=397 - 8), "warning", "expiring"),
        (NOW + timedelta(days=397 - 7), "error", "expiring"),
        (NOW + timedelta(days=397, seconds=1), "error", "expired"),
        (NOW - timedelta(hours=1), "error", "not_yet_valid"),
    ],
    ids=["45-days-left", "30-days-left", "8-days-left", "7-days-left", "expired",
         "not-yet-valid"],
)
def test_check_flags_expiry_with_a_pinned_clock(full, at, level, code):
    server = check(full.directory, at).get("server")
    assert [(p.level, p.code) for p in server.problems] == ([(level, code)] if level else [])
    assert server.level == (level or "ok")


def test_check_flags_a_server_certificate_without_server_auth(certs):
    ca, ca_key = certs.load_ca()
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "broker.example")]))
        .issuer_name(ca.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW).not_valid_after(NOW + timedelta(days=90))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    certs.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    certs.server_key.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    certs.server_key.chmod(0o600)
    codes = {p.code for p in check(certs.directory, NOW).get("server").problems}
    assert codes == {"missing_eku", "no_san"}


def test_check_flags_a_certificate_of_another_ca_and_a_foreign_key(full, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    init_ca(elsewhere, now=NOW)
    issue_client(elsewhere, SCREEN, now=NOW)
    other = CertStore(elsewhere)
    full.client_cert(SCREEN).write_bytes(other.client_cert(SCREEN).read_bytes())
    full.client_key(SCREEN).write_bytes(other.client_key(SCREEN).read_bytes())
    full.server_key.write_bytes(other.client_key(SCREEN).read_bytes())
    full.ca_key.chmod(0o644)
    report = check(full.directory, NOW)
    assert {(s.role, p.level, p.code) for s, p in report.all_problems} == {
        ("client", "error", "untrusted"),
        ("server", "error", "key_mismatch"),
        ("ca", "warning", "key_mode"),
    }
    assert not report.get("client").chains_to_bundle


def test_check_without_a_ca_is_one_error(tmp_path):
    report = check(tmp_path, NOW)
    assert [p.code for _, p in report.errors] == ["no_ca"]
    assert "init-ca" in report.errors[0][1].message


def test_check_wants_a_timezone_aware_clock(full):
    with pytest.raises(ValueError, match="timezone-aware"):
        check(full.directory, datetime(2025, 3, 1, 12))  # noqa: DTZ001


def test_check_reports_an_unreadable_certificate_instead_of_failing(full):
    full.client_cert(SCREEN).write_text("not a certificate\n")
    report = check(full.directory, NOW)
    assert [(c, p.code) for c, p in report.errors] == [(None, "unreadable")]
    assert [c.role for c in report.certificates] == ["ca", "server"]


# Interoperability: what Python's ssl (OpenSSL) and cryptography's verifier make of them


def handshake(store: CertStore, server_hostname: str) -> dict:
    """Mutual TLS over a local socket pair; returns the device certificate the server saw."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(store.server_cert, store.server_key)
    server_ctx.load_verify_locations(cafile=store.bundle)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context(cafile=store.bundle)
    client_ctx.load_cert_chain(store.client_cert(SCREEN), store.client_key(SCREEN))
    left, right = socket.socketpair()
    left.settimeout(10)
    right.settimeout(10)
    seen: dict = {}

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(left, server_side=True) as tls:
                seen.update(tls.getpeercert())
        except (ssl.SSLError, OSError) as exc:
            seen["error"] = exc

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(right, server_hostname=server_hostname):
            pass
    finally:
        right.close()
        thread.join(10)
        left.close()
    return seen


@pytest.mark.parametrize("host", ["broker.example", "localhost", "10.0.0.5", "::1"])
def test_python_ssl_accepts_the_server_for_every_name_and_the_device_for_its_uuid(tmp_path,
                                                                                  host):
    init_ca(tmp_path)
    issue_server(tmp_path, dns_names=NAMES, ips=ADDRESSES)
    issue_client(tmp_path, SCREEN)
    seen = handshake(CertStore(tmp_path), host)
    assert "error" not in seen
    assert ((("commonName", SCREEN),) in seen["subject"])


def test_python_ssl_refuses_a_name_the_server_certificate_does_not_cover(tmp_path):
    init_ca(tmp_path)
    issue_server(tmp_path, dns_names=NAMES, ips=ADDRESSES)
    issue_client(tmp_path, SCREEN)
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        handshake(CertStore(tmp_path), "mqtt.elsewhere.example")


def test_cryptography_path_validation_accepts_them(full):
    at = NOW + timedelta(days=1)
    for name in (x509.DNSName("broker.example"), x509.IPAddress(ip_address("10.0.0.5"))):
        verifier(full.bundle, at).build_server_verifier(name).verify(
            load_cert(full.server_cert), [])
    verified = verifier(full.bundle, at).build_client_verifier().verify(
        load_cert(full.client_cert(SCREEN)), [])
    assert verified.chain[-1] == load_cert(full.ca_cert)


# The command line


CERTS_COMMANDS = [["certs"], ["certs", "init-ca"], ["certs", "issue-server"],
                  ["certs", "issue-client"], ["certs", "check"], ["certs", "rotate-server"],
                  ["certs", "rollover-ca"], ["certs", "finish-rollover"]]


@pytest.mark.parametrize("words", CERTS_COMMANDS, ids=" ".join)
def test_every_certs_command_has_help(words, capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([*words, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "usage: infoscreen certs" in out and len(out.splitlines()) >= 5


@pytest.fixture
def broker_dir(tmp_path, monkeypatch) -> Path:
    """BROKER_DIR points at a fresh directory: no real broker gets a SIGHUP from a test."""
    monkeypatch.setenv("BROKER_DIR", str(tmp_path / "broker"))
    return tmp_path / "broker"


def test_the_cli_sets_up_a_ca_server_and_device_and_checks_them(broker_dir, capsys):
    certs = CertStore.in_broker_dir(broker_dir)
    assert main(["certs", "init-ca"]) == 0
    assert "next: infoscreen certs issue-server" in capsys.readouterr().out
    assert main(["certs", "issue-server", "--dns", "broker.example", "localhost",
                 "--ip", "10.0.0.5", "--ip", "127.0.0.1", "--days", "90"]) == 0
    out = capsys.readouterr().out
    assert "broker.example, localhost, 10.0.0.5, 127.0.0.1" in out
    assert f"no broker is running from {broker_dir}" in out
    assert main(["certs", "issue-client", SCREEN]) == 0
    assert "copy to the device" in capsys.readouterr().out
    assert main(["certs", "check"]) == 0
    out = capsys.readouterr().out
    assert "3 certificates, 0 errors, 0 warnings" in out and SCREEN in out
    assert load_cert(certs.server_cert).not_valid_after_utc - \
        load_cert(certs.server_cert).not_valid_before_utc == timedelta(days=90, minutes=5)
    assert mode(certs.ca_key) == mode(certs.server_key) == mode(certs.client_key(SCREEN)) == 0o600


def test_the_cli_refusals_are_one_line_with_exit_status_2(broker_dir, capsys):
    assert main(["certs", "issue-server", "--dns", "broker.example"]) == 2
    assert "init-ca" in capsys.readouterr().err
    assert main(["certs", "init-ca"]) == 0
    assert main(["certs", "init-ca"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["certs", "issue-server", "--ip", "300.1.1.1"]) == 2
    assert "not an IP address" in capsys.readouterr().err
    assert main(["certs", "issue-client", "screen-1"]) == 2
    assert "uuid" in capsys.readouterr().err
    assert not (broker_dir / "certs" / "server.crt").exists()


def test_check_exits_1_on_an_error_and_names_it(tmp_path, broker_dir, capsys):
    init_ca(tmp_path)
    issue_server(tmp_path, dns_names=NAMES, days=3, now=datetime.now(UTC) - timedelta(days=5))
    assert main(["certs", "check", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "error: server server.crt: the server certificate expired" in out
    assert main(["certs", "check", "--dir", str(tmp_path), "--json"]) == 1
    assert '"code": "expired"' in capsys.readouterr().out


def test_issue_server_and_rotate_reload_a_running_broker(broker_dir, capsys):
    """The broker re-reads server.crt on SIGHUP; a stand-in process records the signal."""
    marker = broker_dir / "hup"
    script = (
        "import pathlib, signal, sys, time\n"
        f"signal.signal(signal.SIGHUP, lambda *_: pathlib.Path({str(marker)!r}).touch())\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    stand_in = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert stand_in.stdout.readline().strip() == "ready"
        broker_dir.mkdir(parents=True)
        (broker_dir / "mosquitto.pid").write_text(f"{stand_in.pid}\n")
        assert main(["certs", "init-ca"]) == 0
        assert main(["certs", "issue-server", "--dns", "broker.example"]) == 0
        assert "the running broker reloaded its certificate" in capsys.readouterr().out
        wait_until(marker.exists, timeout=10, message="the SIGHUP")
        marker.unlink()
        assert main(["certs", "rotate-server"]) == 0
        wait_until(marker.exists, timeout=10, message="the second SIGHUP")
    finally:
        stand_in.send_signal(signal.SIGTERM)
        stand_in.wait(10)


def test_the_cli_walks_through_a_ca_rollover(tmp_path, broker_dir, capsys):
    d = ["--dir", str(tmp_path)]
    assert main(["certs", "init-ca", *d]) == 0
    assert main(["certs", "issue-server", *d, "--dns", "broker.example"]) == 0
    assert main(["certs", "rollover-ca", *d]) == 0
    out = capsys.readouterr().out
    assert "trusts the new and the previous CA" in out and "rotate-server" in out
    assert main(["certs", "check", *d]) == 0
    assert "rollover is in progress" in capsys.readouterr().out
    assert main(["certs", "finish-rollover", *d]) == 2
    assert "still signed by the previous CA: server.crt" in capsys.readouterr().err
    assert main(["certs", "rotate-server", *d]) == 0
    assert main(["certs", "finish-rollover", *d]) == 0
    assert len(x509.load_pem_x509_certificates((tmp_path / "ca-bundle.crt").read_bytes())) == 1
