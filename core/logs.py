"""Logging set-up, the same in every process (the command line, its worker processes and
gunicorn's): plain text, or one JSON object per line (LOG_FORMAT=json) with the fields
time, level, logger, process, pid, message, and `client_uuid` / `command_id` where a call
passes them (`log.info(..., extra=ids(client_uuid=..., command_id=...))`)."""

from __future__ import annotations

import logging
import logging.config
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(processName)s %(process)d %(message)s"
JSON_NAMES = {"asctime": "time", "levelname": "level", "name": "logger",
              "processName": "process", "process": "pid"}
QUIET = {"sqlalchemy": "WARNING", "alembic.runtime.plugins": "WARNING"}


def ids(**values: Any) -> dict[str, Any]:
    """`extra=` for a log call: the ids that are set, as fields of a JSON line."""
    return {key: str(value) for key, value in values.items() if value is not None}


def logging_config(level: str, fmt: str = "text") -> dict[str, Any]:
    """A dictConfig for the root logger (and gunicorn's, which propagate to it)."""
    if fmt == "json":
        formatter = {"()": "pythonjsonlogger.json.JsonFormatter", "fmt": JSON_FIELDS,
                     "rename_fields": JSON_NAMES, "datefmt": "%Y-%m-%dT%H:%M:%S%z"}
    else:
        formatter = {"format": TEXT_FORMAT, "datefmt": "%Y-%m-%dT%H:%M:%S"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": formatter},
        "handlers": {"main": {"class": "logging.StreamHandler", "formatter": "main"}},
        "root": {"level": level.upper(), "handlers": ["main"]},
        "loggers": {
            **{name: {"level": quiet} for name, quiet in QUIET.items()},
            # gunicorn's own loggers, through the root's handler
            "gunicorn.error": {"handlers": [], "propagate": True},
            "gunicorn.access": {"handlers": [], "propagate": True, "level": "INFO"},
        },
    }


def configure_logging(level: str, fmt: str = "text") -> None:
    logging.config.dictConfig(logging_config(level, fmt))
