"""Certificates for the broker's TLS: our own CA, the server certificate, device certificates.

One directory (default BROKER_DIR/certs) holds everything:

    ca.crt, ca.key          the current CA (BasicConstraints ca=True critical, KeyUsage, SKI, AKI)
    ca-bundle.crt           what the broker (cafile) and every client trust: the current CA, and
                            during a CA rollover the previous one too
    ca-previous.crt         the previous CA, only while a rollover is in progress
    server.crt, server.key  the broker's certificate (serverAuth, a SAN for every name and IP
                            clients use); server.crt holds the leaf only (Mosquitto's certfile)
    clients/<uuid>.crt/.key device certificates (clientAuth, CN = uuid) for mutual TLS

Key files are 0600, certificates 0644; every file is replaced atomically, so a broker that
reloads never reads half a file. Keys are EC P-256 unless RSA 3072 is asked for.

CA rollover (runbook). Mosquitto (2.0) reads its `cafile` only when it starts: a SIGHUP
reloads the server certificate and key, not the bundle, so bundle changes need a restart.
1. `rollover_ca`: a new CA; ca-bundle.crt holds new + previous. Nothing served changes yet;
   after a broker restart it accepts client certificates of both CAs.
2. Give every client (and the backend's MQTT_TLS_CA_CERT) the new ca-bundle.crt.
3. `rotate_server` (signed by the new CA) and reload (SIGHUP is enough); `issue_client`
   again for mTLS devices.
4. `finish_rollover` (refused while a certificate still needs the previous CA): the previous
   CA leaves the bundle; restart the broker and hand out the bundle once more.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from core.clock import utc_now
from core.contract import CLIENT_ID_RE
from core.files import write_private
from mosquitto.cert_defaults import (  # noqa: F401 - part of this module's interface
    CA_COMMON_NAME,
    CA_DAYS,
    CLIENT_DAYS,
    ERROR_DAYS,
    KEY_TYPES,
    SERVER_DAYS,
    WARN_DAYS,
)

ORGANIZATION = "Infoscreen"
# Certificates start a little in the past: a device whose clock lags a few minutes behind
# still accepts a certificate issued just now.
BACKDATE = timedelta(minutes=5)

_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
HOSTNAME_RE = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$")

KeyType = Literal["ec", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class CertError(ValueError):
    """A certificate request that cannot be honoured; the message says why and what to do."""


@dataclass(frozen=True)
class Issued:
    """What a command wrote."""

    cert_path: Path
    key_path: Path
    subject: str
    sans: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    # The requested validity would have outlived the CA; not_after is the CA's instead.
    limited_by_ca: bool = False
    # The names and addresses the replaced server certificate covered and this one does not.
    dropped_sans: tuple[str, ...] = ()


@dataclass(frozen=True)
class Problem:
    level: Literal["warning", "error"]
    code: str  # expired, not_yet_valid, expiring, missing_eku, untrusted, key_mismatch, ...
    message: str


@dataclass(frozen=True)
class CertStatus:
    """One certificate as check() found it."""

    role: Literal["ca", "previous-ca", "server", "client"]
    path: Path
    subject: str
    common_name: str | None
    sans: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    days_left: int
    fingerprint_sha256: str
    # Signed by a CA in ca-bundle.crt (for a CA: it is in the bundle and its signature holds).
    chains_to_bundle: bool
    # Signed by the current CA (ca.crt); False for a certificate still from the previous CA.
    signed_by_current_ca: bool
    problems: tuple[Problem, ...] = ()

    @property
    def level(self) -> Literal["ok", "warning", "error"]:
        levels = {p.level for p in self.problems}
        return "error" if "error" in levels else "warning" if levels else "ok"


@dataclass(frozen=True)
class CheckReport:
    directory: Path
    now: datetime
    certificates: tuple[CertStatus, ...]
    # Problems of the directory as a whole: no CA, no server certificate, an unreadable file.
    problems: tuple[Problem, ...] = ()
    rollover_in_progress: bool = False

    @property
    def all_problems(self) -> list[tuple[CertStatus | None, Problem]]:
        found: list[tuple[CertStatus | None, Problem]] = [(None, p) for p in self.problems]
        found += [(c, p) for c in self.certificates for p in c.problems]
        return found

    @property
    def errors(self) -> list[tuple[CertStatus | None, Problem]]:
        return [(c, p) for c, p in self.all_problems if p.level == "error"]

    @property
    def warnings(self) -> list[tuple[CertStatus | None, Problem]]:
        return [(c, p) for c, p in self.all_problems if p.level == "warning"]

    def get(self, role: str) -> CertStatus | None:
        return next((c for c in self.certificates if c.role == role), None)


class CertStore:
    """The file layout of one certificate directory."""

    def __init__(self, directory: Path | str):
        self.directory = Path(directory)
        self.ca_cert = self.directory / "ca.crt"
        self.ca_key = self.directory / "ca.key"
        self.bundle = self.directory / "ca-bundle.crt"
        self.previous_ca = self.directory / "ca-previous.crt"
        self.server_cert = self.directory / "server.crt"
        self.server_key = self.directory / "server.key"
        self.clients_dir = self.directory / "clients"

    def __repr__(self) -> str:
        return f"CertStore({str(self.directory)!r})"

    @classmethod
    def in_broker_dir(cls, broker_dir: Path) -> CertStore:
        return cls(Path(broker_dir) / "certs")

    def client_cert(self, uuid: str) -> Path:
        return self.clients_dir / f"{uuid}.crt"

    def client_key(self, uuid: str) -> Path:
        return self.clients_dir / f"{uuid}.key"

    def client_certs(self) -> list[Path]:
        return sorted(self.clients_dir.glob("*.crt")) if self.clients_dir.is_dir() else []

    def has_ca(self) -> bool:
        return self.ca_cert.exists() and self.ca_key.exists()

    def rollover_in_progress(self) -> bool:
        return self.previous_ca.exists()

    def load_ca(self) -> tuple[x509.Certificate, PrivateKey]:
        if not self.has_ca():
            raise CertError(
                f"no CA in {self.directory}; create one first: infoscreen certs init-ca"
            )
        return load_cert(self.ca_cert), load_key(self.ca_key)

    def load_bundle(self) -> list[x509.Certificate]:
        if not self.bundle.exists():
            return []
        return x509.load_pem_x509_certificates(self.bundle.read_bytes())


# Reading and writing


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def load_key(path: Path) -> PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CertError(f"{path}: only EC and RSA keys are supported")
    return key


def write_public(path: Path, data: bytes) -> None:
    """A certificate: 0644 whatever the umask, replaced atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.fchmod(fd, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_key(path: Path, key: PrivateKey) -> None:
    write_private(path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii"))


def _write_bundle(store: CertStore, cas: Sequence[x509.Certificate]) -> None:
    write_public(store.bundle, b"".join(_pem(ca) for ca in cas))


# Validation


def validate_dns_name(name: str) -> str:
    """A DNS name for a SAN, lowercased; a wildcard is allowed as the first label only."""
    cleaned = name.strip().lower().removesuffix(".")
    try:
        ipaddress.ip_address(cleaned)
    except ValueError:
        pass
    else:
        raise CertError(f"{name!r} is an IP address; pass it with --ip, not --dns")
    if len(cleaned) > 253 or not HOSTNAME_RE.match(cleaned):
        raise CertError(
            f"{name!r} is not a valid host name: labels of letters, digits and '-' "
            "(no leading or trailing '-', at most 63 characters) separated by dots; "
            "write international names in their xn-- form"
        )
    if cleaned.startswith("*.") and "." not in cleaned[2:]:
        raise CertError(f"{name!r}: a wildcard needs at least two labels after '*.'")
    return cleaned


def validate_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(address.strip())
    except ValueError:
        raise CertError(
            f"{address!r} is not an IP address (IPv4 like 192.0.2.10 or IPv6 like 2001:db8::10)"
        ) from None


def validate_uuid(uuid: str) -> str:
    if not CLIENT_ID_RE.match(uuid):
        raise CertError(
            f"a device certificate's CN is the device's uuid (8-4-4-4-12 hex digits), got {uuid!r}"
        )
    return uuid


def _validate_days(days: int) -> int:
    if not isinstance(days, int) or days < 1:
        raise CertError(f"--days must be a whole number of days, at least 1, got {days!r}")
    return days


def _now(now: datetime | None) -> datetime:
    now = utc_now() if now is None else now
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    return now.replace(microsecond=0)


def _dedupe(items: Iterable) -> list:
    return list(dict.fromkeys(items))


# Building certificates


def _new_key(key_type: str) -> PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise CertError(f"unknown key type {key_type!r}; choose one of {', '.join(KEY_TYPES)}")


def _key_type_of(key) -> KeyType:
    return "rsa" if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey) else "ec"


def _ski(cert: x509.Certificate) -> x509.SubjectKeyIdentifier:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value


def _build_ca(
    common_name: str, key: PrivateKey, now: datetime, days: int
) -> x509.Certificate:
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def _build_leaf(
    *,
    ca: x509.Certificate,
    ca_key: PrivateKey,
    key: PrivateKey,
    common_name: str,
    sans: Sequence[x509.GeneralName],
    eku: x509.ObjectIdentifier,
    now: datetime,
    days: int,
) -> tuple[x509.Certificate, bool]:
    not_after = now + timedelta(days=days)
    limited = not_after > ca.not_valid_after_utc
    if limited:
        not_after = ca.not_valid_after_utc
    rsa_key = _key_type_of(key) == "rsa"
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=rsa_key,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(_ski(ca)),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), limited


def _issued(cert: x509.Certificate, cert_path: Path, key_path: Path, **kw) -> Issued:
    return Issued(
        cert_path=cert_path, key_path=key_path, subject=cert.subject.rfc4514_string(),
        sans=tuple(san_strings(cert)), not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc, **kw,
    )


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def server_sans(
    cert: x509.Certificate,
) -> tuple[list[str], list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """The DNS names and the IP addresses a certificate covers."""
    san = _san(cert)
    if san is None:
        return [], []
    return san.get_values_for_type(x509.DNSName), san.get_values_for_type(x509.IPAddress)


def san_strings(cert: x509.Certificate) -> list[str]:
    """DNS names, IP addresses, then URIs, as text."""
    san = _san(cert)
    if san is None:
        return []
    return (
        san.get_values_for_type(x509.DNSName)
        + [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
        + san.get_values_for_type(x509.UniformResourceIdentifier)
    )


def _distinct_name(wanted: str, taken: Iterable[x509.Certificate]) -> str:
    """A CA name that no CA still trusted carries: clients tell CAs apart by name first."""
    names = {_common_name(c) for c in taken}
    candidate, n = wanted, 1
    while candidate in names:
        n += 1
        candidate = f"{wanted} {n}"
    return candidate


def _common_name(cert: x509.Certificate) -> str | None:
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


# Operations


def init_ca(
    directory: Path,
    *,
    common_name: str = CA_COMMON_NAME,
    days: int = CA_DAYS,
    key_type: str = "ec",
    force: bool = False,
    now: datetime | None = None,
) -> Issued:
    """Create the CA (ca.crt, ca.key) and a ca-bundle.crt that holds it.

    Refuses to replace an existing CA unless force: every certificate it signed would stop
    being trusted. On a live fleet, use rollover_ca instead.
    """
    store = CertStore(directory)
    _validate_days(days)
    now = _now(now)
    if not common_name.strip():
        raise CertError("the CA needs a common name")
    if (store.ca_cert.exists() or store.ca_key.exists()) and not force:
        existing = ""
        if store.ca_cert.exists():
            old = load_cert(store.ca_cert)
            existing = f" ({_common_name(old)}, valid until {old.not_valid_after_utc:%Y-%m-%d})"
        raise CertError(
            f"a CA already exists in {store.directory}{existing}; refusing to overwrite it, "
            "since every certificate it signed would stop being trusted. To replace it on a "
            "live fleet use `infoscreen certs rollover-ca`; to start over, pass --force"
        )
    key = _new_key(key_type)
    cert = _build_ca(common_name.strip(), key, now, days)
    _write_key(store.ca_key, key)
    write_public(store.ca_cert, _pem(cert))
    _write_bundle(store, [cert])
    store.previous_ca.unlink(missing_ok=True)
    return _issued(cert, store.ca_cert, store.ca_key)


def issue_server(
    directory: Path,
    *,
    dns_names: Sequence[str] = (),
    ips: Sequence[str] = (),
    days: int = SERVER_DAYS,
    key_type: str = "ec",
    force: bool = False,
    now: datetime | None = None,
) -> Issued:
    """A new server.key and server.crt (serverAuth, a SAN for every name and IP) from the CA.

    Replacing a server certificate that covered a name or address this one leaves out is
    refused unless force: clients that connect by it would fail.
    """
    store = CertStore(directory)
    names = _dedupe(validate_dns_name(n) for n in dns_names)
    addresses = _dedupe(validate_ip(a) for a in ips)
    if not names and not addresses:
        raise CertError(
            "a server certificate needs every host name (--dns) and IP address (--ip) "
            "that clients use to reach the broker; none was given"
        )
    _validate_days(days)
    now = _now(now)
    ca, ca_key = store.load_ca()
    dropped: tuple[str, ...] = ()
    if store.server_cert.exists():
        old_dns, old_ips = server_sans(load_cert(store.server_cert))
        dropped = tuple([n for n in old_dns if n not in names]
                        + [str(a) for a in old_ips if a not in addresses])
        if dropped and not force:
            raise CertError(
                f"the current server certificate also covers {', '.join(dropped)}; clients "
                "that connect by those would fail. Name them again, or pass --force to drop them"
            )
    return _write_server(store, ca, ca_key, names, addresses, days, key_type, now, dropped)


def _write_server(store, ca, ca_key, names, addresses, days, key_type, now, dropped) -> Issued:
    key = _new_key(key_type)
    sans = [x509.DNSName(n) for n in names] + [x509.IPAddress(a) for a in addresses]
    common_name = names[0] if names else str(addresses[0])
    cert, limited = _build_leaf(
        ca=ca, ca_key=ca_key, key=key, common_name=common_name, sans=sans,
        eku=ExtendedKeyUsageOID.SERVER_AUTH, now=now, days=days,
    )
    _write_key(store.server_key, key)
    write_public(store.server_cert, _pem(cert))
    return _issued(cert, store.server_cert, store.server_key, limited_by_ca=limited,
                   dropped_sans=dropped)


def rotate_server(
    directory: Path,
    *,
    days: int = SERVER_DAYS,
    key_type: str | None = None,
    now: datetime | None = None,
) -> Issued:
    """A new server key and certificate with the same SANs, signed by the current CA.

    The key type stays what it was unless key_type says otherwise.
    """
    store = CertStore(directory)
    _validate_days(days)
    now = _now(now)
    ca, ca_key = store.load_ca()
    if not store.server_cert.exists():
        raise CertError(
            f"no server certificate to rotate in {store.directory}; issue one first: "
            "infoscreen certs issue-server --dns NAME --ip ADDRESS"
        )
    current = load_cert(store.server_cert)
    names, addresses = server_sans(current)
    if not names and not addresses:
        raise CertError(f"{store.server_cert} has no SAN to keep; issue a new one (issue-server)")
    key_type = key_type or _key_type_of(current.public_key())
    return _write_server(store, ca, ca_key, names, addresses, days, key_type, now, ())


def issue_client(
    directory: Path,
    uuid: str,
    *,
    days: int = CLIENT_DAYS,
    key_type: str = "ec",
    now: datetime | None = None,
) -> Issued:
    """clients/<uuid>.crt and .key: clientAuth, CN = the device's uuid (its broker username
    under use_identity_as_username). Issuing again renews it."""
    store = CertStore(directory)
    validate_uuid(uuid)
    _validate_days(days)
    now = _now(now)
    ca, ca_key = store.load_ca()
    key = _new_key(key_type)
    cert, limited = _build_leaf(
        # The URN SAN serves verifiers that want a SAN; Mosquitto takes the CN as username.
        ca=ca, ca_key=ca_key, key=key, common_name=uuid,
        sans=[x509.UniformResourceIdentifier(f"urn:uuid:{uuid.lower()}")],
        eku=ExtendedKeyUsageOID.CLIENT_AUTH, now=now, days=days,
    )
    store.clients_dir.mkdir(parents=True, exist_ok=True)
    _write_key(store.client_key(uuid), key)
    write_public(store.client_cert(uuid), _pem(cert))
    return _issued(cert, store.client_cert(uuid), store.client_key(uuid), limited_by_ca=limited)


def rollover_ca(
    directory: Path,
    *,
    common_name: str = CA_COMMON_NAME,
    days: int = CA_DAYS,
    key_type: str = "ec",
    now: datetime | None = None,
) -> Issued:
    """Start a CA rollover: a new CA becomes ca.crt; the old one is kept as ca-previous.crt and
    ca-bundle.crt holds both. The server and client certificates are left as they are: they
    stay trusted through the bundle until they are reissued (see the module's runbook).
    The old CA's key is not kept: nothing is signed by it again.
    """
    store = CertStore(directory)
    _validate_days(days)
    now = _now(now)
    old, _ = store.load_ca()
    if store.rollover_in_progress():
        raise CertError(
            f"a CA rollover is already in progress in {store.directory} (ca-previous.crt); "
            "finish it first: infoscreen certs finish-rollover"
        )
    key = _new_key(key_type)
    cert = _build_ca(_distinct_name(common_name.strip() or CA_COMMON_NAME, [old]), key, now, days)
    # Order matters for a crash in between: the bundle that trusts both comes first.
    write_public(store.previous_ca, _pem(old))
    _write_bundle(store, [cert, old])
    _write_key(store.ca_key, key)
    write_public(store.ca_cert, _pem(cert))
    return _issued(cert, store.ca_cert, store.ca_key)


def finish_rollover(directory: Path, *, force: bool = False) -> list[Path]:
    """End a CA rollover: ca-bundle.crt holds the current CA only; ca-previous.crt goes.

    Refused while server.crt or a client certificate is still signed by the previous CA
    (they would stop being trusted) unless force; returns those certificates.
    """
    store = CertStore(directory)
    ca, _ = store.load_ca()
    if not store.rollover_in_progress():
        raise CertError(
            f"no CA rollover is in progress in {store.directory} (no ca-previous.crt)"
        )
    stale = [
        path for path in [store.server_cert, *store.client_certs()]
        if path.exists() and not _signed_by(load_cert(path), ca)
    ]
    if stale and not force:
        shown = ", ".join(str(p.relative_to(store.directory)) for p in stale[:5])
        more = f" and {len(stale) - 5} more" if len(stale) > 5 else ""
        raise CertError(
            f"still signed by the previous CA: {shown}{more}. Reissue them first "
            "(rotate-server, issue-client UUID), or pass --force to stop trusting them"
        )
    _write_bundle(store, [ca])
    store.previous_ca.unlink()
    return stale


# Checking


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _has_eku(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bool:
    try:
        return oid in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _validity_problems(
    cert: x509.Certificate, now: datetime, what: str, warn_days: int, error_days: int
) -> list[Problem]:
    if now < cert.not_valid_before_utc:
        return [Problem("error", "not_yet_valid",
                        f"{what} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} "
                        "UTC (is this machine's clock right?)")]
    left = cert.not_valid_after_utc - now
    if left <= timedelta(0):
        return [Problem("error", "expired",
                        f"{what} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")]
    for level, limit in (("error", error_days), ("warning", warn_days)):
        if left <= timedelta(days=limit):
            return [Problem(level, "expiring",
                            f"{what} expires in {left.days} days, on "
                            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")]
    return []


def _key_problems(key_path: Path, cert: x509.Certificate, what: str) -> list[Problem]:
    if not key_path.exists():
        return [Problem("error", "key_missing", f"{what}: {key_path} is missing")]
    problems = []
    if key_path.stat().st_mode & 0o077:
        problems.append(Problem("warning", "key_mode",
                                f"{key_path} is readable by others than its owner; chmod 600"))
    try:
        key = load_key(key_path)
    except (ValueError, TypeError, CertError) as exc:
        return [*problems, Problem("error", "key_unreadable", f"{key_path}: {exc}")]
    same = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if not same:
        problems.append(Problem("error", "key_mismatch",
                                f"{key_path} does not belong to {what}'s certificate"))
    return problems


def _status(
    role, path, cert, now, problems, *, chains: bool, current: bool
) -> CertStatus:
    return CertStatus(
        role=role, path=path, subject=cert.subject.rfc4514_string(),
        common_name=_common_name(cert), sans=tuple(san_strings(cert)),
        not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
        days_left=(cert.not_valid_after_utc - now) // timedelta(days=1),
        fingerprint_sha256=_fingerprint(cert), chains_to_bundle=chains,
        signed_by_current_ca=current, problems=tuple(problems),
    )


def check(
    directory: Path,
    now: datetime,
    *,
    warn_days: int = WARN_DAYS,
    error_days: int = ERROR_DAYS,
) -> CheckReport:
    """Every certificate of the directory with its dates and problems: expired or not yet
    valid (error), expiring within error_days (error) or warn_days (warning), a missing EKU,
    a certificate no CA of the bundle signed, a key that is missing, exposed or foreign."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    store = CertStore(directory)
    rollover = store.rollover_in_progress()
    if not store.ca_cert.exists():
        return CheckReport(store.directory, now, (), (Problem(
            "error", "no_ca", f"no CA in {store.directory}; create one: infoscreen certs init-ca"),
        ), rollover)
    store_problems: list[Problem] = []
    statuses: list[CertStatus] = []

    def read(path: Path) -> x509.Certificate | None:
        try:
            return load_cert(path)
        except (OSError, ValueError) as exc:
            store_problems.append(Problem("error", "unreadable",
                                          f"{path}: not a PEM certificate ({exc})"))
            return None

    try:
        bundle = store.load_bundle()
    except (OSError, ValueError) as exc:
        store_problems.append(Problem("error", "unreadable", f"{store.bundle}: {exc}"))
        bundle = []
    bundle_prints = {_fingerprint(c) for c in bundle}
    ca = read(store.ca_cert)
    if ca is None:
        return CheckReport(store.directory, now, (), tuple(store_problems), rollover)

    def trusted(cert: x509.Certificate) -> bool:
        return any(_signed_by(cert, c) for c in bundle)

    def check_ca(role, path, cert, key_path) -> None:
        what = "the CA" if role == "ca" else "the previous CA"
        problems = _validity_problems(cert, now, what, warn_days, error_days)
        in_bundle = _fingerprint(cert) in bundle_prints
        if not in_bundle:
            problems.append(Problem("error", "untrusted",
                                    f"{what} is not in {store.bundle.name}"))
        if key_path is not None:
            problems += _key_problems(key_path, cert, what)
        statuses.append(_status(role, path, cert, now, problems,
                                chains=in_bundle and _signed_by(cert, cert),
                                current=_signed_by(cert, ca)))

    check_ca("ca", store.ca_cert, ca, store.ca_key)
    if rollover and (previous := read(store.previous_ca)) is not None:
        check_ca("previous-ca", store.previous_ca, previous, None)

    def check_leaf(role, path, key_path, what, eku, eku_name, extra) -> None:
        cert = read(path)
        if cert is None:
            return
        problems = _validity_problems(cert, now, what, warn_days, error_days)
        if not _has_eku(cert, eku):
            problems.append(Problem("error", "missing_eku",
                                    f"{what} lacks the {eku_name} extended key usage"))
        chains = trusted(cert)
        if not chains:
            problems.append(Problem("error", "untrusted", f"{what} is not signed by a CA in "
                                    f"{store.bundle.name}; reissue it"))
        problems += extra(cert)
        problems += _key_problems(key_path, cert, what)
        statuses.append(_status(role, path, cert, now, problems, chains=chains,
                                current=_signed_by(cert, ca)))

    def server_names(cert: x509.Certificate) -> list[Problem]:
        if any(server_sans(cert)):
            return []
        return [Problem("error", "no_san",
                        "the server certificate names no host or address (SAN)")]

    if store.server_cert.exists():
        check_leaf("server", store.server_cert, store.server_key, "the server certificate",
                   ExtendedKeyUsageOID.SERVER_AUTH, "serverAuth", server_names)
    else:
        store_problems.append(Problem(
            "warning", "no_server",
            f"no server certificate in {store.directory}; issue one: "
            "infoscreen certs issue-server --dns NAME --ip ADDRESS"))

    for path in store.client_certs():
        uuid = path.stem

        def own_name(cert: x509.Certificate, uuid: str = uuid) -> list[Problem]:
            cn = _common_name(cert)
            if cn == uuid:
                return []
            return [Problem("error", "wrong_cn", f"clients/{uuid}.crt has CN={cn}, not {uuid}")]

        check_leaf("client", path, store.client_key(uuid), f"the certificate of client {uuid}",
                   ExtendedKeyUsageOID.CLIENT_AUTH, "clientAuth", own_name)

    return CheckReport(store.directory, now, tuple(statuses), tuple(store_problems), rollover)
