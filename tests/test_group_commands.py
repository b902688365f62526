"""A group command end to end: simulated screens of both profiles, the real broker, listener,
scheduler and web app; at most GROUP_COMMAND_MAX_PARALLEL commands of the group run at once."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime

import pytest
from sqlalchemy import func, select

from core.models import Client, ClientCommand, CommandTransition
from mqtt_client.publisher import Publisher
from scheduler.loop import Scheduler
from scheduler.service import build_jobs
from simulator.fleet import run_fleet
from simulator.options import DeviceOptions
from tests.brokers import broker_with_devices
from tests.conftest import RunningListener, make_settings
from tests.helpers import close_web_app, tokens, wait_until
from tests.test_commands_api import make_app, post

pytestmark = pytest.mark.broker

SCREENS = 10
PARALLEL = 3


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """Our own: simulated screens leave retained presence that other tests should never see."""
    with broker_with_devices(tmp_path_factory.mktemp("fleet-broker"), 0) as (own, _):
        yield own


def provision_screens(broker, count: int) -> list[tuple[str, str]]:
    return [(d.username, d.password) for d in broker.add_devices(count)]


class Running:
    """A thread that runs `target(stop)` until the test ends."""

    def __init__(self, target, name: str):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=target, args=(self.stop,), name=name, daemon=True)
        self.thread.start()

    def end(self) -> None:
        self.stop.set()
        self.thread.join(timeout=20)


def most_running_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = most = 0
    for _, step in edges:  # at equal times an end (-1) sorts before a start
        running += step
        most = max(most, running)
    return most


@pytest.mark.parametrize("profile", ["reference", "infoscreen-2025"])
def test_a_rolling_reboot_of_ten_screens_runs_three_at_a_time(db, broker, profile):
    settings = make_settings(broker, db.url, GROUP_COMMAND_MAX_PARALLEL=PARALLEL,
                             SCHEDULER_POLL_SECONDS=0.1, COMMAND_REDISPATCH_SECONDS=1)
    screens = provision_screens(broker, SCREENS)
    listener = RunningListener(settings, f"listener-group-{uuid.uuid4().hex[:6]}")
    options = DeviceOptions(crash_rate=0.0, service_failed_rate=0.0, speed=40.0,
                            profile_mix=((profile, 1),))
    device_settings = settings.model_copy(update={"mqtt_port": broker.device_port})
    fleet = Running(lambda stop: run_fleet(device_settings, screens, options, stop), "fleet")
    publisher = Publisher.start(settings, f"scheduler-group-{uuid.uuid4().hex[:6]}")
    scheduler = Scheduler(db.sessions, build_jobs(settings, publisher, db.sessions),
                          poll_seconds=settings.scheduler_poll_seconds)
    loop = threading.Thread(target=scheduler.run, name="scheduler", daemon=True)
    loop.start()
    app = make_app(db, broker, GROUP_COMMAND_MAX_PARALLEL=PARALLEL)
    auth = tokens(db)
    try:
        uuids = [u for u, _ in screens]

        def registered() -> bool:
            with db.sessions() as session:
                return session.scalar(select(func.count()).where(
                    Client.uuid.in_(uuids), Client.hostname.is_not(None))) == SCREENS

        wait_until(registered, timeout=20, message="every screen registered")
        group = post(app, "/api/groups", auth["admin"], {"name": "Building A"}).json["group"]
        for screen in uuids:
            response = app.test_client().put(f"/api/clients/{screen}/group",
                                              headers=auth["operator"],
                                              json={"groupId": group["id"]})
            assert response.status_code == 200
        response = post(app, f"/api/groups/{group['id']}/commands", auth["operator"],
                        {"action": "reboot_host", "reason": "nightly rolling reboot"})
        assert response.status_code == 202, response.json
        assert len(response.json["issued"]) == SCREENS and response.json["refused"] == []

        def states() -> list[str]:
            with db.sessions() as session:
                return list(session.scalars(select(ClientCommand.state)
                                            .where(ClientCommand.group_id == group["id"])))

        wait_until(lambda: states() == ["completed"] * SCREENS, timeout=90,
                   message="every reboot completed")
        with db.sessions() as session:
            commands = session.scalars(select(ClientCommand)
                                       .where(ClientCommand.group_id == group["id"])).all()
            released = dict(session.execute(
                select(CommandTransition.command_id, func.min(CommandTransition.at))
                .where(CommandTransition.source == "group")
                .group_by(CommandTransition.command_id)).all())
        intervals = [(released[c.id], c.finished_at) for c in commands]
        assert most_running_at_once(intervals) == PARALLEL
    finally:
        close_web_app(app)
        scheduler.stop()
        loop.join(timeout=20)
        publisher.stop()
        fleet.end()
        listener.stop()
