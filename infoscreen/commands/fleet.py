"""What the fleet looks like: clients and refused messages."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from core.clock import utc_now
from core.config import Settings
from infoscreen.commands.common import open_session


def cmd_clients(settings: Settings, args: argparse.Namespace) -> int:
    from core.fleet import age_text, client_summary, list_clients

    now = utc_now()
    with open_session(settings) as session:
        rows = [
            client_summary(c, now, settings.heartbeat_stale_seconds,
                           settings.heartbeat_down_seconds, settings.default_supported_actions)
            for c in list_clients(session)
        ]
    if args.status:
        rows = [r for r in rows if r["status"] == args.status]
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
        return 0
    header = ("UUID", "HOSTNAME", "STATUS", "LAST SEEN", "PROCESS", "RECONNECTS", "ALERT")
    table = [header] + [
        (
            r["uuid"],
            r["hostname"] or "-",
            r["status"],
            age_text(r["lastSeenSecondsAgo"]),
            r["processStatus"] or "-",
            "-" if r["mqttReconnectCount"] is None else str(r["mqttReconnectCount"]),
            r["serviceFailed"]["unit"] if r["serviceFailedOpen"] else "-",
        )
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(f"{len(rows)} clients")
    return 0


def cmd_rejections(settings: Settings, args: argparse.Namespace) -> int:
    from core.fleet import rejection_counts

    with open_session(settings) as session:
        rows = [
            {"reason": r.reason, "count": r.count, "lastAt": r.last_at.isoformat(),
             "lastTopic": r.last_topic, "lastDetail": r.last_detail}
            for r in rejection_counts(session)
        ]
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
        return 0
    if not rows:
        print("no message has been rejected")
    for r in rows:
        print(f"{r['reason']:<20} {r['count']:>10}  last {r['lastAt']} on {r['lastTopic']}")
        print(f"{'':<20} {'':>10}  {r['lastDetail']}")
    return 0


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("clients", cmd_clients, "list the clients with their state")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.add_argument("--status", choices=("alive", "stale", "down"),
                   help="only clients in this state")
    p = add("rejections", cmd_rejections, "show how many device messages were refused, by reason")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
