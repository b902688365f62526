"""`infoscreen simulate`: run a simulated fleet of devices, or generate benchmark load.

Fleet mode (default) logs in every device with its own broker account, read from a credentials
file (`--provision` creates the missing ones); `--profile` or `--profile-mix` picks the client
generation each device speaks (simulator.profiles). Load mode (`--load RATE`) publishes heartbeats
for many client ids over a few raw connections as a `simulator`-role account and prints one
JSON line with the result.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from datetime import time
from pathlib import Path
from typing import Any

from core.config import Settings
from simulator.credentials import (
    CredentialsError,
    load_credentials,
    provision,
)
from simulator.fleet import run_fleet_processes
from simulator.loadgen import LoadError, TlsOptions, client_ids, run_load
from simulator.options import BLACK_CAPTURES, DeviceOptions
from simulator.profiles import PROFILES, REFERENCE, parse_mix
from simulator.screen import SIZE
from simulator.tv import format_standby, parse_standby

log = logging.getLogger(__name__)

DEFAULT_CREDENTIALS = Path("var/simulator-devices.json")
EXIT_USAGE = 2
EXIT_FAILED = 1


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"is a probability between 0 and 1, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _picture_size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit()):
        raise argparse.ArgumentTypeError(f"is WIDTHxHEIGHT in pixels, e.g. 1280x720, got {text!r}")
    size = (int(width), int(height))
    if not all(16 <= side <= 7680 for side in size):
        raise argparse.ArgumentTypeError(f"each side is 16 to 7680 pixels, got {text!r}")
    return size


def _profile_mix(text: str) -> tuple[tuple[str, int], ...]:
    try:
        return parse_mix(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _standby(text: str) -> tuple[time, time]:
    try:
        return parse_standby(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    fleet = parser.add_argument_group(
        "device fleet (default mode)",
        "Each simulated device logs in with its own device account (username = its uuid), "
        "sends discovery, heartbeats, health, presence and occasional crashes and "
        "service_failed alerts, and answers commands like a deployed screen: accepted at "
        "once, execution_started, then completed or failed. restart_app takes 1-3 s; "
        "reboot_host drops the connection, comes back 10-90 s later and then reports "
        "completed; shutdown_host reports completed and stays offline for the rest of the run. "
        "A command past its expires_at is dropped without an ack. "
        "Each device speaks one profile: reference (the documented contract) or "
        "infoscreen-2025 (the deployed clients: health every 5 s in their own shape, acks "
        "that always carry error_code and error_message, only reboot_host and shutdown_host, "
        "TV power reports on power/state, and the retained group_id read).",
    )
    fleet.add_argument(
        "--clients",
        type=_positive_int,
        default=10,
        metavar="N",
        help="number of devices to simulate (default: %(default)s)",
    )
    profile = fleet.add_mutually_exclusive_group()
    profile.add_argument(
        "--profile",
        choices=tuple(PROFILES),
        default=None,  # not "reference": argparse lets a default value pass --profile-mix
        help=f"the profile of every device (default: {REFERENCE.name})",
    )
    profile.add_argument(
        "--profile-mix",
        type=_profile_mix,
        default=None,
        metavar="NAME=SHARE,...",
        help="run a mix of profiles, by share, e.g. reference=6,infoscreen-2025=4: with "
        "--clients 10, 6 and 4 devices; with other counts the same proportion, within one "
        "device. The profiles are spread evenly over the credentials file's order, and a "
        "device keeps its profile whatever --clients is",
    )
    fleet.add_argument(
        "--credentials",
        type=Path,
        default=DEFAULT_CREDENTIALS,
        metavar="FILE",
        help='JSON list of {"uuid": ..., "password": ...}, one entry per device '
        "(default: %(default)s)",
    )
    fleet.add_argument(
        "--provision",
        action="store_true",
        help="create the missing devices: new entries in the credentials file (mode 0600) "
        "and device accounts in BROKER_DIR, then ask a running broker to reload them",
    )
    fleet.add_argument(
        "--heartbeat-interval",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="seconds between two heartbeats of a device (default: %(default)s)",
    )
    fleet.add_argument(
        "--discovery-interval",
        type=_positive_float,
        default=300.0,
        metavar="SECONDS",
        help="seconds between two discovery announcements, besides one on every connect "
        "(default: %(default)s)",
    )
    fleet.add_argument(
        "--health-interval",
        type=_positive_float,
        default=60.0,
        metavar="SECONDS",
        help="seconds between two health reports of a device; infoscreen-2025 devices report "
        "every 5 s, and this interval still paces their crashes and service failures "
        "(default: %(default)s)",
    )
    fleet.add_argument(
        "--crash-rate",
        type=_probability,
        default=0.01,
        metavar="P",
        help="probability per health interval that a device's player crashes for a few "
        "intervals (default: %(default)s)",
    )
    fleet.add_argument(
        "--service-failed-rate",
        type=_probability,
        default=0.002,
        metavar="P",
        help="probability per health interval that a device reports a retained "
        "service_failed (default: %(default)s)",
    )
    fleet.add_argument(
        "--speed",
        type=_positive_float,
        default=1.0,
        metavar="FACTOR",
        help="divide the durations of commands (execution, restart, reboot downtime) by "
        "FACTOR: with 1000, restart_app completes within a few milliseconds and a reboot is "
        "away for 10-90 ms. The heartbeat and health intervals keep their own settings "
        "(default: %(default)s)",
    )
    fleet.add_argument(
        "--command-failure-rate",
        type=_probability,
        default=0.0,
        metavar="P",
        help="probability that a command ends in failed (error_code simulated_failure) "
        "after execution_started, instead of running (default: %(default)s)",
    )
    fleet.add_argument(
        "--tv-standby",
        type=_standby,
        default=DeviceOptions.tv_standby,
        metavar="HH:MM-HH:MM",
        help="infoscreen-2025: when the TV is in standby (HDMI-CEC), local time; outside it "
        "the TV is on. A device reports its TV's state after it starts and then each change "
        f"(default: {format_standby(DeviceOptions.tv_standby)})",
    )
    fleet.add_argument(
        "--tv-timezone",
        default=None,
        metavar="ZONE",
        help="infoscreen-2025: the time zone of --tv-standby, e.g. Europe/Berlin "
        "(default: the machine's local time)",
    )
    fleet.add_argument(
        "--tv-error-rate",
        type=_probability,
        default=0.0,
        metavar="P",
        help="infoscreen-2025: probability that switching the TV fails, reported with "
        "result error (default: %(default)s)",
    )
    fleet.add_argument(
        "--screenshot-interval",
        type=_non_negative_float,
        default=60.0,
        metavar="SECONDS",
        help="send a screenshot of the screen's content this often, 0 for none: "
        "infoscreen-2025 as its dashboard (schema v2), reference on the legacy screenshot "
        "topic as a raw JPEG (default: %(default)s)",
    )
    fleet.add_argument(
        "--event-seconds",
        type=_positive_float,
        default=DeviceOptions.event_seconds,
        metavar="SECONDS",
        help="each event of the simulated playlist lasts this long; as one stops and the next "
        "starts the screen sends an event_stop and an event_start capture "
        "(default: %(default)s)",
    )
    fleet.add_argument(
        "--black-screen-rate",
        type=_probability,
        default=0.0,
        metavar="P",
        help="probability that a periodic screenshot starts a black episode (a dead HDMI "
        f"output) of {BLACK_CAPTURES[0]} to {BLACK_CAPTURES[1]} captures "
        "(default: %(default)s)",
    )
    fleet.add_argument(
        "--screenshot-size",
        type=_picture_size,
        default=SIZE,
        metavar="WxH",
        help=f"size of the screenshots in pixels (default: {SIZE[0]}x{SIZE[1]})",
    )
    fleet.add_argument(
        "--processes",
        type=_positive_int,
        default=1,
        metavar="N",
        help="split the devices over N worker processes, to use more than one CPU core "
        "(one process runs all its devices on one thread: a thousand fit). SIGTERM or Ctrl-C "
        "stops them all, and each says offline for its devices (default: %(default)s)",
    )
    fleet.add_argument(
        "--start-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long before the devices connect, e.g. for a listener started at the "
        "same time to subscribe first: what devices send once at start (discovery, the TV's "
        "state) is otherwise lost to it (default: %(default)s)",
    )
    fleet.add_argument(
        "--seed",
        type=int,
        default=None,
        metavar="N",
        help="random seed, for a reproducible run (and the load generator's client ids)",
    )
    load = parser.add_argument_group(
        "load generator (--load)",
        "Publishes heartbeats for many client ids over a few raw MQTT 5 connections as a "
        "simulator-role account, stops after --duration and prints one JSON line: "
        "sent, acked, elapsed, achieved_rate.",
    )
    load.add_argument(
        "--load",
        type=_positive_float,
        default=None,
        metavar="RATE",
        help="switch to load mode: total messages per second",
    )
    load.add_argument(
        "--duration",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="how long to publish (default: %(default)s)",
    )
    load.add_argument(
        "--qos",
        type=int,
        choices=(0, 1),
        default=1,
        help="QoS of the messages; with 1 every PUBACK is counted (default: %(default)s)",
    )
    load.add_argument(
        "--connections",
        type=_positive_int,
        default=2,
        metavar="N",
        help="connections, one process each (default: %(default)s)",
    )
    load.add_argument(
        "--load-clients",
        type=_positive_int,
        default=10_000,
        metavar="N",
        help="distinct client ids to publish for (default: %(default)s)",
    )
    load.add_argument(
        "--with-health",
        action="store_true",
        help="alternate heartbeats with health reports",
    )
    load.add_argument(
        "--load-user",
        default=None,
        metavar="NAME",
        help="simulator-role broker account (default: $SIMULATOR_USER)",
    )
    load.add_argument(
        "--load-password",
        default=None,
        metavar="PASSWORD",
        help="its password (default: $SIMULATOR_PASSWORD; prefer the variable, command lines "
        "are visible to other users)",
    )


def main(settings: Settings, args: argparse.Namespace) -> int:
    _ensure_logging(settings.log_level)
    with _stop_on_signals() as stop:
        if args.load is not None:
            return _run_load(settings, args, stop)
        return _run_fleet(settings, args, stop)


# Fleet mode -------------------------------------------------------------------------------


def _run_fleet(settings: Settings, args: argparse.Namespace, stop: threading.Event) -> int:
    try:
        if args.provision:
            devices = provision(settings, args.credentials, args.clients)
        else:
            devices = load_credentials(args.credentials, args.clients)
        options = DeviceOptions(
            heartbeat_interval=args.heartbeat_interval,
            health_interval=args.health_interval,
            discovery_interval=args.discovery_interval,
            crash_rate=args.crash_rate,
            service_failed_rate=args.service_failed_rate,
            seed=args.seed,
            speed=args.speed,
            command_failure_rate=args.command_failure_rate,
            profile_mix=args.profile_mix or ((args.profile or REFERENCE.name, 1),),
            tv_standby=args.tv_standby,
            tv_timezone=args.tv_timezone,
            tv_error_rate=args.tv_error_rate,
            screenshot_interval=args.screenshot_interval,
            event_seconds=args.event_seconds,
            black_screen_rate=args.black_screen_rate,
            screenshot_size=args.screenshot_size,
        )
    except (CredentialsError, ValueError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    if stop.wait(max(0.0, args.start_delay)):
        return 0
    completed = run_fleet_processes(settings, devices, options, stop, processes=args.processes)
    return 0 if completed else EXIT_FAILED


# Load mode --------------------------------------------------------------------------------


def _run_load(settings: Settings, args: argparse.Namespace, stop: threading.Event) -> int:
    username = args.load_user or os.environ.get("SIMULATOR_USER", "")
    password = args.load_password or os.environ.get("SIMULATOR_PASSWORD", "")
    if not username or not password:
        return _fail(
            "--load needs a simulator-role broker account: set SIMULATOR_USER and "
            "SIMULATOR_PASSWORD (or --load-user/--load-password)",
            EXIT_USAGE,
        )
    kinds = ("heartbeat", "health") if args.with_health else ("heartbeat",)
    ids = client_ids(args.load_clients, args.seed if args.seed is not None else 0)
    try:
        result = run_load(
            settings.mqtt_host,
            settings.mqtt_port,
            username,
            password,
            prefix=settings.mqtt_topic_prefix,
            client_ids=ids,
            rate=args.load,
            duration=args.duration,
            qos=args.qos,
            connections=min(args.connections, len(ids)),
            kinds=kinds,
            stop=stop,
            tls=TlsOptions.from_settings(settings),
        )
    except LoadError as exc:
        return _fail(f"load generation failed: {exc}", EXIT_FAILED)
    report: dict[str, Any] = {"target_rate": args.load, **result.as_dict()}
    print(json.dumps(report), flush=True)  # the command's output, read by the benchmarks
    complete = result.qos == 0 or (result.acked == result.sent and not result.rejected)
    return 0 if complete else EXIT_FAILED


# Process plumbing ------------------------------------------------------------------------


def _fail(message: str, code: int) -> int:
    print(f"infoscreen simulate: {message}", file=sys.stderr)
    return code


def _ensure_logging(level: str) -> None:
    # The `infoscreen` entry point configures logging; this keeps direct callers readable.
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT/SIGTERM, so both modes wind down and disconnect cleanly."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signal handlers can only be installed from the main thread
        return

    def handle(signum: int, frame: Any) -> None:
        log.info("simulator: %s received, stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
