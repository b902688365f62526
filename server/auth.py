"""Sign-in and roles: session cookies for browsers, bearer tokens for scripts.

Every route except /healthz, the sign-in page and static assets is wrapped in
`require_role`: 401 (or, for pages, a redirect to the sign-in page) without credentials,
403 with too small a role.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    abort,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import UserMixin, current_user, login_user, logout_user
from flask_wtf.csrf import generate_csrf

from core.clock import utc_now
from core.models import User
from core.staff import authenticate, record_token_use, role_at_least, sign_out, verify_token
from server.extensions import csrf, db, login_manager
from server.sign_in_limits import per_account, per_address

log = logging.getLogger(__name__)
bp = Blueprint("auth", __name__)


class SignedIn(UserMixin):
    """The session's user, as Flask-Login keeps it: only `id` goes into the cookie."""

    def __init__(self, user: User):
        # "<user id>:<session version>": the version bumped since (sign-out, new password or
        # role, disabled) ends the session, wherever its cookie was copied to.
        self.id = f"{user.id}:{user.session_version}"
        self.user_id = user.id
        self.username = user.username
        self.role = user.role


@login_manager.user_loader
def load_user(session_id: str) -> SignedIn | None:
    user_id, _, version = session_id.partition(":")
    if not (user_id.isdigit() and version.isdigit()):
        return None  # also a cookie from before session versions: sign in again
    user = db.session.get(User, int(user_id))
    if user is None or user.disabled_at is not None or user.session_version != int(version):
        return None
    return SignedIn(user)


@dataclass(frozen=True)
class Principal:
    """Who is asking: a signed-in user or an API token."""

    name: str
    role: str
    via: str  # "session" or "token"


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def current_principal() -> Principal | None:
    if "principal" in g:
        return g.principal
    principal = None
    token = bearer_token()
    if token is not None:
        found = verify_token(db.session, token)
        if found is not None:
            record_token_use(db.engine, found, now=utc_now())
            principal = Principal(f"token:{found.name}", found.role, "token")
    elif current_user.is_authenticated:
        principal = Principal(current_user.username, current_user.role, "session")
    g.principal = principal
    return principal


def require_role(role: str, *, page: bool = False) -> Callable:
    """Only principals with at least `role`. Pages send anonymous users to the sign-in page."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            principal = current_principal()
            if principal is None:
                if page:
                    # full_path ends in "?" when there is no query string
                    target = request.full_path.rstrip("?")
                    return redirect(url_for("auth.login_page", next=target))
                abort(401)
            if not role_at_least(principal.role, role):
                abort(403)
            return view(*args, **kwargs)

        wrapped.required_role = role  # type: ignore[attr-defined]
        return wrapped

    return decorate


# The JSON sign-in reads only application/json, which another site's page cannot send
# without a CORS preflight (which we never grant); the form sign-in keeps its CSRF token.
CSRF_EXEMPT_ENDPOINTS = frozenset({"auth.login_api"})


def protect_from_csrf() -> None:
    """CSRF applies to requests that carry the session cookie; a bearer token cannot be sent
    by another site's page, so token requests need none."""
    if bearer_token() is None and request.endpoint not in CSRF_EXEMPT_ENDPOINTS:
        csrf.protect()


def _safe_next(target: str | None) -> str:
    # Only same-site paths: an open redirect would let a link send staff elsewhere.
    if target and target.startswith("/") and not target.startswith("//") and not urlsplit(
            target).netloc:
        return target
    return url_for("web.home")


def _sign_in(username: str, password: str) -> SignedIn | None:
    user = authenticate(db.session, username, password, now=utc_now())
    if user is None:
        log.info("failed sign-in for %r from %s", username[:64], request.remote_addr)
        return None
    db.session.commit()  # last_login_at, and a rehashed password if argon2 asked for one
    signed_in = SignedIn(user)
    session.clear()  # a new session on sign-in: no fixation
    login_user(signed_in)
    log.info("%s signed in (%s) from %s", user.username, user.role, request.remote_addr)
    return signed_in


@bp.get("/login")
def login_page():
    return render_template("login.html", next=request.args.get("next", ""))


@bp.post("/login")
@per_account
@per_address
def login_form():
    signed_in = _sign_in(request.form.get("username", ""), request.form.get("password", ""))
    if signed_in is None:
        return render_template("login.html", error="Wrong username or password.",
                               next=request.form.get("next", "")), 401
    return redirect(_safe_next(request.form.get("next")))


def _sign_out() -> None:
    """End the user's sessions: signing out ends copies of this cookie and other browsers too."""
    if current_user.is_authenticated:
        sign_out(db.session, current_user.user_id)
        db.session.commit()
        log.info("%s signed out", current_user.username)
    logout_user()
    session.clear()


@bp.post("/logout")
@require_role("viewer", page=True)
def logout_form():
    _sign_out()
    return redirect(url_for("auth.login_page"))


@bp.post("/api/auth/login")
@per_account
@per_address
def login_api():
    body = request.get_json(silent=True) or {}
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        return jsonify(error="Bad Request", message="send JSON with username and password"), 400
    signed_in = _sign_in(username, password)
    if signed_in is None:
        return jsonify(error="Unauthorized", message="wrong username or password"), 401
    return jsonify(user={"username": signed_in.username, "role": signed_in.role},
                   csrfToken=generate_csrf())


@bp.post("/api/auth/logout")
@require_role("viewer")
def logout_api():
    _sign_out()
    return jsonify(signedOut=True)


@bp.get("/api/auth/me")
@require_role("viewer")
def me():
    principal = current_principal()
    return jsonify(name=principal.name, role=principal.role, via=principal.via,
                   csrfToken=generate_csrf() if principal.via == "session" else None)
