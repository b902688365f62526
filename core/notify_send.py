"""Sending one notification through Apprise, with a timeout, and saying why it failed without
repeating the channel's secrets."""

from __future__ import annotations

import logging

from core.notify_channels import ChannelError, plugin_for

NOTIFY_TYPES = {"info": "info", "warning": "warning", "error": "failure", "critical": "failure"}


def send(url: str, title: str, body: str, *, severity: str = "info", resolution: bool = False,
         timeout: float = 10.0) -> str | None:
    """Send; None when the channel took it, else the error in a line."""
    import apprise

    try:
        plugin = plugin_for(url)
    except ChannelError as exc:
        return str(exc)
    # Apprise's own socket timeouts (connect and read) bound each request.
    plugin.socket_connect_timeout = plugin.socket_read_timeout = timeout
    sender = apprise.Apprise()
    sender.add(plugin)
    notify_type = "success" if resolution else NOTIFY_TYPES.get(severity, "info")
    with apprise.LogCapture(level=logging.WARNING) as captured:
        ok = sender.notify(body=body, title=title, notify_type=notify_type,
                           body_format=apprise.NotifyFormat.TEXT)
    if ok:
        return None
    # Captured lines read "time - LEVEL - message".
    lines = [line.rsplit(" - ", 1)[-1].strip() for line in captured.getvalue().splitlines()
             if line.strip()]
    error = " ".join(lines[-2:]) or "the channel did not take the message"
    for secret in {url, *url.split("://", 1)[-1].split("/")}:  # never repeat the URL's parts
        if len(secret) >= 8:
            error = error.replace(secret, "…")
    return error[:500]
