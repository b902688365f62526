"""Mosquitto configuration rendered from the templates beside this module."""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

TEMPLATES = Path(__file__).parent / "templates"


LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


class ConfigError(ValueError):
    """A broker configuration that must not be generated; the message says why."""


@dataclass(frozen=True)
class TlsFiles:
    """What a TLS listener serves and trusts (files from `infoscreen certs`)."""

    cafile: Path  # the CA bundle: client certificates are checked against it
    certfile: Path
    keyfile: Path


def tls_files(cert_dir: Path, *, seen_as: Path | None = None) -> TlsFiles:
    """The broker's TLS files in `cert_dir` (the `infoscreen certs` layout), checked to exist.

    `seen_as` is where the broker finds that folder when it differs (a container's mount).
    """
    from mosquitto.certs import CertStore

    store = CertStore(cert_dir)
    missing = [p for p in (store.bundle, store.server_cert, store.server_key) if not p.exists()]
    if missing:
        raise ConfigError(
            f"the TLS listener needs the CA bundle and the server certificate, and "
            f"{', '.join(str(p) for p in missing)} is missing. Make them with:\n"
            + ("" if store.has_ca() else "  infoscreen certs init-ca\n")
            + "  infoscreen certs issue-server --dns BROKER_HOST_NAME --ip BROKER_ADDRESS"
        )
    served = CertStore(seen_as) if seen_as is not None else store
    return TlsFiles(served.bundle, served.server_cert, served.server_key)


@dataclass(frozen=True)
class Listener:
    """One listener. Every listener has its own authentication settings
    (`per_listener_settings true`), and none allows anonymous clients.

    - TLS (`tls` set): TLS 1.2 or newer, login with username and password.
    - Mutual TLS (`tls` and `require_certificate`): for devices, whose certificate's CN (their
      uuid) is their username; no password.
    - Plain (`tls` None): only on loopback, for a staged migration or the tests.
    """

    port: int
    address: str
    comment: str
    tls: TlsFiles | None = None
    require_certificate: bool = False

    def __post_init__(self) -> None:
        if self.tls is None and self.address not in LOOPBACK:
            raise ConfigError(
                f"a plain (non-TLS) listener is only allowed on loopback, not on {self.address}"
            )
        if self.require_certificate and self.tls is None:
            raise ConfigError("a listener that requires client certificates needs TLS files")


@dataclass(frozen=True)
class BrokerConfig:
    broker_dir: Path
    listeners: tuple[Listener, ...]
    max_queued_messages: int = 100_000
    max_inflight_messages: int = 1000
    log_dest: str = "stderr"
    run_as_user: str | None = field(default_factory=getpass.getuser)
    # Where the broker sees broker_dir, when that differs (a container's mount point).
    mount_dir: Path | None = None

    @property
    def conf_file(self) -> Path:
        return self.broker_dir / "mosquitto.conf"

    @property
    def pid_file(self) -> Path:
        return self.broker_dir / "mosquitto.pid"


def _template(name: str) -> Template:
    return Template((TEMPLATES / name).read_text(encoding="utf-8"))


def _listener_lines(listener: Listener, broker_dir: Path) -> str:
    lines = [
        f"# {listener.comment}",
        f"listener {listener.port} {listener.address}",
        "protocol mqtt",
        "allow_anonymous false",
        f"acl_file {broker_dir / 'acl'}",
    ]
    if listener.require_certificate:
        # The certificate is the login: its CN (the device's uuid) is the username.
        lines += ["require_certificate true", "use_identity_as_username true"]
    else:
        lines.append(f"password_file {broker_dir / 'passwd'}")
    if listener.tls is not None:
        lines += [
            f"cafile {listener.tls.cafile}",
            f"certfile {listener.tls.certfile}",
            f"keyfile {listener.tls.keyfile}",
            "tls_version tlsv1.2",  # the oldest version accepted
        ]
    return "\n" + "\n".join(lines) + "\n"


def render_config(config: BrokerConfig) -> str:
    broker_dir = config.mount_dir or config.broker_dir.resolve()
    listeners = "".join(_listener_lines(listener, broker_dir) for listener in config.listeners)
    return _template("mosquitto.conf.tmpl").substitute(
        data_dir=broker_dir / "data",
        # In a container the broker's folder is mounted read-only: the pid goes with the data.
        pid_file=(broker_dir / "data" if config.mount_dir else broker_dir) / "mosquitto.pid",
        # Started as root, Mosquitto switches to this user; it must be able to read our 0600 files.
        user_line=f"user {config.run_as_user}" if config.run_as_user else "",
        max_queued_messages=config.max_queued_messages,
        max_inflight_messages=config.max_inflight_messages,
        log_dest=config.log_dest,
        listeners=listeners,
    )


def write_config(config: BrokerConfig) -> Path:
    (config.broker_dir / "data").mkdir(parents=True, exist_ok=True)
    config.conf_file.write_text(render_config(config), encoding="utf-8")
    return config.conf_file
