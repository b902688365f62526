"""How a simulated fleet behaves (DeviceOptions) and when the steps of a command happen."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import time
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from simulator import screen

if TYPE_CHECKING:
    pass
from simulator.payloads import SOFTWARE_VERSION

# How long the steps of a command take, in seconds at speed 1 (DeviceOptions.speed divides them).
START_SECONDS = (0.05, 0.25)  # accepted -> execution_started
RESTART_APP_SECONDS = (1.0, 3.0)  # execution_started -> completed: the player runs again
POWER_DOWN_SECONDS = (0.5, 1.5)  # execution_started -> the host drops its connection
REBOOT_OFFLINE_SECONDS = (10.0, 90.0)  # away; `completed` follows the reconnect
FAILURE_SECONDS = (0.5, 2.0)  # execution_started -> failed
HANDLED_COMMANDS_KEPT = 1000  # command ids remembered to spot a redelivery
# A host going down first lets its agent hand what it sent to the broker (else paho would send
# it again after the reboot, which a rebooted host cannot): at most this many short waits.
BLACK_CAPTURES = (2, 4)  # a black episode lasts this many periodic captures
DRAIN_POLL_SECONDS = 0.01
DRAIN_POLLS = 100


@dataclass(frozen=True)
class DeviceOptions:
    """Behaviour of every device of a simulated fleet."""

    heartbeat_interval: float = 30.0
    health_interval: float = 60.0
    # Discovery is sent on every connect and again at this interval, so that a backend that
    # missed it (it was not subscribed yet) learns the hostname without a reconnect.
    discovery_interval: float = 300.0
    crash_rate: float = 0.01  # probability per health interval
    service_failed_rate: float = 0.002  # probability per health interval
    crash_intervals: tuple[int, int] = (2, 4)  # a crash lasts this many health intervals
    software_version: str = SOFTWARE_VERSION
    group_id: str | None = None
    seed: int | None = None
    # Command durations (execution, restart, reboot downtime) are divided by this; the
    # heartbeat, health and discovery intervals are not.
    speed: float = 1.0
    command_failure_rate: float = 0.0  # probability that a command ends in `failed`
    # The profiles of the fleet, (name, share) in fleet order: simulator.profiles.profiles_for.
    profile_mix: tuple[tuple[str, int], ...] = (("reference", 1),)
    # Profiles with a TV (simulator.tv): standby from the first time to the second, local time
    # in tv_timezone (None: the machine's), and the probability that a switch fails.
    tv_standby: tuple[time, time] = (time(22, 0), time(6, 0))
    tv_timezone: str | None = None
    tv_error_rate: float = 0.0
    # Screenshots (simulator.screen): one every screenshot_interval seconds (0: none), and one
    # as each event of the playlist stops and the next starts, every event_seconds; a periodic
    # capture starts a black episode (the HDMI output died) with black_screen_rate.
    screenshot_interval: float = 0.0
    event_seconds: float = 300.0
    black_screen_rate: float = 0.0
    screenshot_size: tuple[int, int] = screen.SIZE

    def __post_init__(self) -> None:
        if min(self.heartbeat_interval, self.health_interval, self.discovery_interval) <= 0:
            raise ValueError("heartbeat, health and discovery intervals must be positive")
        if self.screenshot_interval < 0 or self.event_seconds <= 0:
            raise ValueError(
                "screenshot_interval is 0 (off) or positive, event_seconds positive"
            )
        if not all(16 <= side <= 7680 for side in self.screenshot_size):
            raise ValueError(
                f"screenshot_size is (width, height), each 16 to 7680, got {self.screenshot_size!r}"
            )
        for name in ("crash_rate", "service_failed_rate", "command_failure_rate", "tv_error_rate",
                     "black_screen_rate"):  # fmt: skip
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability between 0 and 1, got {value!r}")
        if not (math.isfinite(self.speed) and self.speed > 0):
            raise ValueError(
                "speed must be a finite number greater than 0 (command durations are divided "
                f"by it), got {self.speed!r}"
            )
        low, high = self.crash_intervals
        if not 1 <= low <= high:
            raise ValueError("crash_intervals is (fewest, most) health intervals, at least 1")
        if not self.profile_mix or any(share < 1 for _, share in self.profile_mix):
            raise ValueError(
                "profile_mix names at least one profile, each with a share of 1 or more"
            )
        if self.tv_standby[0] == self.tv_standby[1]:
            raise ValueError("tv_standby starts and ends at the same time")
        if self.tv_timezone is not None:
            try:
                ZoneInfo(self.tv_timezone)
            except (ValueError, KeyError):  # KeyError: ZoneInfoNotFoundError
                raise ValueError(
                    f"tv_timezone {self.tv_timezone!r} is no known time zone"
                ) from None


@dataclass(frozen=True)
class CommandPlan:
    """When the steps of one command happen, in seconds already divided by the speed."""

    start_after: float  # accepted -> execution_started
    finish_after: float  # execution_started -> the outcome (reboot_host: -> the host goes down)
    offline_for: float  # reboot_host: the host is away this long, then reconnects and completes
    fails: bool  # ends in `failed` (simulated_failure) instead of running the action


def plan_command(action: str, options: DeviceOptions, rng: random.Random) -> CommandPlan:
    """Draw the durations and the outcome of one command."""

    def seconds(bounds: tuple[float, float]) -> float:
        return rng.uniform(*bounds) / options.speed

    fails = rng.random() < options.command_failure_rate
    start_after = seconds(START_SECONDS)
    if fails:
        return CommandPlan(start_after, seconds(FAILURE_SECONDS), 0.0, fails=True)
    if action == "restart_app":
        return CommandPlan(start_after, seconds(RESTART_APP_SECONDS), 0.0, fails=False)
    offline_for = seconds(REBOOT_OFFLINE_SECONDS) if action == "reboot_host" else 0.0
    return CommandPlan(start_after, seconds(POWER_DOWN_SECONDS), offline_for, fails=False)
