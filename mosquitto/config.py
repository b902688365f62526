"""Mosquitto configuration rendered from the templates beside this module."""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from core.config import Settings
from mosquitto.guard import GuardBuildError, build_guard

TEMPLATES = Path(__file__).parent / "templates"
DEVICE_PASSWORD_FILE = "passwd"  # noqa: S105 - a file name: device and monitor accounts
SERVICE_PASSWORD_FILE = "passwd-services"  # noqa: S105 - the backend's own accounts


LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})

# The broker's limits default to the settings' defaults (BROKER_MAX_*; why those sizes is
# written there).
_SETTINGS = Settings.model_fields
MAX_PACKET_BYTES: int = _SETTINGS["broker_max_packet_bytes"].default
MAX_QUEUED_MESSAGES: int = _SETTINGS["broker_max_queued_messages"].default
MAX_QUEUED_BYTES: int = _SETTINGS["broker_max_queued_bytes"].default


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

    A listener is for devices and monitors (the default) or for the backend's own services
    (`services`). On a device listener a client's id is its username, whatever it sent, so no
    login can take over another's connection or session, and shared subscriptions are refused
    (the guard plugin). Only device and monitor accounts log in there. The services keep
    their own stable client ids on theirs, where only service accounts log in.
    """

    port: int
    address: str
    comment: str
    tls: TlsFiles | None = None
    require_certificate: bool = False
    services: bool = False

    def __post_init__(self) -> None:
        if self.tls is None and self.address not in LOOPBACK:
            raise ConfigError(
                f"a plain (non-TLS) listener is only allowed on loopback, not on {self.address}"
            )
        if self.require_certificate and self.tls is None:
            raise ConfigError("a listener that requires client certificates needs TLS files")
        if self.require_certificate and self.services:
            raise ConfigError("the services' listener takes passwords, not client certificates")


@dataclass(frozen=True)
class BrokerConfig:
    broker_dir: Path
    listeners: tuple[Listener, ...]
    max_queued_messages: int = MAX_QUEUED_MESSAGES
    max_queued_bytes: int = MAX_QUEUED_BYTES
    max_inflight_messages: int = 1000
    max_packet_bytes: int = MAX_PACKET_BYTES
    log_dest: str = "stderr"
    run_as_user: str | None = field(default_factory=getpass.getuser)
    # Where the broker sees broker_dir, when that differs (a container's mount point).
    mount_dir: Path | None = None
    # Where the broker finds the guard plugin; None: build it into broker_dir/plugins.
    guard_plugin: Path | None = None

    def __post_init__(self) -> None:
        if not any(listener.services for listener in self.listeners):
            raise ConfigError("the broker needs a listener for the services (services=True)")
        if not any(not listener.services for listener in self.listeners):
            raise ConfigError("the broker needs a listener for the devices")
        ports = [listener.port for listener in self.listeners]
        if len(set(ports)) != len(ports):
            raise ConfigError(f"two listeners on one port: {ports}")

    @property
    def conf_file(self) -> Path:
        return self.broker_dir / "mosquitto.conf"

    @property
    def pid_file(self) -> Path:
        return self.broker_dir / "mosquitto.pid"


def _template(name: str) -> Template:
    return Template((TEMPLATES / name).read_text(encoding="utf-8"))


def _listener_lines(listener: Listener, broker_dir: Path, guard: Path) -> str:
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
        password_file = SERVICE_PASSWORD_FILE if listener.services else DEVICE_PASSWORD_FILE
        lines.append(f"password_file {broker_dir / password_file}")
    if not listener.services:
        lines += ["use_username_as_clientid true", f"plugin {guard}"]
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
    try:
        guard = config.guard_plugin or build_guard(config.broker_dir.resolve() / "plugins")
    except GuardBuildError as exc:
        raise ConfigError(str(exc)) from exc
    listeners = "".join(
        _listener_lines(listener, broker_dir, guard) for listener in config.listeners
    )
    return _template("mosquitto.conf.tmpl").substitute(
        data_dir=broker_dir / "data",
        # In a container the broker's folder is mounted read-only: the pid goes with the data.
        pid_file=(broker_dir / "data" if config.mount_dir else broker_dir) / "mosquitto.pid",
        # Started as root, Mosquitto switches to this user; it must be able to read our 0600 files.
        user_line=f"user {config.run_as_user}" if config.run_as_user else "",
        max_queued_messages=config.max_queued_messages,
        max_queued_bytes=config.max_queued_bytes,
        max_inflight_messages=config.max_inflight_messages,
        max_packet_size=config.max_packet_bytes,
        log_dest=config.log_dest,
        listeners=listeners,
    )


def write_config(config: BrokerConfig) -> Path:
    (config.broker_dir / "data").mkdir(parents=True, exist_ok=True)
    config.conf_file.write_text(render_config(config), encoding="utf-8")
    return config.conf_file
