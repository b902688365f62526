"""The TV of a deployed screen, switched over HDMI-CEC on a local-time schedule.

Without a power intent from the server, the Infoscreen 2025 clients put the TV in standby at
night and switch it on in the morning (`local_fallback`), and report each change on
`power/state`. `Tv` keeps one screen's TV state; it reads the time from the device's clock, so
tests move the time and see the switch.
"""

from __future__ import annotations

import random
from datetime import datetime, time, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from core.clock import iso_z

SCHEMA_VERSION = "1.0"
ON, OFF = "on", "off"
LOCAL_FALLBACK = "local_fallback"  # the client's own schedule (the other source: mqtt_intent)
OK, ERROR = "ok", "error"


def parse_standby(text: str) -> tuple[time, time]:
    """`22:00-06:00`: standby from the first time to the second, through midnight if needed."""
    start, sep, end = text.partition("-")
    try:
        if not sep:
            raise ValueError
        window = (time.fromisoformat(start.strip()), time.fromisoformat(end.strip()))
    except ValueError:
        raise ValueError(f"a standby window is HH:MM-HH:MM, got {text!r}") from None
    if window[0] == window[1]:
        raise ValueError(f"the standby window {text!r} starts and ends at the same time")
    return window


def format_standby(window: tuple[time, time]) -> str:
    return "-".join(t.strftime("%H:%M") for t in window)


def in_standby(local: time, window: tuple[time, time]) -> bool:
    start, end = window
    if start < end:
        return start <= local < end
    return local >= start or local < end  # the window spans midnight


def scheduled_state(now: datetime, window: tuple[time, time], zone: tzinfo | None) -> str:
    """What the schedule wants at `now`; `zone` None is the machine's local time."""
    local = now.astimezone(zone).time()
    return OFF if in_standby(local, window) else ON


def power_state_payload(
    client_uuid: str,
    reported_at: datetime,
    *,
    applied_state: str,
    result: str,
    detail: str,
    source: str = LOCAL_FALLBACK,
    intent_id: str | None = None,
) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "intent_id": intent_id,
        "client_id": client_uuid,
        "reported_at": iso_z(reported_at),
        "power": {
            "applied_state": applied_state,
            "source": source,
            "result": result,
            "detail": detail,
        },
    }


class Tv:
    """One screen's TV: in standby inside the window, on outside it.

    The state is unknown after a boot, so the first `follow` reports it; later ones report only
    a change. A switch that fails (`error_rate`) is reported with result `error` and not
    retried: the screen moves on to the next change, as the deployed client does with its
    schedule.
    """

    check_seconds = 30.0  # how often the device looks at the schedule

    def __init__(
        self,
        client_uuid: str,
        *,
        standby: tuple[time, time],
        timezone: str | None,
        error_rate: float,
        rng: random.Random,
    ):
        self.client_uuid = client_uuid
        self.standby = standby
        self.zone = None if timezone is None else ZoneInfo(timezone)
        self.error_rate = error_rate
        self.rng = rng
        self.state: str | None = None  # unknown until the first follow after a boot

    def boot(self) -> None:
        self.state = None

    def follow(self, now: datetime) -> dict[str, Any] | None:
        """Switch to what the schedule wants; the power/state report when that was a change."""
        wanted = scheduled_state(now, self.standby, self.zone)
        if wanted == self.state:
            return None
        self.state = wanted
        failed = self.rng.random() < self.error_rate
        action = "standby" if wanted == OFF else "power on"
        if failed:
            detail = f"HDMI-CEC {action}: the TV did not acknowledge (simulated)"
        else:
            detail = f"HDMI-CEC {action}: local schedule, standby {format_standby(self.standby)}"
        return power_state_payload(
            self.client_uuid,
            now,
            applied_state=wanted,
            result=ERROR if failed else OK,
            detail=detail,
        )
