"""Wiring of the scheduler process: its jobs, in the order a cycle runs them."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from core.commands import CommandPolicy
from core.config import Settings
from core.db import make_engine, make_session_factory
from core.metrics import serve_metrics
from core.notify_plan import Policy
from mosquitto.certs import CertStore
from mqtt_client import default_client_id
from mqtt_client.dispatch import CommandDispatcher
from mqtt_client.publisher import Publisher
from scheduler.broker_auth import BrokerAuthFailures
from scheduler.certificates import CheckCertificates
from scheduler.commands import (
    DispatchQueuedCommands,
    PublishGroupAssignments,
    ReleaseGroupCommands,
    sweep_expired_commands,
)
from scheduler.health import FollowLiveness, detect_crashes
from scheduler.leader import Leadership
from scheduler.loop import Job, Scheduler
from scheduler.metrics import SchedulerMetrics
from scheduler.monitoring import DeliverEvents, PublishClientStates
from scheduler.notifications import PlanNotifications, SendNotifications, SyncDeclaredChannels
from scheduler.pruning import PruneHistory
from scheduler.recovery import AutoRecovery, RecoveryRules


def build_jobs(settings: Settings, publisher: Publisher,
               session_factory: sessionmaker[Session]) -> list[tuple[str, Job]]:
    prefix = settings.mqtt_topic_prefix
    policy = CommandPolicy.from_settings(settings)
    jobs: list[tuple[str, Job]] = [
        # First and unconditionally: nothing else may act on a command that is past due.
        ("sweep_expired_commands", sweep_expired_commands),
        ("follow_liveness", FollowLiveness(settings.heartbeat_stale_seconds,
                                           settings.heartbeat_down_seconds)),
        ("detect_crashes", detect_crashes),
    ]
    if settings.crash_recovery_enabled:
        jobs.append(("auto_recovery",
                     AutoRecovery(RecoveryRules.from_settings(settings), policy)))
    dispatcher = CommandDispatcher(publisher, session_factory, prefix)
    jobs += [
        ("release_group_commands", ReleaseGroupCommands(policy)),
        ("dispatch_queued_commands",
         DispatchQueuedCommands(dispatcher, settings.command_redispatch_seconds)),
        ("publish_group_assignments",
         PublishGroupAssignments(dispatcher, settings.command_redispatch_seconds)),
        ("deliver_events", DeliverEvents(publisher, prefix)),
        ("sync_notification_channels", SyncDeclaredChannels(settings)),
        ("plan_notifications", PlanNotifications(Policy.from_settings(settings))),
        ("send_notifications", SendNotifications.from_settings(settings)),
        ("publish_client_states", PublishClientStates(publisher, prefix)),
        ("prune_history", PruneHistory(activity_hours=settings.activity_retention_hours,
                                       event_days=settings.event_retention_days,
                                       command_days=settings.command_retention_days)),
        # Once a day; nothing without a CA (a plain development setup).
        ("check_certificates", CheckCertificates(
            Path(settings.cert_check_dir) if settings.cert_check_dir
            else CertStore.in_broker_dir(settings.broker_dir).directory)),
    ]
    if settings.broker_log_file:
        jobs.append(("broker_auth_failures", BrokerAuthFailures(
            Path(settings.broker_log_file),
            interval_seconds=settings.broker_auth_report_seconds)))
    return jobs


def run(settings: Settings) -> None:
    engine = make_engine(settings.database_url, writer=True)
    session_factory = make_session_factory(engine)
    # The pid too: two schedulers on one host must not knock each other off the broker.
    publisher = Publisher.start(settings, f"{default_client_id('scheduler')}-{os.getpid()}")
    leadership = Leadership(engine)
    metrics = SchedulerMetrics()
    serve_metrics(metrics.registry, settings.scheduler_metrics_address, "scheduler")
    scheduler = Scheduler(
        session_factory,
        build_jobs(settings, publisher, session_factory),
        poll_seconds=settings.scheduler_poll_seconds,
        leader=leadership.holds,
        metrics=metrics,
    )
    signal.signal(signal.SIGTERM, scheduler.stop)
    signal.signal(signal.SIGINT, scheduler.stop)
    try:
        scheduler.run()
    finally:
        leadership.release()
        publisher.stop()
