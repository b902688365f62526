"""Staff users, roles and API tokens, against both databases."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from core.models import ApiToken, AuditEntry, User
from core.staff import (
    StaffError,
    add_user,
    authenticate,
    create_token,
    revoke_token,
    role_at_least,
    verify_token,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
PASSWORD = "correct horse battery"


def count(db, model) -> int:
    with db.sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def add(db, username="alice", role="operator", password=PASSWORD):
    with db.sessions() as session, session.begin():
        add_user(session, username, role, password, now=NOW, actor="test")


def test_roles_are_ordered():
    assert role_at_least("admin", "operator") and role_at_least("operator", "operator")
    assert not role_at_least("viewer", "operator")


def test_a_user_signs_in_with_the_right_password_only(db):
    add(db)
    with db.sessions() as session, session.begin():
        user = authenticate(session, "alice", PASSWORD, now=NOW)
        assert user is not None and user.role == "operator" and user.last_login_at == NOW
        assert authenticate(session, "alice", "wrong password!", now=NOW) is None
        assert authenticate(session, "nobody", PASSWORD, now=NOW) is None


def test_passwords_are_stored_as_argon2_hashes(db):
    add(db)
    with db.sessions() as session:
        stored = session.scalar(select(User.password_hash))
    assert stored.startswith("$argon2") and PASSWORD not in stored


def test_adding_an_existing_user_resets_password_and_role(db):
    add(db)
    add(db, role="admin", password="another long password")
    with db.sessions() as session, session.begin():
        assert authenticate(session, "alice", PASSWORD, now=NOW) is None
        assert authenticate(session, "alice", "another long password", now=NOW).role == "admin"
    assert count(db, User) == 1


@pytest.mark.parametrize(
    ("username", "role", "password", "complaint"),
    [
        ("alice", "root", PASSWORD, "unknown role"),
        ("bad name", "viewer", PASSWORD, "username"),
        ("", "viewer", PASSWORD, "username"),
        ("alice", "viewer", "short", "12 characters"),
    ],
)
def test_it_rejects_bad_user_requests_and_writes_nothing(db, username, role, password,
                                                         complaint):
    with pytest.raises(StaffError, match=complaint):
        add(db, username, role, password)
    assert count(db, User) == 0 and count(db, AuditEntry) == 0


def test_account_changes_are_audited(db):
    add(db)
    with db.sessions() as session:
        entry = session.scalar(select(AuditEntry))
    assert (entry.actor, entry.action, entry.target) == ("test", "user.set", "alice")
    assert entry.details == {"role": "operator"}


def test_an_api_token_verifies_until_it_is_revoked(db):
    with db.sessions() as session, session.begin():
        token = create_token(session, "zabbix", "viewer", now=NOW, actor="test")
    with db.sessions() as session, session.begin():
        found = verify_token(session, token, now=NOW)
        assert found is not None and found.role == "viewer" and found.last_used_at == NOW
        revoke_token(session, found.id, now=NOW, actor="test")
    with db.sessions() as session:
        assert verify_token(session, token, now=NOW) is None


def test_only_a_hash_of_the_token_is_stored(db):
    with db.sessions() as session, session.begin():
        token = create_token(session, "zabbix", "viewer", now=NOW, actor="test")
    with db.sessions() as session:
        stored = session.scalar(select(ApiToken))
    assert token.split("_", 2)[2] not in stored.secret_hash


@pytest.mark.parametrize("presented", ["", "ist", "ist__", "bearer", "ist_000000000000_x",
                                       "xyz_{id}_{secret}", "ist_{id}_wrong"])
def test_it_refuses_malformed_or_wrong_tokens(db, presented):
    with db.sessions() as session, session.begin():
        token = create_token(session, "zabbix", "viewer", now=NOW, actor="test")
    _, token_id, secret = token.split("_", 2)
    with db.sessions() as session:
        assert verify_token(session, presented.format(id=token_id, secret=secret),
                            now=NOW) is None


def test_it_rejects_a_token_with_an_unknown_role_and_writes_nothing(db):
    with pytest.raises(StaffError, match="unknown role"), db.sessions() as session:
        create_token(session, "zabbix", "superuser", now=NOW, actor="test")
    assert count(db, ApiToken) == 0
