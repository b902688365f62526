"""Renewing: the server certificate (rotate_server) and the CA (rollover_ca, finish_rollover)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from mosquitto.cert_defaults import (
    CA_COMMON_NAME,
    CA_DAYS,
    SERVER_DAYS,
)
from mosquitto.certs.checking import _signed_by
from mosquitto.certs.files import (
    CertError,
    CertStore,
    Issued,
    _now,
    _pem,
    _validate_days,
    _write_bundle,
    _write_key,
    load_cert,
    write_public,
)
from mosquitto.certs.issuing import (
    _build_ca,
    _distinct_name,
    _issued,
    _key_type_of,
    _new_key,
    _write_server,
    server_sans,
)


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
