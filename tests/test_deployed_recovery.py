"""Auto-recovery of a deployed Infoscreen 2025 screen, end to end: it cannot restart_app, so
once the backend knows, a crash gets reboot_host and never restart_app."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import select

from core.commands import AUTO_RECOVERY
from core.models import Client, ClientCommand
from mqtt_client.publisher import Publisher
from scheduler.loop import Scheduler
from scheduler.service import build_jobs
from simulator.fleet import Fleet, device_client_factory
from simulator.options import DeviceOptions
from tests.brokers import broker_with_devices
from tests.conftest import RunningListener, make_settings
from tests.helpers import close_web_app, tokens, wait_until
from tests.test_commands_api import make_app, post
from tests.test_group_commands import provision_screens

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """Our own: the simulated screen leaves retained presence other tests should never see."""
    with broker_with_devices(tmp_path_factory.mktemp("recovery-broker"), 0) as (own, _):
        yield own


def test_a_crashed_deployed_screen_gets_a_reboot_never_a_restart(db, broker):
    settings = make_settings(broker, db.url, CRASH_RECOVERY_ENABLED=True,
                             SCHEDULER_POLL_SECONDS=0.1)
    [(screen, password)] = provision_screens(broker, 1)
    listener = RunningListener(settings, f"listener-recovery-{uuid.uuid4().hex[:6]}")
    device_settings = settings.model_copy(update={"mqtt_port": broker.device_port})
    fleet = Fleet.create("infoscreen", [(screen, password)], DeviceOptions(
        crash_rate=0.0, service_failed_rate=0.0, speed=40.0,
        profile_mix=(("infoscreen-2025", 1),)), client_factory=device_client_factory(
            device_settings))
    stop = threading.Event()
    fleet.start(device_settings)
    running = threading.Thread(target=fleet.run, args=(stop,), name="fleet", daemon=True)
    running.start()
    publisher = Publisher.start(settings, f"scheduler-recovery-{uuid.uuid4().hex[:6]}")
    scheduler = Scheduler(db.sessions, build_jobs(settings, publisher, db.sessions),
                          poll_seconds=settings.scheduler_poll_seconds)
    loop = threading.Thread(target=scheduler.run, name="scheduler", daemon=True)
    loop.start()
    app = make_app(db, broker)
    auth = tokens(db)

    def client() -> Client | None:
        with db.sessions() as session:
            return session.get(Client, screen)

    def commands() -> list[tuple[str, str, str]]:
        with db.sessions() as session:
            return [tuple(row) for row in session.execute(
                select(ClientCommand.requested_by, ClientCommand.action, ClientCommand.state)
                .order_by(ClientCommand.issued_at))]

    try:
        wait_until(lambda: (client() or Client()).hostname, timeout=20, message="registered")
        # Staff try restart_app once: the screen refuses it, and the backend learns.
        tried = post(app, f"/api/clients/{screen}/commands", auth["operator"],
                     {"action": "restart_app", "reason": "frozen"})
        assert tried.status_code == 202
        wait_until(lambda: client().unsupported_actions == ["restart_app"], timeout=10,
                   message="capability learned")
        again = post(app, f"/api/clients/{screen}/commands", auth["operator"],
                     {"action": "restart_app", "reason": "frozen"})
        assert again.status_code == 422
        device = fleet.devices[0]
        with device._lock:  # the player crashes and stays down
            device.process_status, device._crash_left = "crashed", 10**6
        wait_until(lambda: (AUTO_RECOVERY, "reboot_host", "completed") in commands(),
                   timeout=30, message="auto-recovery rebooted the screen")
        assert [c for c in commands() if c[0] == AUTO_RECOVERY] == [
            (AUTO_RECOVERY, "reboot_host", "completed")]
        # A fresh boot starts the player; the next health report says so.
        wait_until(lambda: client().process_status == "running", timeout=15,
                   message="running after the reboot")
    finally:
        close_web_app(app)
        scheduler.stop()
        loop.join(timeout=20)
        publisher.stop()
        stop.set()
        running.join(timeout=20)
        listener.stop()
