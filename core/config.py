"""Configuration, read once per process from the environment and an optional `.env` file.

Every variable is documented in `.env.example`. Each secret also accepts `NAME_FILE` (a path
whose content is the value, as Docker secrets provide). With `INFOSCREEN_ENV=production`,
start-up refuses missing or well-known default secrets.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.contract import COMMAND_ACTIONS

SECRET_NAMES = ("MQTT_PASSWORD", "SECRET_KEY", "DATABASE_URL", "NOTIFY_URLS", "NOTIFY_SECRET_KEY")

# Values that ship in .env.example or that people type when trying things out.
KNOWN_DEFAULT_SECRETS = frozenset(
    {"", "changeme", "change-me", "secret", "password", "infoscreen", "admin", "test", "dev"}
)


def parse_address(text: str) -> tuple[str, int] | None:
    """`127.0.0.1:9101` → (host, port); empty → None; ValueError names what is wrong."""
    if not text:
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT, e.g. 127.0.0.1:9101 (empty: off)")
    return host.strip("[]"), int(port)


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the variable."""


class Settings(BaseModel):
    """Validated settings. Field aliases are the environment variable names."""

    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="ignore")

    env: Literal["development", "production"] = Field("development", alias="INFOSCREEN_ENV")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", alias="LOG_LEVEL")
    # text, or one JSON object per line (time, level, logger, process, pid, message, ids)
    log_format: Literal["text", "json"] = Field("text", alias="LOG_FORMAT")
    database_url: str = Field("sqlite:///var/infoscreen.db", alias="DATABASE_URL", min_length=1)
    secret_key: str = Field("", alias="SECRET_KEY")

    mqtt_host: str = Field("localhost", alias="MQTT_HOST", min_length=1)
    mqtt_port: int = Field(1883, alias="MQTT_PORT", ge=1, le=65535)
    mqtt_user: str = Field("", alias="MQTT_USER")
    mqtt_password: str = Field("", alias="MQTT_PASSWORD")
    mqtt_topic_prefix: str = Field("infoscreen", alias="MQTT_TOPIC_PREFIX", pattern=r"^[^#+/]+$")
    mqtt_keepalive: int = Field(30, alias="MQTT_KEEPALIVE", ge=5, le=3600)
    mqtt_tls_enabled: bool = Field(False, alias="MQTT_TLS_ENABLED")
    # Empty with TLS on: the system's trust store verifies the broker.
    mqtt_tls_ca_cert: str = Field("", alias="MQTT_TLS_CA_CERT")
    mqtt_tls_certfile: str = Field("", alias="MQTT_TLS_CERTFILE")
    mqtt_tls_keyfile: str = Field("", alias="MQTT_TLS_KEYFILE")
    mqtt_tls_insecure: bool = Field(False, alias="MQTT_TLS_INSECURE")

    listener_batch_size: int = Field(1000, alias="LISTENER_BATCH_SIZE", ge=1, le=50_000)
    listener_flush_ms: int = Field(100, alias="LISTENER_FLUSH_MS", ge=1, le=10_000)
    listener_max_payload_bytes: int = Field(
        65_536, alias="LISTENER_MAX_PAYLOAD_BYTES", ge=256, le=10_000_000
    )
    listener_shared_group: str = Field(
        "", alias="LISTENER_SHARED_GROUP", pattern=r"^[A-Za-z0-9_-]*$"
    )
    listener_client_id: str = Field("", alias="LISTENER_CLIENT_ID", pattern=r"^[A-Za-z0-9_.-]*$")
    # Prometheus endpoints (HOST:PORT, empty: off); loopback by default.
    listener_metrics_address: str = Field("127.0.0.1:9101", alias="LISTENER_METRICS_ADDRESS")
    scheduler_metrics_address: str = Field("127.0.0.1:9102", alias="SCHEDULER_METRICS_ADDRESS")
    listener_log_cap_per_client: int = Field(
        1000, alias="LISTENER_LOG_CAP_PER_CLIENT", ge=1, le=1_000_000
    )

    heartbeat_stale_seconds: int = Field(90, alias="HEARTBEAT_STALE_SECONDS", ge=1)
    heartbeat_down_seconds: int = Field(300, alias="HEARTBEAT_DOWN_SECONDS", ge=1)
    scheduler_poll_seconds: float = Field(5.0, alias="SCHEDULER_POLL_SECONDS", gt=0, le=3600)
    # /readyz fails when the scheduler's last good cycle is older than this.
    readyz_scheduler_max_age_seconds: int = Field(120, alias="READYZ_SCHEDULER_MAX_AGE_SECONDS",
                                                  ge=10, le=86_400)

    command_expiry_seconds: int = Field(300, alias="COMMAND_EXPIRY_SECONDS", ge=5, le=86_400)
    # At least 10 s: the compare-and-set that enforces it relies on two concurrent requests
    # being closer together than the window.
    command_lockout_seconds: int = Field(300, alias="COMMAND_LOCKOUT_SECONDS", ge=10, le=86_400)
    command_completion_seconds_restart_app: int = Field(
        120, alias="COMMAND_COMPLETION_SECONDS_RESTART_APP", ge=5, le=86_400
    )
    command_completion_seconds_reboot_host: int = Field(
        300, alias="COMMAND_COMPLETION_SECONDS_REBOOT_HOST", ge=5, le=86_400
    )
    command_completion_seconds_shutdown_host: int = Field(
        120, alias="COMMAND_COMPLETION_SECONDS_SHUTDOWN_HOST", ge=5, le=86_400
    )
    command_redispatch_seconds: float = Field(
        10.0, alias="COMMAND_REDISPATCH_SECONDS", ge=1, le=3600
    )

    # What a client can do when neither an admin, its discovery nor a failed ack said.
    default_supported_actions: tuple[str, ...] = Field(
        COMMAND_ACTIONS, alias="DEFAULT_SUPPORTED_ACTIONS"
    )
    # Power commands of one group that run at once; the rest wait their turn.
    group_command_max_parallel: int = Field(
        5, alias="GROUP_COMMAND_MAX_PARALLEL", ge=1, le=10_000
    )

    # Screenshots (the dashboard and screenshot topics), stored by the listener's own path.
    screenshot_dir: str = Field("var/screenshots", alias="SCREENSHOT_DIR", min_length=1)
    screenshot_max_bytes: int = Field(
        2_000_000, alias="SCREENSHOT_MAX_BYTES", ge=10_000, le=50_000_000
    )
    screenshot_max_pixels: int = Field(
        20_000_000, alias="SCREENSHOT_MAX_PIXELS", ge=10_000, le=200_000_000
    )
    screenshot_history: int = Field(20, alias="SCREENSHOT_HISTORY", ge=1, le=10_000)
    priority_screenshot_ttl_seconds: int = Field(
        600, alias="PRIORITY_SCREENSHOT_TTL_SECONDS", ge=0, le=7 * 86_400
    )
    screenshot_disk_budget_mb: int = Field(
        2048, alias="SCREENSHOT_DISK_BUDGET_MB", ge=1, le=10_000_000
    )
    screenshot_min_role: Literal["viewer", "operator", "admin"] = Field(
        "viewer", alias="SCREENSHOT_MIN_ROLE"
    )
    # The same picture this long raises screen_frozen; 0: not watched.
    screen_frozen_seconds: int = Field(0, alias="SCREEN_FROZEN_SECONDS", ge=0, le=7 * 86_400)

    # Notifications (core.notify_*): channels as Apprise URLs, their secrets encrypted at rest
    # with NOTIFY_SECRET_KEY; the noise controls; the messages' language and link.
    notify_urls: str = Field("", alias="NOTIFY_URLS")
    notify_secret_key: str = Field("", alias="NOTIFY_SECRET_KEY")
    notify_cooldown_seconds: int = Field(1800, alias="NOTIFY_COOLDOWN_SECONDS", ge=0,
                                         le=7 * 86_400)
    notify_reminder_seconds: int = Field(14_400, alias="NOTIFY_REMINDER_SECONDS", ge=0,
                                         le=30 * 86_400)
    notify_quiet_hours: str = Field("", alias="NOTIFY_QUIET_HOURS",
                                    pattern=r"^$|^\d{1,2}:\d{2}-\d{1,2}:\d{2}$")
    notify_timezone: str = Field("UTC", alias="NOTIFY_TIMEZONE", min_length=1)
    notify_digest_threshold: int = Field(5, alias="NOTIFY_DIGEST_THRESHOLD", ge=1, le=10_000)
    notify_digest_window_seconds: int = Field(60, alias="NOTIFY_DIGEST_WINDOW_SECONDS", ge=1,
                                              le=86_400)
    notify_escalate_after_seconds: int = Field(3600, alias="NOTIFY_ESCALATE_AFTER_SECONDS",
                                               ge=0, le=30 * 86_400)
    notify_send_timeout_seconds: float = Field(10.0, alias="NOTIFY_SEND_TIMEOUT_SECONDS",
                                               gt=0, le=300)
    notify_max_attempts: int = Field(5, alias="NOTIFY_MAX_ATTEMPTS", ge=1, le=100)
    notify_language: Literal["en", "de"] = Field("en", alias="NOTIFY_LANGUAGE")
    public_url: str = Field("http://127.0.0.1:8080", alias="PUBLIC_URL",
                            pattern=r"^https?://[^\s]+$")

    crash_recovery_enabled: bool = Field(False, alias="CRASH_RECOVERY_ENABLED")
    crash_recovery_max_attempts: int = Field(3, alias="CRASH_RECOVERY_MAX_ATTEMPTS", ge=1, le=100)
    crash_recovery_window_seconds: int = Field(
        3600, alias="CRASH_RECOVERY_WINDOW_SECONDS", ge=60, le=7 * 86_400
    )
    crash_recovery_max_per_minute: int = Field(
        10, alias="CRASH_RECOVERY_MAX_PER_MINUTE", ge=1, le=100_000
    )
    crash_recovery_fleet_brake_percent: float = Field(
        20.0, alias="CRASH_RECOVERY_FLEET_BRAKE_PERCENT", gt=0, le=100
    )

    event_retention_days: int = Field(90, alias="EVENT_RETENTION_DAYS", ge=1, le=3650)
    command_retention_days: int = Field(180, alias="COMMAND_RETENTION_DAYS", ge=1, le=3650)
    # The client page charts the last 24 h, so at least that much activity is kept.
    activity_retention_hours: int = Field(48, alias="ACTIVITY_RETENTION_HOURS", ge=24, le=24 * 366)

    # The scheduler's watch over the broker: its certificates (empty: BROKER_DIR/certs) and
    # the failed logins in its log file (empty: not watched).
    cert_check_dir: str = Field("", alias="CERT_CHECK_DIR")
    broker_log_file: str = Field("", alias="BROKER_LOG_FILE")
    broker_auth_report_seconds: int = Field(
        300, alias="BROKER_AUTH_REPORT_SECONDS", ge=1, le=86_400
    )

    server_bind: str = Field("127.0.0.1:8080", alias="SERVER_BIND", min_length=1)
    # Secure cookies need HTTPS; unset means: on in production, off in development.
    session_cookie_secure: bool | None = Field(None, alias="SESSION_COOKIE_SECURE")
    # Where sign-in attempts are counted: database:// is DATABASE_URL, shared by every worker.
    ratelimit_storage_uri: str = Field(
        "database://", alias="RATELIMIT_STORAGE_URI", pattern=r"^[a-z][a-z0-9+.-]*://"
    )
    sign_in_limit_per_account: str = Field("10 per minute", alias="SIGN_IN_LIMIT_PER_ACCOUNT")
    sign_in_limit_per_address: str = Field("30 per minute", alias="SIGN_IN_LIMIT_PER_ADDRESS")
    # Reverse proxies in front of gunicorn whose X-Forwarded-For/-Proto are believed.
    trusted_proxies: int = Field(0, alias="TRUSTED_PROXIES", ge=0, le=10)
    panel_refresh_seconds: float = Field(10.0, alias="PANEL_REFRESH_SECONDS", gt=0, le=15)
    server_workers: int = Field(2, alias="SERVER_WORKERS", ge=1, le=64)

    broker_dir: Path = Field(Path("var/mosquitto"), alias="BROKER_DIR")
    # What `infoscreen broker config` generates (the backend's clients use MQTT_* above).
    broker_tls_port: int = Field(8883, alias="BROKER_TLS_PORT", ge=1, le=65535)
    broker_tls_address: str = Field("0.0.0.0", alias="BROKER_TLS_ADDRESS", min_length=1)
    broker_mtls_port: int = Field(0, alias="BROKER_MTLS_PORT", ge=0, le=65535)
    # The services' own listener (TLS): only server accounts log in there, with their own
    # client ids. Devices and monitors use the TLS and mutual-TLS ports above.
    broker_service_port: int = Field(8885, alias="BROKER_SERVICE_PORT", ge=1, le=65535)
    broker_service_address: str = Field(
        "127.0.0.1", alias="BROKER_SERVICE_ADDRESS", min_length=1
    )
    # The largest message we accept is a screenshot: 2 MB of JPEG, base64 in a dashboard JSON,
    # is about 2.7 MB. A device sending a larger packet is disconnected by the broker.
    broker_max_packet_bytes: int = Field(
        4 * 1024 * 1024, alias="BROKER_MAX_PACKET_BYTES", ge=65_536, le=256 * 1024 * 1024
    )
    # What the broker holds for one client that is away or slow. The listener acknowledges
    # only what it committed, so while it restarts, falls behind or its database is away the
    # backlog waits there: a million messages are about 7 minutes of a 10,000-screen fleet
    # (2,300/s), and the byte cap keeps a flood of large messages from filling its memory.
    broker_max_queued_messages: int = Field(
        1_000_000, alias="BROKER_MAX_QUEUED_MESSAGES", ge=1000
    )
    broker_max_queued_bytes: int = Field(
        1024 * 1024 * 1024, alias="BROKER_MAX_QUEUED_BYTES", ge=1024 * 1024
    )
    mqtt_plain_listener: Literal["off", "loopback"] = Field("off", alias="MQTT_PLAIN_LISTENER")

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            raise ValueError("must start with sqlite:/// or postgresql+psycopg://")
        return value

    @field_validator("default_supported_actions", mode="before")
    @classmethod
    def _actions(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        names = [name for name in value.replace(",", " ").split() if name]
        unknown = [name for name in names if name not in COMMAND_ACTIONS]
        if unknown:
            raise ValueError(f"unknown action {unknown[0]!r}; expected some of "
                             f"{', '.join(COMMAND_ACTIONS)}, separated by commas")
        return tuple(a for a in COMMAND_ACTIONS if a in names)

    @field_validator("sign_in_limit_per_account", "sign_in_limit_per_address")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        from limits import parse_many  # only the web server needs it

        try:
            parse_many(value)
        except ValueError:
            raise ValueError("expected a limit such as '10 per minute' or "
                             "'10 per minute; 50 per hour'") from None
        return value

    def completion_seconds(self, action: str) -> int:
        """How long an accepted command of this action may take before it timed out."""
        return getattr(self, f"command_completion_seconds_{action}")

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @field_validator("listener_metrics_address", "scheduler_metrics_address")
    @classmethod
    def _address(cls, value: str) -> str:
        parse_address(value.strip())
        return value.strip()

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        return value.upper() if value.lower() in ("debug", "info", "warning", "error") \
            else value.lower()

    @property
    def secure_cookies(self) -> bool:
        if self.session_cookie_secure is None:
            return self.is_production
        return self.session_cookie_secure


def _read_secret_files(values: dict[str, str]) -> dict[str, str]:
    for name in SECRET_NAMES:
        file_var = f"{name}_FILE"
        path = values.get(file_var)
        if not path:
            continue
        if values.get(name):
            raise ConfigError(f"{name} and {file_var} are both set; set only one of them")
        try:
            values[name] = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"{file_var}: cannot read {path}: {exc.strerror}") from exc
    return values


TLS_FILES = (
    ("MQTT_TLS_CA_CERT", "mqtt_tls_ca_cert"),
    ("MQTT_TLS_CERTFILE", "mqtt_tls_certfile"),
    ("MQTT_TLS_KEYFILE", "mqtt_tls_keyfile"),
)


def _check_tls(settings: Settings) -> None:
    if bool(settings.mqtt_tls_certfile) != bool(settings.mqtt_tls_keyfile):
        raise ConfigError(
            "MQTT_TLS_CERTFILE and MQTT_TLS_KEYFILE go together: a client certificate needs "
            "its key; set both or neither"
        )
    for name, attribute in TLS_FILES:
        path = getattr(settings, attribute)
        if path and not Path(path).is_file():
            raise ConfigError(f"{name}: no such file: {path}")
    if settings.mqtt_tls_enabled:
        _check_tls_files_load(settings)
    if settings.mqtt_tls_insecure and settings.is_production:
        raise ConfigError(
            "MQTT_TLS_INSECURE=true is refused with INFOSCREEN_ENV=production: it skips the "
            "check that the broker's certificate names the host, so anyone on the path could "
            "pose as the broker. Issue a server certificate for MQTT_HOST instead "
            "(infoscreen certs issue-server --dns NAME --ip ADDRESS)"
        )


def _check_tls_files_load(settings: Settings) -> None:
    """Certificates that are not PEM, or a key that does not fit its certificate, are named
    at start-up rather than at the first connect."""
    if settings.mqtt_tls_ca_cert:
        try:
            ssl.create_default_context(cafile=settings.mqtt_tls_ca_cert)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"MQTT_TLS_CA_CERT: not a PEM CA certificate: {settings.mqtt_tls_ca_cert} "
                f"({exc.reason or exc})"
            ) from None
    if settings.mqtt_tls_certfile:
        try:
            ssl.create_default_context().load_cert_chain(
                settings.mqtt_tls_certfile, settings.mqtt_tls_keyfile
            )
        except ssl.SSLError as exc:
            raise ConfigError(
                "MQTT_TLS_CERTFILE/MQTT_TLS_KEYFILE: not a PEM certificate and its key, or the "
                f"key does not fit the certificate ({exc.reason or exc})"
            ) from None


def _check_notify(settings: Settings) -> None:
    from core.notify_channels import ChannelError, parse_notify_urls, parse_quiet_hours

    try:
        ZoneInfo(settings.notify_timezone)
    except (ValueError, KeyError):
        raise ConfigError(f"NOTIFY_TIMEZONE: {settings.notify_timezone!r} is no known time "
                          "zone (e.g. Europe/Berlin)") from None
    try:
        parse_quiet_hours(settings.notify_quiet_hours)
        parse_notify_urls(settings.notify_urls)
    except ChannelError as exc:
        raise ConfigError(str(exc)) from None


def _refuse_weak_secrets(settings: Settings) -> None:
    problems = []
    if settings.mqtt_password in KNOWN_DEFAULT_SECRETS:
        problems.append("MQTT_PASSWORD is missing or a known default")
    if not settings.mqtt_user:
        problems.append("MQTT_USER is missing")
    if settings.secret_key in KNOWN_DEFAULT_SECRETS or len(settings.secret_key) < 32:
        problems.append("SECRET_KEY is missing, a known default or shorter than 32 characters")
    if (settings.notify_secret_key in KNOWN_DEFAULT_SECRETS
            or len(settings.notify_secret_key) < 32):
        problems.append("NOTIFY_SECRET_KEY (it encrypts the notification channels' URLs) is "
                        "missing, a known default or shorter than 32 characters")
    if problems:
        raise ConfigError(
            "refusing to start with INFOSCREEN_ENV=production: " + "; ".join(problems)
        )


def load_settings(
    environ: Mapping[str, str] | None = None, dotenv_path: str | Path | None = None
) -> Settings:
    """Read `.env` (or INFOSCREEN_ENV_FILE), overlay the environment, validate.

    Raises ConfigError with a message that names the offending variable.
    """
    environ = dict(os.environ if environ is None else environ)
    path = Path(dotenv_path or environ.get("INFOSCREEN_ENV_FILE") or ".env")
    if dotenv_path is not None or "INFOSCREEN_ENV_FILE" in environ:
        if not path.is_file():
            raise ConfigError(f"INFOSCREEN_ENV_FILE: no such file: {path}")
    values: dict[str, str] = {}
    if path.is_file():
        values.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    values.update(environ)
    values = _read_secret_files(values)
    fields = {f.alias for f in Settings.model_fields.values() if f.alias}
    try:
        settings = Settings.model_validate({k: v for k, v in values.items() if k in fields})
    except ValidationError as exc:
        first = exc.errors()[0]
        name = first["loc"][0] if first["loc"] else "settings"
        shown = "" if name in SECRET_NAMES else f" (got {first.get('input')!r})"
        raise ConfigError(f"{name}: {first['msg']}{shown}") from None
    if settings.heartbeat_down_seconds <= settings.heartbeat_stale_seconds:
        raise ConfigError("HEARTBEAT_DOWN_SECONDS must be greater than HEARTBEAT_STALE_SECONDS")
    if settings.broker_max_packet_bytes <= settings.listener_max_payload_bytes:
        raise ConfigError(
            f"BROKER_MAX_PACKET_BYTES ({settings.broker_max_packet_bytes}) must be larger than "
            f"LISTENER_MAX_PAYLOAD_BYTES ({settings.listener_max_payload_bytes}): the broker "
            "would disconnect devices for messages the listener accepts"
        )
    # A dashboard carries the picture in base64 (a third larger) inside its JSON.
    largest_dashboard = settings.screenshot_max_bytes * 4 // 3 + 65_536
    if settings.broker_max_packet_bytes <= largest_dashboard:
        raise ConfigError(
            f"BROKER_MAX_PACKET_BYTES ({settings.broker_max_packet_bytes}) must be larger than "
            f"a dashboard with a picture of SCREENSHOT_MAX_BYTES ({settings.screenshot_max_bytes}"
            f"; about {largest_dashboard} bytes in base64 JSON): the broker would disconnect "
            "screens for pictures the listener accepts"
        )
    _check_tls(settings)
    _check_notify(settings)
    if settings.is_production:
        _refuse_weak_secrets(settings)
    return settings
