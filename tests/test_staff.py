"""Staff users, roles and API tokens, against both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from core.models import ApiToken, AuditEntry, User
from core.staff import (
    StaffError,
    UserExists,
    add_user,
    authenticate,
    create_token,
    disable_user,
    enable_user,
    ensure_user,
    record_token_use,
    revoke_token,
    role_at_least,
    set_password,
    set_role,
    sign_out,
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


def user_row(db, username="alice") -> User:
    with db.sessions() as session:
        return session.scalar(select(User).where(User.username == username))


def audit_actions(db) -> list[tuple[str, str, dict | None]]:
    with db.sessions() as session:
        return [(e.action, e.target, e.details)
                for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]


def change(db, function, *args):
    with db.sessions() as session, session.begin():
        return function(session, *args, now=NOW, actor="test")


def test_adding_an_existing_user_is_refused_and_changes_nothing(db):
    add(db)
    before = user_row(db)
    with pytest.raises(UserExists, match="'alice' already exists"):
        add(db, role="admin", password="another long password")
    after = user_row(db)
    assert (after.password_hash, after.role, after.session_version) == (
        before.password_hash, before.role, before.session_version)
    assert count(db, User) == 1 and count(db, AuditEntry) == 1


def test_a_new_password_replaces_the_old_one_and_ends_sessions(db):
    add(db)
    change(db, set_password, "alice", "another long password")
    with db.sessions() as session, session.begin():
        assert authenticate(session, "alice", PASSWORD, now=NOW) is None
        assert authenticate(session, "alice", "another long password", now=NOW) is not None
    assert user_row(db).session_version == 1
    assert audit_actions(db)[-1] == ("user.passwd", "alice", None)


def test_a_short_new_password_is_refused_and_writes_nothing(db):
    add(db)
    with pytest.raises(StaffError, match="12 characters"):
        change(db, set_password, "alice", "short")
    assert user_row(db).session_version == 0 and count(db, AuditEntry) == 1


def test_a_role_change_ends_sessions_and_is_audited(db):
    add(db)
    assert change(db, set_role, "alice", "admin") is True
    assert (user_row(db).role, user_row(db).session_version) == ("admin", 1)
    assert audit_actions(db)[-1] == ("user.role", "alice",
                                     {"role": "admin", "previousRole": "operator"})


def test_giving_the_role_a_user_has_writes_nothing(db):
    add(db)
    assert change(db, set_role, "alice", "operator") is False
    assert user_row(db).session_version == 0 and count(db, AuditEntry) == 1


def test_a_disabled_user_cannot_sign_in_until_enabled(db):
    add(db)
    assert change(db, disable_user, "alice") is True
    assert change(db, disable_user, "alice") is False  # already: nothing more written
    with db.sessions() as session, session.begin():
        assert authenticate(session, "alice", PASSWORD, now=NOW) is None
    assert user_row(db).session_version == 1
    assert change(db, enable_user, "alice") is True
    assert change(db, enable_user, "alice") is False
    with db.sessions() as session, session.begin():
        assert authenticate(session, "alice", PASSWORD, now=NOW) is not None
    assert user_row(db).session_version == 1  # enabling revives no old session
    assert [a[0] for a in audit_actions(db)] == ["user.set", "user.disable", "user.enable"]


@pytest.mark.parametrize("function", [disable_user, enable_user])
def test_changes_to_an_unknown_user_are_refused(db, function):
    with pytest.raises(StaffError, match="no user 'nobody'"):
        change(db, function, "nobody")
    assert count(db, AuditEntry) == 0


def test_the_dev_stacks_admin_is_made_once_and_kept_as_is_on_every_start(db):
    for _ in range(2):
        change(db, ensure_user, "admin", "admin", PASSWORD)
    assert user_row(db, "admin").session_version == 0
    assert [a[0] for a in audit_actions(db)] == ["user.set"]


def test_the_dev_stacks_admin_gets_back_its_password_role_and_sign_in(db):
    add(db, "admin", "viewer", "another long password")
    change(db, disable_user, "admin")
    change(db, ensure_user, "admin", "admin", PASSWORD)
    with db.sessions() as session, session.begin():
        assert authenticate(session, "admin", PASSWORD, now=NOW).role == "admin"
    assert [a[0] for a in audit_actions(db)] == [
        "user.set", "user.disable", "user.passwd", "user.role", "user.enable"]


def test_signing_out_ends_every_session_of_the_user(db):
    add(db)
    with db.sessions() as session, session.begin():
        sign_out(session, user_row(db).id)
        sign_out(session, user_row(db).id + 1)  # someone deleted meanwhile: nothing to end
    assert user_row(db).session_version == 1


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
        found = verify_token(session, token)
        assert found is not None and found.role == "viewer" and found.last_used_at is None
        revoke_token(session, found.id, now=NOW, actor="test")
    with db.sessions() as session:
        assert verify_token(session, token) is None


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
        assert verify_token(session, presented.format(id=token_id, secret=secret)) is None


def test_it_rejects_a_token_with_an_unknown_role_and_writes_nothing(db):
    with pytest.raises(StaffError, match="unknown role"), db.sessions() as session:
        create_token(session, "zabbix", "superuser", now=NOW, actor="test")
    assert count(db, ApiToken) == 0


def token_row(db) -> ApiToken:
    with db.sessions() as session:
        return session.scalar(select(ApiToken))


def test_a_token_use_is_recorded_at_most_once_a_minute(db):
    with db.sessions() as session, session.begin():
        create_token(session, "zabbix", "viewer", now=NOW, actor="test")
    minute = timedelta(minutes=1)
    # (when it is used, whether that writes, the column afterwards)
    for at, writes, stamped in [(NOW, True, NOW),
                                (NOW + timedelta(seconds=59), False, NOW),
                                (NOW + minute, True, NOW + minute),
                                (NOW + minute + timedelta(seconds=1), False, NOW + minute)]:
        assert record_token_use(db.engine, token_row(db), now=at) is writes, at
        assert token_row(db).last_used_at == stamped


def test_a_stale_token_row_does_not_stamp_over_a_newer_use(db):
    # Another worker stamped the token after this one read the row.
    with db.sessions() as session, session.begin():
        create_token(session, "zabbix", "viewer", now=NOW, actor="test")
    stale = token_row(db)
    assert record_token_use(db.engine, token_row(db), now=NOW) is True
    assert record_token_use(db.engine, stale, now=NOW + timedelta(seconds=1)) is False
    assert token_row(db).last_used_at == NOW
