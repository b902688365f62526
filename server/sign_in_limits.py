"""Throttling of sign-in: one budget per account tried and a higher one per client address.

Both sign-in routes (the form and the JSON API) share the budgets. Every attempt counts
against both (the limiter does not stop at the first breached limit), so a locked-out
account does not stop colleagues signing in from the same address until the address-wide
budget is spent. The 429 says when to retry: a Retry-After header and, in words, in the
JSON error or on the sign-in page.
"""

from __future__ import annotations

import hashlib
import math

from flask import Flask, Response, jsonify, make_response, render_template, request
from flask_limiter import RateLimitExceeded
from flask_limiter.util import get_remote_address

from core.clock import utc_now
from server.extensions import current_settings, limiter

FORM_ENDPOINT = "auth.login_form"


def tried_account() -> str:
    """The username tried, as a digest: a password typed into the username box by mistake
    never reaches the counters table."""
    if request.is_json:
        body = request.get_json(silent=True)
        username = body.get("username") if isinstance(body, dict) else None
    else:
        username = request.form.get("username")
    if not isinstance(username, str) or not username:
        return "none"  # malformed requests share one budget
    return hashlib.sha256(username.encode()).hexdigest()[:32]


per_account = limiter.shared_limit(
    lambda: current_settings().sign_in_limit_per_account, scope="sign-in-account",
    key_func=tried_account)
per_address = limiter.shared_limit(
    lambda: current_settings().sign_in_limit_per_address, scope="sign-in-address",
    key_func=get_remote_address)


def seconds_to_wait() -> int:
    """Until every limit this request breached has reset."""
    resets = [limit.window.reset_time for limit in limiter.current_limits if limit.breached]
    now = utc_now().timestamp()
    return max(1, math.ceil(max(resets, default=now) - now))


def too_many_sign_ins(_exc: RateLimitExceeded) -> Response:
    wait = seconds_to_wait()
    message = f"Too many sign-in attempts; try again in {wait} seconds."
    if request.endpoint == FORM_ENDPOINT:
        response = make_response(render_template(
            "login.html", error=message, next=request.form.get("next", "")), 429)
    else:
        response = make_response(jsonify(error="Too Many Requests", message=message), 429)
    response.headers["Retry-After"] = str(wait)
    return response


def init_app(app: Flask) -> None:
    # Only the sign-in routes carry limits, so every 429 is a refused sign-in.
    app.register_error_handler(RateLimitExceeded, too_many_sign_ins)
