"""The certificate folder (CertStore), its files, and what is checked about names."""

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
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from core.clock import utc_now
from core.contract import CLIENT_ID_RE
from core.files import write_private

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
