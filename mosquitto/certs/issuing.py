"""Making keys and certificates: the CA (init_ca) and the server and device certificates."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mosquitto.cert_defaults import (
    CA_COMMON_NAME,
    CA_DAYS,
    CLIENT_DAYS,
    KEY_TYPES,
    SERVER_DAYS,
)
from mosquitto.certs.files import (
    BACKDATE,
    ORGANIZATION,
    CertError,
    CertStore,
    Issued,
    KeyType,
    PrivateKey,
    _dedupe,
    _now,
    _pem,
    _validate_days,
    _write_bundle,
    _write_key,
    load_cert,
    validate_dns_name,
    validate_ip,
    validate_uuid,
    write_public,
)

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
