"""Mosquitto configuration rendered from the templates beside this module."""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Listener:
    port: int
    address: str
    comment: str
    # TLS settings slot in here (cafile, certfile, keyfile, require_certificate).
    extra: tuple[str, ...] = ()


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


def render_config(config: BrokerConfig) -> str:
    broker_dir = config.mount_dir or config.broker_dir.resolve()
    listeners = "".join(
        _template("listener.tmpl").substitute(
            port=listener.port, address=listener.address, comment=listener.comment
        )
        + "".join(f"{line}\n" for line in listener.extra)
        for listener in config.listeners
    )
    return _template("mosquitto.conf.tmpl").substitute(
        password_file=broker_dir / "passwd",
        acl_file=broker_dir / "acl",
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
