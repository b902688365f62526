"""The client generations a simulated screen can speak, and how a fleet mixes them.

- `reference` (`Profile`, the base every generation overrides): the contract as this
  backend documents it.
- `infoscreen-2025`: the deployed Raspberry Pi clients. Health every 5 s in their own shape
  (`expected_state`, `actual_state`, `health_metrics`, `broker_connection`; no top-level
  `process_status` or `timestamp`); acks that always carry `error_code` and `error_message`;
  commands checked against the frozen v1 schema (reboot_host, shutdown_host only, so
  restart_app fails with unsupported_action); TV power reports on `power/state`
  (simulator.tv); screenshots as its dashboard (schema v2, the capture's type and the
  runtime blocks); and the server's retained `group_id` read and kept.

A fleet's `DeviceOptions.profile_mix` gives each profile a share; `profiles_for` deals them
out by fleet position, evenly spread, so a device keeps its profile whatever the fleet size.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.clock import iso_z
from core.contract import FROZEN_V1_ACTIONS
from simulator import screen
from simulator.options import DeviceOptions
from simulator.payloads import (
    GROUP_ID,
    SUPPORTED_ACTIONS,
    ack_payload,
    encode,
    health_payload,
    hostname_for,
    ip_for,
)
from simulator.screen import DASHBOARD, PLAYER_PROCESS, Event, Screenshot, dashboard_payload
from simulator.tv import Tv


@dataclass(frozen=True)
class DeviceState:
    """What a profile's health report reads: one snapshot, taken under the device's lock."""

    index: int
    process_status: str
    process_pid: int | None  # None while the player is down
    restart_count: int  # player restarts since the boot
    reconnect_count: int
    last_disconnect_at: datetime | None
    event: Event  # what the schedule shows now (simulator.screen.PLAYLIST)
    uptime_s: float


class Profile:
    """How a device speaks the contract; this one is the reference client.

    The device asks its profile for its health and ack payloads, the actions it runs, the
    topics it reads besides `commands` and whether it has a TV to report on; the device keeps
    all state. Other profiles (simulator.profiles) override what differs.
    """

    name = "reference"
    actions: tuple[str, ...] = SUPPORTED_ACTIONS
    subscriptions: tuple[str, ...] = ()  # suffixes read at QoS 1 besides `commands`
    # None: health goes out with each health tick (DeviceOptions.health_interval). Else it has
    # a cadence of its own, while crashes and service failures keep the health tick's.
    health_interval: float | None = None

    def health(self, now: datetime, state: DeviceState, rng: random.Random) -> dict[str, Any]:
        crashed = state.process_status == "crashed"
        return health_payload(
            now,
            process_status=state.process_status,
            cpu_percent=rng.uniform(0.2, 2.0) if crashed else rng.uniform(8, 45),
            memory_percent=rng.uniform(25, 60),
            reconnect_count=state.reconnect_count,
            last_disconnect_at=state.last_disconnect_at,
        )

    def ack(
        self,
        command_id: str,
        status: str,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> dict[str, Any]:
        return ack_payload(command_id, status, error_code=error_code, error_message=error_message)

    def tv(self, client_uuid: str, options: DeviceOptions, rng: random.Random) -> Tv | None:
        """The screen's TV when this client reports its power state; None: it does not."""
        return None

    def screenshot(
        self, client_uuid: str, capture: Screenshot, state: DeviceState
    ) -> tuple[str, bytes]:
        """(topic suffix, payload) of a capture: here the legacy topic's raw JPEG, which says
        nothing of why it was taken."""
        return screen.LEGACY, screen.legacy_screenshot_payload(capture.jpeg)

    def __repr__(self) -> str:
        return f"<profile {self.name}>"


REFERENCE = Profile()


HEALTH_SECONDS = 5.0
UNKNOWN_ERROR = "unknown_error"  # a failed ack needs a code; ours always name one anyway


def deployed_health_payload(
    *,
    event_id: int | None,
    event_type: str | None,
    process_status: str,
    process_pid: int | None,
    restart_count: int,
    cpu_percent: float,
    memory_percent: float,
    temperature_c: float,
    disk_free_mb: int,
    reconnect_count: int,
    last_disconnect_at: datetime | None,
) -> dict[str, Any]:
    return {
        "expected_state": {
            "event_id": event_id,
            "event_type": event_type,
            "process": PLAYER_PROCESS,
        },
        "actual_state": {
            "process_status": process_status,
            "current_process": PLAYER_PROCESS,
            "process_pid": process_pid,
            "restart_count": restart_count,
        },
        "health_metrics": {
            "cpu_percent": round(cpu_percent, 1),
            "memory_percent": round(memory_percent, 1),
            "temperature_c": round(temperature_c, 1),
            "disk_free_mb": disk_free_mb,
        },
        "broker_connection": {
            "reconnect_count": reconnect_count,
            "last_disconnect_at": iso_z(last_disconnect_at) if last_disconnect_at else None,
        },
    }


def deployed_ack_payload(
    command_id: str,
    status: str,
    *,
    error_code: str | None = None,
    error_message: str | None = None,
) -> dict[str, Any]:
    """Both error keys always present: null, or non-empty text when the ack is `failed`."""
    if status != "failed":
        error_code = error_message = None
    else:
        error_code = error_code or UNKNOWN_ERROR
        error_message = error_message or error_code
    return {
        "command_id": command_id,
        "status": status,
        "error_code": error_code,
        "error_message": error_message,
    }


class Infoscreen2025(Profile):
    """The deployed Infoscreen 2025 client."""

    name = "infoscreen-2025"
    actions = FROZEN_V1_ACTIONS
    subscriptions = (GROUP_ID,)
    health_interval = HEALTH_SECONDS

    def health(self, now: datetime, state: DeviceState, rng: random.Random) -> dict[str, Any]:
        crashed = state.process_status == "crashed"
        return deployed_health_payload(
            event_id=state.event.event_id,
            event_type=state.event.event_type,
            process_status=state.process_status,
            process_pid=state.process_pid,
            restart_count=state.restart_count,
            cpu_percent=rng.uniform(0.5, 3.0) if crashed else rng.uniform(12, 55),
            memory_percent=rng.uniform(30, 65),
            temperature_c=rng.uniform(42, 48) if crashed else rng.uniform(48, 63),
            disk_free_mb=rng.randint(11_200, 11_400),
            reconnect_count=state.reconnect_count,
            last_disconnect_at=state.last_disconnect_at,
        )

    def ack(
        self,
        command_id: str,
        status: str,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> dict[str, Any]:
        return deployed_ack_payload(
            command_id, status, error_code=error_code, error_message=error_message
        )

    def screenshot(
        self, client_uuid: str, capture: Screenshot, state: DeviceState
    ) -> tuple[str, bytes]:
        payload = dashboard_payload(
            client_uuid,
            capture.jpeg,
            captured_at=capture.captured_at,
            hostname=hostname_for(state.index),
            ip=ip_for(state.index),
            uptime_s=state.uptime_s,
            event_id=state.event.event_id,
            event_type=state.event.event_type,
            process_status=state.process_status,
            process_pid=state.process_pid,
            restart_count=state.restart_count,
            capture_type=capture.kind,
        )
        return DASHBOARD, encode(payload)

    def tv(self, client_uuid: str, options: DeviceOptions, rng: random.Random) -> Tv:
        return Tv(
            client_uuid,
            standby=options.tv_standby,
            timezone=options.tv_timezone,
            error_rate=options.tv_error_rate,
            rng=rng,
        )


INFOSCREEN_2025 = Infoscreen2025()
PROFILES: dict[str, Profile] = {p.name: p for p in (REFERENCE, INFOSCREEN_2025)}


def parse_mix(text: str) -> tuple[tuple[str, int], ...]:
    """`reference=6,infoscreen-2025=4`: each profile once, each with a whole share of 1 or
    more."""
    mix: dict[str, int] = {}
    for part in text.split(","):
        name, sep, share = (item.strip() for item in part.partition("="))
        if not sep or not share.isdigit():
            raise ValueError(f"{part.strip()!r} is not NAME=SHARE (a whole number)")
        if name not in PROFILES:
            raise ValueError(f"no profile {name!r}; there are {', '.join(PROFILES)}")
        if name in mix:
            raise ValueError(f"profile {name!r} is named twice")
        if int(share) < 1:
            raise ValueError(f"the share of {name!r} must be at least 1")
        mix[name] = int(share)
    return tuple(mix.items())


def profiles_for(mix: tuple[tuple[str, int], ...], first: int, count: int) -> list[Profile]:
    """The profiles of the devices at fleet positions first .. first + count - 1.

    Each position goes to the profile furthest behind its share of the positions so far, so
    every prefix of the fleet has the mix within one device (10 devices with shares 6 and 4:
    exactly 6 and 4), and a position's profile does not depend on the fleet's size.
    """
    unknown = [name for name, _ in mix if name not in PROFILES]
    if unknown:
        raise ValueError(f"no profile {unknown[0]!r}; there are {', '.join(PROFILES)}")
    total = sum(share for _, share in mix)
    given = [0] * len(mix)
    names: list[str] = []
    for seen in range(1, first + count + 1):
        # shortfall of profile k over the first `seen` positions, in units of 1 / total
        behind = [share * seen - given[k] * total for k, (_, share) in enumerate(mix)]
        k = behind.index(max(behind))
        given[k] += 1
        names.append(mix[k][0])
    return [PROFILES[name] for name in names[first:]]


def describe(profiles: Iterable[Profile]) -> str:
    """`6 reference, 4 infoscreen-2025`, in the order of PROFILES."""
    counts = Counter(profile.name for profile in profiles)
    return ", ".join(f"{counts[name]} {name}" for name in PROFILES if counts[name])
