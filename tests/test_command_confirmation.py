"""Power commands from the panels take two steps: the button opens a confirmation page naming
the screen and the action; only its form, with its CSRF token, issues the command. With the
real app, the real broker and both databases."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from core.clock import utc_now
from core.models import AuditEntry, Client, ClientCommand
from core.staff import add_user
from server import create_app
from tests.conftest import make_settings
from tests.helpers import close_web_app

pytestmark = pytest.mark.broker

PASSWORD = "a long enough password"


@pytest.fixture
def app(db, broker):
    app = create_app(make_settings(broker, db.url, SECRET_KEY="k" * 40))
    app.config["TESTING"] = True
    with db.sessions() as session, session.begin():
        now = utc_now()
        for role in ("viewer", "operator", "admin"):
            add_user(session, role, role, PASSWORD, now=now, actor="test")
        session.add(Client(uuid=broker.device_a.username, hostname="hall-display",
                           first_seen_at=now, last_seen_at=now))
    yield app
    close_web_app(app)


@pytest.fixture
def screen(broker) -> str:
    return broker.device_a.username


def signed_in(app, role: str):
    client = app.test_client()
    response = client.post("/api/auth/login", json={"username": role, "password": PASSWORD})
    assert response.status_code == 200
    return client


def csrf_token(page) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))[1]


def issued(db) -> list[tuple[str, str, str]]:
    with db.sessions() as session:
        return [tuple(row) for row in session.execute(
            select(ClientCommand.action, ClientCommand.requested_by, ClientCommand.reason))]


def test_the_client_page_links_to_confirmations_and_sends_nothing_itself(app, screen):
    page = signed_in(app, "operator").get(f"/clients/{screen}").get_data(as_text=True)
    for action in ("restart_app", "reboot_host"):
        assert f'href="/clients/{screen}/commands/{action}"' in page
    assert "commands/shutdown_host" not in page  # admins only


@pytest.mark.parametrize("action, label, question", [
    ("restart_app", "Restart app", "restart the player app on"),
    ("reboot_host", "Reboot", "reboot"),
])
def test_the_confirmation_names_the_screen_and_the_action_and_issues_nothing(
        app, db, screen, action, label, question):
    response = signed_in(app, "operator").get(f"/clients/{screen}/commands/{action}")
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert f"<h1>{label}?</h1>" in text
    assert re.search(rf"Do you want to {question}\s+<b class=\"screen\">hall-display</b>", text)
    assert screen in text
    assert f'<form method="post" action="/clients/{screen}/commands/{action}"' in text
    assert 'name="csrf_token"' in text
    assert issued(db) == []


def test_confirming_issues_the_command_and_says_so_on_the_client_page(app, db, screen):
    client = signed_in(app, "operator")
    page = client.get(f"/clients/{screen}/commands/reboot_host")
    response = client.post(f"/clients/{screen}/commands/reboot_host",
                           data={"csrf_token": csrf_token(page), "reason": "frozen  picture"})
    assert response.status_code == 302
    assert response.headers["Location"] == f"/clients/{screen}#commands"
    assert issued(db) == [("reboot_host", "operator", "frozen picture")]
    with db.sessions() as session:
        assert session.scalar(select(AuditEntry.action).where(
            AuditEntry.action == "command_issued")) == "command_issued"
    shown = client.get(f"/clients/{screen}").get_data(as_text=True)
    assert "Reboot sent to hall-display." in shown


def test_an_empty_reason_gets_the_panel_default(app, db, screen):
    client = signed_in(app, "operator")
    page = client.get(f"/clients/{screen}/commands/restart_app")
    client.post(f"/clients/{screen}/commands/restart_app",
                data={"csrf_token": csrf_token(page), "reason": "  "})
    assert issued(db) == [("restart_app", "operator", "requested in the staff panel")]


def test_a_post_without_the_confirmation_forms_token_issues_nothing(app, db, screen):
    response = signed_in(app, "operator").post(f"/clients/{screen}/commands/restart_app")
    assert response.status_code in (400, 403)
    assert issued(db) == []


def test_a_locked_screen_is_reported_on_the_client_page(app, db, screen):
    client = signed_in(app, "operator")
    token = csrf_token(client.get(f"/clients/{screen}/commands/restart_app"))
    for _ in range(2):
        client.post(f"/clients/{screen}/commands/restart_app", data={"csrf_token": token})
    assert len(issued(db)) == 1
    shown = client.get(f"/clients/{screen}").get_data(as_text=True)
    assert re.search(r"Restart app not sent: client \S+ is locked", shown)


def test_roles_decide_who_may_confirm_what(app, db, screen):
    viewer, operator, admin = (signed_in(app, role) for role in ("viewer", "operator", "admin"))
    assert viewer.get(f"/clients/{screen}/commands/restart_app").status_code == 403
    assert operator.get(f"/clients/{screen}/commands/shutdown_host").status_code == 403
    token = csrf_token(operator.get(f"/clients/{screen}/commands/restart_app"))
    assert operator.post(f"/clients/{screen}/commands/shutdown_host",
                         data={"csrf_token": token}).status_code == 403
    page = admin.get(f"/clients/{screen}/commands/shutdown_host")
    assert "Someone must switch it on again" in page.get_data(as_text=True)
    assert f'href="/clients/{screen}/commands/shutdown_host"' in admin.get(
        f"/clients/{screen}").get_data(as_text=True)
    assert issued(db) == []


def test_unknown_screens_and_actions_are_404(app, screen):
    client = signed_in(app, "admin")
    assert client.get(f"/clients/{screen}/commands/format_disk").status_code == 404
    missing = "00000000-0000-4000-8000-000000000000"
    assert client.get(f"/clients/{missing}/commands/reboot_host").status_code == 404


def test_the_client_page_shows_what_the_screen_can_do_its_tv_and_its_group(app, db, screen):
    from core.models import Group

    with db.sessions() as session, session.begin():
        session.add(Group(id=4, name="Entrance", created_at=utc_now()))
        client = session.get(Client, screen)
        client.unsupported_actions = ["restart_app"]
        client.power_state = {"appliedState": "off", "source": "local_fallback",
                              "result": "error", "detail": "<b>no CEC</b>", "reportedAt": None}
        client.reported_group_id = "hall-3"
    operator = signed_in(app, "operator")
    page = operator.get(f"/clients/{screen}").get_data(as_text=True)
    assert "commands/restart_app" not in page and "commands/reboot_host" in page
    assert "reboot_host, shutdown_host" in page and "(from learned)" in page
    assert "off (standby)" in page and "&lt;b&gt;no CEC&lt;/b&gt;" in page
    assert "the screen reports hall-3" in page
    form = operator.get(f"/clients/{screen}")
    moved = operator.post(f"/clients/{screen}/group",
                          data={"group_id": "4", "csrf_token": csrf_token(form)})
    assert moved.status_code == 302
    with db.sessions() as session:
        assert session.get(Client, screen).group_id == 4
    fleet = operator.get("/?groupId=4").get_data(as_text=True)
    assert "<td>Entrance</td>" in fleet and "1 screens" in fleet
    assert "No screens match." in operator.get("/?groupId=5").get_data(as_text=True)
    bad = operator.post(f"/clients/{screen}/group",
                        data={"group_id": "x", "csrf_token": csrf_token(form)})
    assert bad.status_code == 400
    viewer = signed_in(app, "viewer")
    assert "Set group" not in viewer.get(f"/clients/{screen}").get_data(as_text=True)
    assert viewer.post(f"/clients/{screen}/group", data={"group_id": ""}).status_code in (
        400, 403)
