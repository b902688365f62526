"""The `infoscreen` command line as an operator uses it."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.contract import parse_message
from core.ingest import apply_batch
from infoscreen.cli import build_parser, main

COMMANDS = [
    [], ["listener"], ["scheduler"], ["serve"], ["migrate"], ["simulate"], ["dev"], ["clients"],
    ["rejections"], ["device", "add"], ["monitor", "add"], ["broker", "config"],
    ["user", "add"], ["user", "list"], ["user", "passwd"], ["user", "disable"],
    ["user", "enable"], ["user", "role"], ["token", "create"], ["token", "revoke"],
    ["broker", "add-account"], ["broker", "accounts"], ["device", "list"],
    ["device", "remove"], ["monitor", "list"], ["monitor", "remove"], ["user", "remove"],
    ["token", "remove"], ["backup"], ["restore"],
]


@pytest.mark.parametrize("words", COMMANDS, ids=lambda w: " ".join(w) or "infoscreen")
def test_every_command_has_help(words, capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([*words, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "usage: infoscreen" in out and len(out.splitlines()) >= 3


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infoscreen", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def seed(db) -> str:
    uuid = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
    now = datetime.now(UTC)
    items = [
        parse_message(f"infoscreen/{uuid}/discovery", json.dumps(
            {"uuid": uuid, "hostname": "<b>hall</b>", "ip": "10.0.0.2",
             "software_version": "1"}).encode(), now),
        parse_message(f"infoscreen/{uuid}/heartbeat", b"{", now),
    ]
    with db.sessions() as session, session.begin():
        apply_batch(session, items, now=now)
    return uuid


def test_clients_lists_the_fleet_as_a_table_and_as_json(db):
    uuid = seed(db)
    env = {"DATABASE_URL": db.url, "PATH": "/usr/bin:/bin"}
    table = run_cli("clients", env=env)
    assert table.returncode == 0, table.stderr
    assert uuid in table.stdout and "alive" in table.stdout and "1 clients" in table.stdout
    rows = json.loads(run_cli("clients", "--json", env=env).stdout)
    assert rows[0]["uuid"] == uuid and rows[0]["hostname"] == "<b>hall</b>"
    assert rows[0]["status"] == "alive"
    assert json.loads(run_cli("clients", "--json", "--status", "down", env=env).stdout) == []


def test_rejections_shows_the_counts(db):
    seed(db)
    env = {"DATABASE_URL": db.url, "PATH": "/usr/bin:/bin"}
    rows = json.loads(run_cli("rejections", "--json", env=env).stdout)
    assert [(r["reason"], r["count"]) for r in rows] == [("invalid_json", 1)]


def test_migrate_check_reports_agreement(db):
    done = run_cli("migrate", "--check", env={"DATABASE_URL": db.url, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and "agree" in done.stdout


def test_a_configuration_error_is_one_clear_line(capsys):
    assert main(["--env-file", "/nonexistent/settings.env", "clients"]) == 2
    assert "INFOSCREEN_ENV_FILE" in capsys.readouterr().err


def test_device_add_refuses_a_name_that_is_not_a_uuid(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BROKER_DIR", str(tmp_path))
    assert main(["device", "add", "screen-1"]) == 2
    assert "uuid" in capsys.readouterr().err
    assert not (tmp_path / "passwd").exists()


def test_device_add_refuses_a_short_password(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BROKER_DIR", str(tmp_path))
    assert main(["device", "add", "3fa85f64-5717-4562-b3fc-2c963f66afa6",
                 "--password", "short"]) == 2
    assert "12 characters" in capsys.readouterr().err
    assert not (tmp_path / "passwd").exists()


def _broker_certs(broker_dir):
    from mosquitto.certs import init_ca, issue_server

    init_ca(broker_dir / "certs")
    issue_server(broker_dir / "certs", dns_names=["localhost"], ips=["127.0.0.1"])


def _listeners(conf: str) -> list[list[str]]:
    """Each listener block of a mosquitto.conf, as its lines."""
    blocks = conf.split("\nlistener ")[1:]
    return [("listener " + block).split("\n\n")[0].splitlines() for block in blocks]


def test_broker_config_writes_a_services_and_a_devices_tls_listener_by_default(tmp_path,
                                                                                monkeypatch):
    monkeypatch.setenv("BROKER_DIR", str(tmp_path))
    _broker_certs(tmp_path)
    assert main(["broker", "config"]) == 0
    conf = (tmp_path / "mosquitto.conf").read_text()
    services, devices = _listeners(conf)
    assert services[0] == "listener 8885 127.0.0.1"
    assert f"password_file {tmp_path.resolve() / 'passwd-services'}" in services
    assert "use_username_as_clientid true" not in services
    assert devices[0] == "listener 8883 0.0.0.0"
    for tls in (services, devices):
        assert "allow_anonymous false" in tls and "tls_version tlsv1.2" in tls
        assert f"cafile {(tmp_path / 'certs' / 'ca-bundle.crt').resolve()}" in tls
        assert f"keyfile {(tmp_path / 'certs' / 'server.key').resolve()}" in tls
        assert "require_certificate true" not in tls
    assert f"password_file {tmp_path.resolve() / 'passwd'}" in devices
    assert "use_username_as_clientid true" in devices
    [plugin] = [line for line in devices if line.startswith("plugin ")]
    assert Path(plugin.split(" ", 1)[1]).is_file()  # compiled into BROKER_DIR/plugins
    assert "max_packet_size 4194304" in conf
    assert "max_queued_messages 1000000" in conf and "max_queued_bytes 1073741824" in conf


def test_broker_config_adds_a_mutual_tls_listener_for_devices(tmp_path, monkeypatch):
    monkeypatch.setenv("BROKER_DIR", str(tmp_path))
    monkeypatch.setenv("BROKER_MTLS_PORT", "8884")
    _broker_certs(tmp_path)
    assert main(["broker", "config"]) == 0
    _, _, mtls = _listeners((tmp_path / "mosquitto.conf").read_text())
    assert mtls[0] == "listener 8884 0.0.0.0"
    assert "require_certificate true" in mtls and "use_identity_as_username true" in mtls
    assert "use_username_as_clientid true" in mtls
    assert "allow_anonymous false" in mtls
    assert not any(line.startswith("password_file ") for line in mtls)


def test_broker_config_adds_a_plain_listener_only_with_the_loopback_switch(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv("BROKER_DIR", str(tmp_path))
    _broker_certs(tmp_path)
    assert main(["broker", "config"]) == 0
    assert len(_listeners((tmp_path / "mosquitto.conf").read_text())) == 2
    monkeypatch.setenv("MQTT_PLAIN_LISTENER", "loopback")
    assert main(["broker", "config"]) == 0
    _, _, plain = _listeners((tmp_path / "mosquitto.conf").read_text())
    assert plain[0] == "listener 1883 127.0.0.1"
    assert "allow_anonymous false" in plain and "use_username_as_clientid true" in plain
    assert not any(line.startswith("certfile") for line in plain)


def test_it_refuses_a_packet_limit_below_the_listeners_payload_limit(tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.setenv("BROKER_DIR", str(tmp_path))
    monkeypatch.setenv("BROKER_MAX_PACKET_BYTES", "100000")
    monkeypatch.setenv("LISTENER_MAX_PAYLOAD_BYTES", "200000")
    assert main(["broker", "config"]) == 2
    assert "BROKER_MAX_PACKET_BYTES (100000) must be larger than" in capsys.readouterr().err
    assert not (tmp_path / "mosquitto.conf").exists()


def test_it_rejects_a_plain_listener_off_loopback(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BROKER_DIR", str(tmp_path))
    monkeypatch.setenv("MQTT_PLAIN_LISTENER", "loopback")
    _broker_certs(tmp_path)
    assert main(["broker", "config", "--plain-address", "0.0.0.0"]) == 2
    assert "loopback" in capsys.readouterr().err
    assert not (tmp_path / "mosquitto.conf").exists()


def test_it_rejects_an_unknown_plain_listener_setting(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BROKER_DIR", str(tmp_path))
    monkeypatch.setenv("MQTT_PLAIN_LISTENER", "network")
    assert main(["broker", "config"]) == 2
    assert "MQTT_PLAIN_LISTENER" in capsys.readouterr().err


def test_it_rejects_a_broker_config_without_certificates_and_says_how_to_make_them(
        tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BROKER_DIR", str(tmp_path))
    assert main(["broker", "config"]) == 2
    err = capsys.readouterr().err
    assert "infoscreen certs init-ca" in err and "infoscreen certs issue-server" in err
    assert not (tmp_path / "mosquitto.conf").exists()


def test_broker_files_are_private(tmp_path, monkeypatch):
    monkeypatch.setenv("BROKER_DIR", str(tmp_path))
    assert main(["monitor", "add", "noc", "--password", "long-enough-password"]) == 0
    for name in ("passwd", "acl", "accounts.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
    assert "long-enough-password" not in (tmp_path / "passwd").read_text()


def test_user_add_prints_a_generated_password_once_and_it_signs_in(db):
    from core.staff import authenticate

    env = {"DATABASE_URL": db.url, "PATH": "/usr/bin:/bin"}
    done = run_cli("user", "add", "carol", "--role", "viewer", env=env)
    assert done.returncode == 0, done.stderr
    password = done.stdout.split("store it now): ")[1].strip()
    with db.sessions() as session, session.begin():
        assert authenticate(session, "carol", password, now=datetime.now(UTC)).role == "viewer"
    assert "carol" in run_cli("user", "list", env=env).stdout


def test_user_add_refuses_a_short_password_naming_the_rule(db):
    env = {"DATABASE_URL": db.url, "PATH": "/usr/bin:/bin"}
    done = run_cli("user", "add", "carol", "--role", "viewer", "--password", "short", env=env)
    assert done.returncode == 2 and "12 characters" in done.stderr


def user_row(db, username: str):
    from sqlalchemy import select

    from core.models import User

    with db.sessions() as session:
        return session.scalar(select(User).where(User.username == username))


def audit_count(db) -> int:
    from sqlalchemy import func, select

    from core.models import AuditEntry

    with db.sessions() as session:
        return session.scalar(select(func.count()).select_from(AuditEntry))


def can_sign_in(db, username: str, password: str) -> bool:
    from core.staff import authenticate

    with db.sessions() as session:
        return authenticate(session, username, password, now=datetime.now(UTC)) is not None


@pytest.fixture
def carol(db, monkeypatch):
    """A user made with `user add`; the commands run in this process against `db`."""
    monkeypatch.setenv("DATABASE_URL", db.url)
    assert main(["user", "add", "carol", "--role", "viewer", "--password",
                 "carol's first password"]) == 0
    return "carol's first password"


@pytest.mark.parametrize("words", [["user", "passwd", "--help"], ["user", "disable", "--help"],
                                   ["user", "role", "--help"]])
def test_user_change_help_says_that_sessions_end(words, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(words)
    assert "session" in capsys.readouterr().out


def test_user_add_help_says_it_refuses_an_existing_user_and_what_to_use(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["user", "add", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "Refuses a user that exists" in out and "user passwd" in out and "user enable" in out


def test_user_add_refuses_an_existing_user_and_changes_nothing(db, carol, capsys):
    before = user_row(db, "carol")
    audited = audit_count(db)
    capsys.readouterr()
    assert main(["user", "add", "carol", "--role", "admin", "--password",
                 "a replacement password"]) == 2
    err = capsys.readouterr().err
    assert "'carol' already exists" in err
    assert "infoscreen user passwd carol" in err and "infoscreen user enable carol" in err
    after = user_row(db, "carol")
    assert (after.password_hash, after.role, after.disabled_at, after.session_version) == (
        before.password_hash, before.role, before.disabled_at, before.session_version)
    assert audit_count(db) == audited


def test_user_passwd_prints_a_generated_password_once_and_only_it_signs_in(db, carol, capsys):
    capsys.readouterr()
    assert main(["user", "passwd", "carol"]) == 0
    out = capsys.readouterr().out
    assert out.count("store it now") == 1 and "session" in out
    password = out.split("store it now): ")[1].strip()
    assert can_sign_in(db, "carol", password) and not can_sign_in(db, "carol", carol)
    assert user_row(db, "carol").session_version == 1


def test_user_passwd_reads_the_password_from_stdin(db, carol, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("a password from stdin\n"))
    assert main(["user", "passwd", "carol", "--password-stdin"]) == 0
    assert "store it now" not in capsys.readouterr().out
    assert can_sign_in(db, "carol", "a password from stdin")


def test_user_passwd_refuses_a_short_password_and_changes_nothing(db, carol, capsys):
    before = user_row(db, "carol").password_hash
    assert main(["user", "passwd", "carol", "--password", "short"]) == 2
    assert "12 characters" in capsys.readouterr().err
    assert user_row(db, "carol").password_hash == before


def test_user_disable_and_enable(db, carol, capsys):
    assert main(["user", "disable", "carol"]) == 0
    assert not can_sign_in(db, "carol", carol)
    assert "disabled" in run_cli("user", "list", env={"DATABASE_URL": db.url,
                                                      "PATH": "/usr/bin:/bin"}).stdout
    audited = audit_count(db)
    assert main(["user", "disable", "carol"]) == 0  # already: says so, writes nothing
    assert "already disabled" in capsys.readouterr().out and audit_count(db) == audited
    assert main(["user", "enable", "carol"]) == 0
    assert can_sign_in(db, "carol", carol)
    assert "can sign in again" in capsys.readouterr().out


def test_user_role_gives_another_role_and_ends_sessions(db, carol, capsys):
    assert main(["user", "role", "carol", "--role", "admin"]) == 0
    row = user_row(db, "carol")
    assert (row.role, row.session_version) == ("admin", 1)
    assert "has role admin" in capsys.readouterr().out


def test_the_dev_stack_signs_its_admin_in_on_every_start(db):
    # `infoscreen dev` makes its admin on each start: a second start must not be refused.
    from infoscreen.dev import create_admin

    values = {"DATABASE_URL": db.url, "INFOSCREEN_ADMIN_USER": "admin",
              "INFOSCREEN_ADMIN_PASSWORD": "the dev admin's password"}
    create_admin(values)
    create_admin(values)
    assert can_sign_in(db, "admin", "the dev admin's password")


@pytest.mark.parametrize("words", [["passwd", "nobody"], ["disable", "nobody"],
                                   ["enable", "nobody"], ["role", "nobody", "--role", "admin"]])
def test_user_changes_name_an_unknown_user(db, monkeypatch, capsys, words):
    monkeypatch.setenv("DATABASE_URL", db.url)
    assert main(["user", *words]) == 2
    assert "no user 'nobody'" in capsys.readouterr().err
    assert audit_count(db) == 0


def test_token_create_list_and_revoke(db):
    env = {"DATABASE_URL": db.url, "PATH": "/usr/bin:/bin"}
    done = run_cli("token", "create", "--role", "viewer", env=env)
    assert done.returncode == 0, done.stderr
    token = done.stdout.split("store it now): ")[1].strip()
    token_id = token.split("_")[1]
    assert "script-viewer" in run_cli("token", "list", env=env).stdout
    assert run_cli("token", "revoke", token_id, env=env).returncode == 0
    assert "revoked" in run_cli("token", "list", env=env).stdout
    assert token not in run_cli("token", "list", env=env).stdout


def test_a_reading_command_on_a_missing_sqlite_file_says_so_and_creates_nothing(tmp_path):
    missing = tmp_path / "no" / "such" / "folder" / "infoscreen.db"
    for command in (("clients",), ("rejections",), ("user", "list"), ("token", "list")):
        result = run_cli(*command, env={"DATABASE_URL": f"sqlite:///{missing}",
                                        "PATH": "/usr/bin:/bin"})
        assert result.returncode == 1, command
        lines = result.stderr.strip().splitlines()
        assert 1 <= len(lines) <= 3 and "Traceback" not in result.stderr, result.stderr
        assert "infoscreen migrate" in lines[0] and str(missing) in lines[0]
    assert not (tmp_path / "no").exists()


def test_an_unreachable_database_is_one_line_naming_the_host_not_the_password(tmp_path):
    result = run_cli("clients", env={
        "DATABASE_URL": "postgresql+psycopg://bob:sekret-pw@127.0.0.1:1/fleet",
        "PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "127.0.0.1:1/fleet" in line and "sekret-pw" not in line


def test_a_database_that_was_never_migrated_says_what_to_run(tmp_path):
    empty = tmp_path / "empty.db"
    empty.touch()
    result = run_cli("clients", env={"DATABASE_URL": f"sqlite:///{empty}",
                                     "PATH": "/usr/bin:/bin"})
    assert result.returncode == 1 and "not migrated" in result.stderr
    assert "infoscreen migrate" in result.stderr


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("infoscreen 0.")


def test_a_closed_pipe_ends_the_listing_quietly(db):
    from sqlalchemy import insert

    from core.models import Client

    now = datetime.now(UTC)
    with db.sessions() as session, session.begin():
        session.execute(insert(Client), [
            {"uuid": f"00000000-0000-4000-8000-{n:012d}", "hostname": f"screen-{n}",
             "first_seen_at": now, "last_seen_at": now} for n in range(3000)])
    # As `infoscreen clients | head -1`: the reader takes a line and goes away.
    listing = subprocess.Popen([sys.executable, "-m", "infoscreen", "clients"],
                               env={"DATABASE_URL": db.url, "PATH": "/usr/bin:/bin"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = listing.stdout.readline()
    listing.stdout.close()
    errors = listing.stderr.read()
    assert listing.wait(timeout=60) == 0
    assert first.startswith(b"UUID") and errors == b""


def test_device_and_monitor_logins_are_listed_and_removed_by_their_own_verbs(tmp_path, capsys,
                                                                             monkeypatch):
    monkeypatch.setenv("BROKER_DIR", str(tmp_path / "broker"))
    monkeypatch.chdir(tmp_path)
    device = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
    assert main(["device", "add", device]) == 0
    assert main(["monitor", "add", "grafana"]) == 0
    capsys.readouterr()
    assert main(["device", "list"]) == 0
    listed = capsys.readouterr().out
    assert device in listed and "grafana" not in listed and "1 device logins" in listed
    assert main(["monitor", "list"]) == 0
    assert "grafana" in capsys.readouterr().out
    assert main(["device", "remove", "grafana"]) == 2  # a monitor, not a device
    assert "`infoscreen monitor remove`" in capsys.readouterr().err
    assert main(["monitor", "remove", "grafana"]) == 0
    assert main(["device", "remove", device]) == 0
    capsys.readouterr()
    assert main(["device", "list"]) == 0
    assert "0 device logins" in capsys.readouterr().out


def test_user_remove_deletes_the_user_and_is_audited(db, capsys, monkeypatch):
    from sqlalchemy import select

    from core.models import AuditEntry, User

    monkeypatch.setenv("DATABASE_URL", db.url)
    assert main(["user", "add", "olga", "--role", "viewer"]) == 0
    assert main(["user", "remove", "olga"]) == 0
    assert "removed user 'olga'" in capsys.readouterr().out
    assert main(["user", "remove", "olga"]) == 2
    assert "no user 'olga'" in capsys.readouterr().err
    with db.sessions() as session:
        assert session.scalar(select(User).where(User.username == "olga")) is None
        assert "user.remove" in session.scalars(select(AuditEntry.action)).all()
