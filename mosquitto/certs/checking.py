"""Checking the folder: every certificate, its expiry and its problems (check)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from mosquitto.cert_defaults import (
    ERROR_DAYS,
    WARN_DAYS,
)
from mosquitto.certs.files import (
    CertError,
    CertStatus,
    CertStore,
    CheckReport,
    Problem,
    load_cert,
    load_key,
)
from mosquitto.certs.issuing import _common_name, san_strings, server_sans

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
