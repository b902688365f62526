"""What a notification says, in English or German: the screen's name and group, what happened
and since when, and a link to its page. Plain text only: device text is cleaned of control
characters and of the characters that Markdown, Slack or HTML would read as markup, so that a
hostname can never turn into a link or a heading in someone's chat."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
# Look-alikes for the characters a channel might render as markup.
_MARKUP = str.maketrans({"*": "∗", "_": "＿", "`": "ʹ", "~": "∼", "[": "［", "]": "］",
                         "<": "‹", ">": "›", "|": "│", "#": "＃", "\\": "＼", "&": "＆"})


def plain(text: Any, limit: int = 120) -> str:
    """Device text as inert plain text, on one line, at most `limit` characters."""
    cleaned = _CONTROL.sub(" ", str(text)).translate(_MARKUP)
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


# title, body; {screen} {group} {since} and the event's details (cleaned) are filled in.
TEXTS: dict[str, dict[str, tuple[str, str]]] = {
    "en": {
        "service_failed": ("Service failed on {screen}",
                           "{unit} failed on {screen}{group} at {since}."),
        "client_down": ("{screen} is down", "{screen}{group} has sent nothing since {since}."),
        "client_stale": ("{screen} is silent", "{screen}{group} has been silent since {since}."),
        "crash_detected": ("Player crashed on {screen}",
                           "The player on {screen}{group} crashed ({since})."),
        "screen_black": ("{screen} shows a black screen",
                         "{screen}{group} has shown a black picture since {since}."),
        "screen_frozen": ("{screen} shows a frozen picture",
                          "The picture of {screen}{group} has not changed since {since}."),
        "command_failed": ("{action} failed on {screen}",
                           "{action} on {screen}{group} failed ({error}) at {since}."),
        "command_timed_out": ("{action} timed out on {screen}",
                              "{action} on {screen}{group} did not finish (timed out at "
                              "{since})."),
        "auto_recovery_exhausted": ("Auto-recovery gave up on {screen}",
                                    "Auto-recovery gave up on {screen}{group} at {since}; "
                                    "someone must look at it."),
        "auto_recovery_braked": ("Auto-recovery braked",
                                 "{down} of {total} screens are down; automatic actions are "
                                 "paused since {since}."),
        "certificate_expiring": ("A certificate expires soon",
                                 "A certificate expires in {daysLeft} days ({since})."),
        "certificate_expired": ("A certificate has expired",
                                "A certificate has expired ({since})."),
        "broker_auth_failures": ("Failed broker logins",
                                 "{count} failed logins at the broker ({since})."),
        "client_recovered": ("{screen} is back", "{screen}{group} is back ({since})."),
        "service_failed_acknowledged": ("Service failure on {screen} acknowledged",
                                        "{by} acknowledged {unit} on {screen}{group} at "
                                        "{since}."),
        "service_failed_cleared": ("Service on {screen} running again",
                                   "{unit} on {screen}{group} runs again ({since})."),
        "crash_cleared": ("Player running again on {screen}",
                          "The player on {screen}{group} runs again ({since})."),
        "screen_recovered": ("{screen} shows content again",
                             "{screen}{group} shows content again ({since})."),
        "auto_recovery_resumed": ("Auto-recovery resumed",
                                  "Automatic actions resumed at {since}."),
        "_other": ("{type} on {screen}", "{type} ({severity}) on {screen}{group} at {since}."),
        "_fleet": ("{type}", "{type} ({severity}) at {since}."),
        "_reminder": ("Reminder: {title}", "Still not acknowledged after {age}. {body}"),
        "_escalation": ("Escalation: {title}", "Not acknowledged for {age}. {body}"),
        "_digest": ("{count} notifications", "{count} notifications since {since}:\n{lines}"),
        "_digest_about": ("{count} {label}{group}, since {since}", ""),
        "_quiet": ("{count} notifications during quiet hours",
                   "While notifications were quiet ({since} to now):\n{lines}"),
        "_test": ("Test notification", "This is a test from the infoscreen backend ({since})."),
        "_group": (" in {name}", ""),
        "_link": ("{url}", ""),
    },
    "de": {
        "service_failed": ("Dienst ausgefallen auf {screen}",
                           "{unit} ist auf {screen}{group} um {since} ausgefallen."),
        "client_down": ("{screen} ist ausgefallen",
                        "{screen}{group} meldet sich seit {since} nicht mehr."),
        "client_stale": ("{screen} ist still", "{screen}{group} ist seit {since} still."),
        "crash_detected": ("Player abgestürzt auf {screen}",
                           "Der Player auf {screen}{group} ist abgestürzt ({since})."),
        "screen_black": ("{screen} zeigt ein schwarzes Bild",
                         "{screen}{group} zeigt seit {since} ein schwarzes Bild."),
        "screen_frozen": ("{screen} zeigt ein eingefrorenes Bild",
                          "Das Bild von {screen}{group} hat sich seit {since} nicht geändert."),
        "command_failed": ("{action} fehlgeschlagen auf {screen}",
                           "{action} auf {screen}{group} ist fehlgeschlagen ({error}), "
                           "{since}."),
        "command_timed_out": ("{action} ohne Antwort auf {screen}",
                              "{action} auf {screen}{group} wurde nicht fertig (Zeitüberschreitung "
                              "{since})."),
        "auto_recovery_exhausted": ("Automatische Wiederherstellung aufgegeben: {screen}",
                                    "Die automatische Wiederherstellung hat {screen}{group} um "
                                    "{since} aufgegeben; bitte vor Ort nachsehen."),
        "auto_recovery_braked": ("Automatische Wiederherstellung gebremst",
                                 "{down} von {total} Bildschirmen sind ausgefallen; "
                                 "automatische Aktionen ruhen seit {since}."),
        "certificate_expiring": ("Ein Zertifikat läuft bald ab",
                                 "Ein Zertifikat läuft in {daysLeft} Tagen ab ({since})."),
        "certificate_expired": ("Ein Zertifikat ist abgelaufen",
                                "Ein Zertifikat ist abgelaufen ({since})."),
        "broker_auth_failures": ("Fehlgeschlagene Anmeldungen am Broker",
                                 "{count} fehlgeschlagene Anmeldungen am Broker ({since})."),
        "client_recovered": ("{screen} ist wieder da", "{screen}{group} ist wieder da ({since})."),
        "service_failed_acknowledged": ("Dienstausfall auf {screen} quittiert",
                                        "{by} hat {unit} auf {screen}{group} um {since} "
                                        "quittiert."),
        "service_failed_cleared": ("Dienst auf {screen} läuft wieder",
                                   "{unit} auf {screen}{group} läuft wieder ({since})."),
        "crash_cleared": ("Player läuft wieder auf {screen}",
                          "Der Player auf {screen}{group} läuft wieder ({since})."),
        "screen_recovered": ("{screen} zeigt wieder Inhalte",
                             "{screen}{group} zeigt wieder Inhalte ({since})."),
        "auto_recovery_resumed": ("Automatische Wiederherstellung läuft wieder",
                                  "Automatische Aktionen laufen wieder seit {since}."),
        "_other": ("{type} auf {screen}", "{type} ({severity}) auf {screen}{group} um {since}."),
        "_fleet": ("{type}", "{type} ({severity}) um {since}."),
        "_reminder": ("Erinnerung: {title}", "Nach {age} noch nicht quittiert. {body}"),
        "_escalation": ("Eskalation: {title}", "Seit {age} nicht quittiert. {body}"),
        "_digest": ("{count} Benachrichtigungen",
                    "{count} Benachrichtigungen seit {since}:\n{lines}"),
        "_digest_about": ("{count} {label}{group}, seit {since}", ""),
        "_quiet": ("{count} Benachrichtigungen während der Ruhezeit",
                   "Während der Ruhezeit ({since} bis jetzt):\n{lines}"),
        "_test": ("Testbenachrichtigung",
                  "Dies ist ein Test des Infoscreen-Backends ({since})."),
        "_group": (" in {name}", ""),
        "_link": ("{url}", ""),
    },
}
# How a digest of one kind of event is summed up: "23 screens down in Building A".
DIGEST_ABOUT = {
    "en": {"client_down": "screens down", "client_recovered": "screens back",
           "crash_detected": "players crashed", "service_failed": "services failed",
           "screen_black": "black screens"},
    "de": {"client_down": "Bildschirme ausgefallen", "client_recovered": "Bildschirme wieder da",
           "crash_detected": "Player abgestürzt", "service_failed": "Dienste ausgefallen",
           "screen_black": "schwarze Bildschirme"},
}


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return "?"


@dataclass(frozen=True)
class Wording:
    """How messages are worded: the language, the viewer's time zone and the panels' URL."""

    language: str
    timezone: str
    public_url: str

    def text(self, key: str) -> tuple[str, str]:
        return TEXTS[self.language][key]

    def when(self, at: datetime) -> str:
        local = at.astimezone(ZoneInfo(self.timezone))
        return f"{local:%Y-%m-%d %H:%M} {local.tzname()}"

    def duration(self, seconds: float) -> str:
        minutes = round(seconds / 60)
        if minutes < 120:
            return f"{minutes} min"
        return f"{seconds / 3600:.1f} h"

    def event(self, event_type: str, severity: str, at: datetime, details: dict[str, Any],
              screen: str | None, group: str | None, client_uuid: str | None
              ) -> tuple[str, str]:
        """(title, body) of one event."""
        key = event_type if event_type in TEXTS[self.language] else (
            "_other" if screen else "_fleet")
        title, body = self.text(key)
        fields = _Blank({k: plain(v) for k, v in details.items()
                         if isinstance(v, str | int | float)})
        fields.update(screen=plain(screen) if screen else "", type=event_type,
                      severity=severity, since=self.when(at),
                      group=self.text("_group")[0].format(name=plain(group)) if group else "")
        fields.setdefault("action", plain(details.get("action", "command")))
        fields.setdefault("error", plain(details.get("errorCode", "error")))
        body = body.format_map(fields)
        if client_uuid:
            body += f"\n{self.public_url.rstrip('/')}/clients/{client_uuid}"
        return title.format_map(fields)[:255], body

    def follow_up(self, kind: str, title: str, body: str, age_seconds: float) -> tuple[str, str]:
        """A reminder or an escalation of an alert: the alert's text, said again."""
        head, text = self.text(f"_{kind}")
        age = self.duration(age_seconds)
        return (head.format(title=title)[:255], text.format(age=age, body=body))

    def bundle(self, kind: str, items: Sequence[tuple[str, str, str | None]],
               since: datetime) -> tuple[str, str]:
        """A digest or a quiet-hours summary of (title, event type, group) items."""
        head, text = self.text("_digest" if kind == "digest" else "_quiet")
        types = Counter(t for _, t, _ in items)
        groups = {g for _, _, g in items}
        label = DIGEST_ABOUT[self.language].get(next(iter(types))) if len(types) == 1 else None
        if kind == "digest" and label:
            group = (self.text("_group")[0].format(name=plain(next(iter(groups))))
                     if len(groups) == 1 and None not in groups else "")
            head = self.text("_digest_about")[0].format(
                count=len(items), label=label, group=group, since=self.when(since))
        lines = "\n".join(f"- {title}" for title, _, _ in items[:50])
        if len(items) > 50:
            lines += f"\n- … (+{len(items) - 50})"
        fields = {"count": len(items), "since": self.when(since), "lines": lines}
        return head.format(**fields)[:255], text.format(**fields)

    def test(self, at: datetime) -> tuple[str, str]:
        head, text = self.text("_test")
        return head, text.format(since=self.when(at))
