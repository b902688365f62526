"""Staff users, their roles, and API tokens for scripts (DESIGN.md §7).

Roles are ordered: viewer < operator < admin; each may do what the ones before it may.
Passwords are hashed with argon2. An API token is `ist_<id>_<secret>`: the id finds the row,
and the secret is compared with the stored hash in constant time.

A user's sessions carry the user's session version (server/auth.py); changing the password or
the role, disabling the user or signing out bumps it, which ends every session signed in before.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, Engine, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.models import ROLES, ApiToken, AuditEntry, User

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD_LENGTH = 12
TOKEN_PREFIX = "ist"  # noqa: S105 - a marker, not a secret
# last_used_at says roughly when a token was last used; writing it on every request would make
# every read a write, and fail reads whenever another process holds the write lock.
TOKEN_USE_RESOLUTION = timedelta(minutes=1)
TOKEN_USE_LOCK_WAIT_MS = 200  # the stamp is worth a short wait for a lock, not a slow request
_hasher = PasswordHasher()
log = logging.getLogger(__name__)


@cache
def _dummy_hash() -> str:
    # Verifying against this keeps a failed sign-in for an unknown user as slow as for a known
    # one. Made on first use: an argon2 hash costs time and memory every importer would pay.
    return _hasher.hash(secrets.token_urlsafe(16))


class StaffError(ValueError):
    """A request about staff accounts that cannot be honoured; the message says why."""


class UserExists(StaffError):
    """add_user was given a username that is taken."""


def role_at_least(role: str, required: str) -> bool:
    return ROLES.index(role) >= ROLES.index(required)


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise StaffError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")


def generate_password() -> str:
    return secrets.token_urlsafe(18)


def audit(session: Session, now: datetime, actor: str, action: str, target: str | None = None,
          **details: object) -> None:
    session.add(AuditEntry(occurred_at=now, actor=actor, action=action, target=target,
                           details=details or None))


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise StaffError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")


def add_user(session: Session, username: str, role: str, password: str, *, now: datetime,
             actor: str) -> User:
    """Create a user. An existing one is refused (UserExists): its password, role and state
    change only through the functions below, which also end its sessions."""
    _check_role(role)
    if not USERNAME_RE.match(username):
        raise StaffError("a username is 1-64 letters, digits, '.', '_', '@' or '-'")
    _check_password(password)
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise UserExists(f"user {username!r} already exists")
    user = User(username=username, role=role, password_hash=_hasher.hash(password),
                created_at=now)
    session.add(user)
    audit(session, now, actor, "user.set", username, role=role)
    return user


def find_user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise StaffError(f"no user {username!r}")
    return user


def end_sessions(user: User) -> None:
    """Every session the user signed in to before ends at its next request."""
    # Incremented in SQL: two changes at once must not both write the same new version.
    user.session_version = User.session_version + 1


def set_password(session: Session, username: str, password: str, *, now: datetime,
                 actor: str) -> User:
    _check_password(password)
    user = find_user(session, username)
    user.password_hash = _hasher.hash(password)
    end_sessions(user)
    audit(session, now, actor, "user.passwd", username)
    return user


def set_role(session: Session, username: str, role: str, *, now: datetime, actor: str
             ) -> bool:
    """Give the user another role; False (and nothing written) if it has that role."""
    _check_role(role)
    user = find_user(session, username)
    if user.role == role:
        return False
    audit(session, now, actor, "user.role", username, role=role, previousRole=user.role)
    user.role = role
    end_sessions(user)
    return True


def disable_user(session: Session, username: str, *, now: datetime, actor: str) -> bool:
    """Stop the user signing in and end their sessions; False if they were disabled."""
    user = find_user(session, username)
    if user.disabled_at is not None:
        return False
    user.disabled_at = now
    end_sessions(user)
    audit(session, now, actor, "user.disable", username)
    return True


def remove_user(session: Session, username: str, *, now: datetime, actor: str) -> None:
    """Delete the user; their sessions end with them. The audit log keeps their name."""
    user = find_user(session, username)
    audit(session, now, actor, "user.remove", username, role=user.role)
    session.delete(user)


def enable_user(session: Session, username: str, *, now: datetime, actor: str) -> bool:
    """Let a disabled user sign in again (their old sessions stay ended); False if enabled."""
    user = find_user(session, username)
    if user.disabled_at is None:
        return False
    user.disabled_at = None
    audit(session, now, actor, "user.enable", username)
    return True


def ensure_user(session: Session, username: str, role: str, password: str, *, now: datetime,
                actor: str) -> None:
    """Make the user exist, enabled, with this role and password, changing only what differs
    (each change as the functions above make it). For `infoscreen dev`, whose admin signs in
    with the password in its settings on every start."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        add_user(session, username, role, password, now=now, actor=actor)
        return
    if not password_matches(user, password):
        set_password(session, username, password, now=now, actor=actor)
    set_role(session, username, role, now=now, actor=actor)
    enable_user(session, username, now=now, actor=actor)


def password_matches(user: User, password: str) -> bool:
    try:
        return _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def sign_out(session: Session, user_id: int) -> None:
    """End every session of the user, this one and any copy of its cookie."""
    user = session.get(User, user_id)
    if user is not None:
        end_sessions(user)


def authenticate(session: Session, username: str, password: str, *, now: datetime
                 ) -> User | None:
    """The user, if the password is right and the account enabled; else None."""
    user = session.scalar(select(User).where(User.username == username))
    try:
        _hasher.verify(user.password_hash if user else _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or user.disabled_at is not None:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.last_login_at = now
    return user


def _secret_hash(secret: str) -> str:
    # The secret is 256 random bits: a plain SHA-256 is enough, and fast to check per request.
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(session: Session, name: str, role: str, *, now: datetime, actor: str) -> str:
    """Create an API token; returns it in full. Only its hash is kept: show it once."""
    _check_role(role)
    if not USERNAME_RE.match(name):
        raise StaffError("a token name is 1-64 letters, digits, '.', '_', '@' or '-'")
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    session.add(ApiToken(id=token_id, name=name, role=role, secret_hash=_secret_hash(secret),
                         created_at=now, created_by=actor))
    audit(session, now, actor, "token.create", token_id, name=name, role=role)
    return f"{TOKEN_PREFIX}_{token_id}_{secret}"


def verify_token(session: Session, presented: str) -> ApiToken | None:
    """The token's row if `presented` is a valid, unrevoked token; else None. Writes nothing:
    record_token_use stamps the use."""
    prefix, _, rest = presented.partition("_")
    token_id, _, secret = rest.partition("_")
    if prefix != TOKEN_PREFIX or not token_id or not secret:
        return None
    token = session.get(ApiToken, token_id)
    expected = token.secret_hash if token else _secret_hash("")
    matches = hmac.compare_digest(expected, _secret_hash(secret))
    if token is None or not matches or token.revoked_at is not None:
        return None
    return token


def token_use_due(last_used_at: datetime | None, now: datetime) -> bool:
    return last_used_at is None or now - last_used_at >= TOKEN_USE_RESOLUTION


@contextmanager
def _short_lock_wait(conn: Connection) -> Iterator[None]:
    """Give up on a held lock after TOKEN_USE_LOCK_WAIT_MS instead of the usual wait."""
    if conn.dialect.name != "sqlite":
        # For the transaction the stamp runs in, which ends with it.
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{TOKEN_USE_LOCK_WAIT_MS}ms'")
        yield
        return
    # A setting of the pooled connection: the next user of it gets the usual one back.
    usual = int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar())
    conn.exec_driver_sql(f"PRAGMA busy_timeout = {TOKEN_USE_LOCK_WAIT_MS}")
    try:
        yield
    finally:
        conn.rollback()  # whatever a failed stamp left open
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {usual}")
        conn.commit()


def record_token_use(engine: Engine, token: ApiToken, *, now: datetime) -> bool:
    """Stamp the token's last_used_at, at most once per TOKEN_USE_RESOLUTION; True if written.

    Best effort, in a short transaction on a connection of its own, so that the caller's
    session is never touched: a failure (a locked database) is logged and rolled back.
    """
    if not token_use_due(token.last_used_at, now):
        return False
    # The condition again in SQL: another worker may have stamped it since we read the row.
    stamp = (
        update(ApiToken)
        .where(ApiToken.id == token.id,
               or_(ApiToken.last_used_at.is_(None),
                   ApiToken.last_used_at <= now - TOKEN_USE_RESOLUTION))
        .values(last_used_at=now)
    )
    try:
        with engine.connect() as conn, _short_lock_wait(conn):
            written = conn.execute(stamp).rowcount == 1
            conn.commit()
    except SQLAlchemyError as exc:
        # Closing the connection rolled the stamp back; the request goes on without it.
        log.warning("could not record the use of API token %s: %s", token.id,
                    str(exc).splitlines()[0])
        return False
    return written


def revoke_token(session: Session, token_id: str, *, now: datetime, actor: str) -> None:
    token = session.get(ApiToken, token_id)
    if token is None:
        raise StaffError(f"no API token with id {token_id!r}")
    token.revoked_at = now
    audit(session, now, actor, "token.revoke", token_id)
