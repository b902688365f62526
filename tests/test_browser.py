"""The staff panels in a real browser: Debian's Chromium driven by Playwright.

A real HTTP server serves the app; a listener stores what a device publishes through the
real broker; the panel has to show it without a reload.
"""

from __future__ import annotations

import json
import shutil
import threading
import uuid as uuidlib
from pathlib import Path

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from core.clock import utc_now
from core.models import Client, ClientCommand
from core.staff import add_user
from server import create_app
from tests.conftest import RunningListener, make_settings
from tests.helpers import free_port

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = [pytest.mark.broker, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps trying to reach the internet.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
PASSWORD = "a long enough password"
UNIT = "<img src=x onerror=alert(1)>"


@pytest.fixture
def site(db, broker):
    settings = make_settings(broker, db.url, SECRET_KEY="k" * 40, PANEL_REFRESH_SECONDS=1)
    with db.sessions() as session, session.begin():
        add_user(session, "olga", "operator", PASSWORD, now=utc_now(), actor="test")
        add_user(session, "victor", "viewer", PASSWORD, now=utc_now(), actor="test")
    server = make_server("127.0.0.1", free_port(), create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    listener = RunningListener(settings, f"browser-{uuidlib.uuid4().hex[:6]}")
    yield f"http://127.0.0.1:{server.server_port}", listener
    listener.stop()
    server.shutdown()


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run scripts/bootstrap.sh --tests")
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def sign_in(browser, base: str, username: str):
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(f"{base}/")
    assert page.url.startswith(f"{base}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
    return page, dialogs


def test_an_operator_sees_an_alert_arrive_acknowledges_it_and_it_stays_gone(
    site, browser, broker, publish_as
):
    base, listener = site
    device = broker.device_a.username
    page, dialogs = sign_in(browser, base, "olga")
    expect = playwright.expect
    panel = page.locator("#service-failed")
    expect(panel).to_be_hidden()

    publish_as(broker.device_a).publish(
        f"infoscreen/{device}/service_failed",
        {"unit": UNIT, "failed_at": "2026-11-24T11:00:00Z", "exit_code": 1}, retain=True)
    row = panel.locator(f'tr[data-uuid="{device}"]')
    expect(row).to_be_visible(timeout=15_000)  # no reload: the panel refreshes itself
    expect(row).to_contain_text(UNIT)  # device text shown as text, not markup
    assert page.locator("#service-failed img").count() == 0 and dialogs == []
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)

    row.locator("button.ack").click()
    expect(row).to_have_count(0, timeout=10_000)
    expect(panel).to_be_hidden()

    listener.stop()
    listener.start()  # the retained report was cleared: a restarted listener raises nothing
    page.reload()
    for _ in range(2):  # two refreshes of the panel, and still nothing to show
        with page.expect_response(lambda r: r.url.endswith("/api/clients/service_failed")):
            pass
    expect(panel).to_be_hidden()

    page.click(f'a[href="/clients/{device}"]')
    expect(page.locator("h1")).to_be_visible()
    expect(page.locator("body")).to_contain_text("service_failed_acknowledged")
    expect(page.locator("#activity svg")).to_be_visible()  # the heartbeat and online chart
    expect(page.locator("#activity figcaption")).to_contain_text("of the last 24 h")
    page.screenshot(path=str(ARTIFACTS / "client-detail.png"), full_page=True)


def test_a_viewer_gets_no_acknowledge_button_and_the_api_refuses_them(
    site, browser, broker, publish_as
):
    base, _ = site
    device = broker.device_b.username
    publish_as(broker.device_b).publish(
        f"infoscreen/{device}/service_failed",
        {"unit": "player.service", "failed_at": "2026-11-24T11:00:00Z"}, retain=True)
    page, _ = sign_in(browser, base, "victor")
    row = page.locator(f'#service-failed tr[data-uuid="{device}"]')
    playwright.expect(row).to_be_visible(timeout=15_000)
    assert row.locator("button").count() == 0
    status = page.evaluate(
        """async (uuid) => (await fetch(`/api/clients/${uuid}/clear_service_failed`, {
               method: "POST", credentials: "same-origin",
               headers: {"X-CSRFToken": document.querySelector('meta[name="csrf-token"]').content}
           })).status""",
        device,
    )
    assert status == 403


class AckingScreen:
    """Device B answering every command with accepted, execution_started, completed."""

    def __init__(self, broker):
        self.uuid = broker.device_b.username
        self.client = broker.client(broker.device_b)
        self.client.on_message = self.on_message
        self.client.connect(broker.host, broker.port_for(broker.device_b))
        self.client.subscribe(f"infoscreen/{self.uuid}/commands", qos=1)
        self.client.loop_start()

    def on_message(self, client, userdata, message):
        command_id = json.loads(message.payload)["command_id"]
        for status in ("accepted", "execution_started", "completed"):
            client.publish(f"infoscreen/{self.uuid}/commands/ack",
                           json.dumps({"command_id": command_id, "status": status}), qos=1)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def test_an_operator_restarts_the_app_and_watches_the_command_complete(site, browser, broker):
    base, _ = site
    screen = AckingScreen(broker)
    try:
        # From the screen's own connection: a second one with its login would take it over.
        screen.client.publish(f"infoscreen/{screen.uuid}/heartbeat", "{}",
                              qos=1).wait_for_publish(timeout=5)
        page, _ = sign_in(browser, base, "olga")
        page.goto(f"{base}/clients/{screen.uuid}")
        panel = page.locator("#commands")
        assert panel.locator('[data-action="shutdown_host"]').count() == 0  # admin only
        panel.locator('a[data-action="restart_app"]').click()
        page.locator("form.confirm-command button.confirm").click()
        page.wait_for_url(f"{base}/clients/{screen.uuid}#commands")
        row = panel.locator("tbody tr[data-command]")
        playwright.expect(row).to_have_count(1, timeout=10_000)
        playwright.expect(row.locator("td.state")).to_have_text("completed", timeout=15_000)
        panel.locator('a[data-action="restart_app"]').click()  # inside the lockout
        page.locator("form.confirm-command button.confirm").click()
        playwright.expect(panel.locator(".flash.error")).to_contain_text("is locked")
        page.screenshot(path=str(ARTIFACTS / "client-commands.png"), full_page=True)
    finally:
        screen.close()


def add_screen(db, uuid: str, hostname: str) -> None:
    with db.sessions() as session, session.begin():
        now = utc_now()
        session.add(Client(uuid=uuid, hostname=hostname, first_seen_at=now, last_seen_at=now))


def commands_in_database(db) -> list[tuple[str, str]]:
    with db.sessions() as session:
        return [tuple(r) for r in session.execute(
            select(ClientCommand.action, ClientCommand.requested_by))]


def test_a_reboot_needs_its_confirmation_and_cancelling_sends_nothing(site, browser, broker, db):
    base, _ = site
    uuid = broker.device_b.username
    add_screen(db, uuid, "foyer-display")
    page, dialogs = sign_in(browser, base, "olga")
    page.goto(f"{base}/clients/{uuid}")
    reboot = page.locator('#commands a[data-action="reboot_host"]')

    reboot.click()  # one click only opens the confirmation
    page.wait_for_url(f"{base}/clients/{uuid}/commands/reboot_host")
    form = page.locator("form.confirm-command")
    playwright.expect(form.locator("h1")).to_have_text("Reboot?")
    playwright.expect(form.locator(".question")).to_contain_text("reboot foyer-display")
    playwright.expect(form).to_contain_text(uuid)
    page.screenshot(path=str(ARTIFACTS / "confirm-reboot.png"), full_page=True)
    form.locator("a.cancel").click()
    page.wait_for_url(f"{base}/clients/{uuid}#commands")
    assert commands_in_database(db) == []

    reboot.click()
    form.locator("input[name=reason]").fill("frozen picture")
    form.locator("button.confirm").click()
    page.wait_for_url(f"{base}/clients/{uuid}#commands")
    playwright.expect(page.locator("#commands .flash.notice")).to_have_text(
        "Reboot sent to foyer-display.")
    assert commands_in_database(db) == [("reboot_host", "olga")]
    items = page.evaluate(
        """async (uuid) => (await (await fetch(`/api/clients/${uuid}/commands`)).json()).items""",
        uuid)
    assert [(c["action"], c["reason"]) for c in items] == [("reboot_host", "frozen picture")]
    playwright.expect(page.locator("#commands tbody tr[data-command]")).to_have_count(1)
    assert dialogs == []  # no window.confirm any more


# Gathers what the browser reports as Content-Security-Policy violations; an init script runs
# before the page's own and is not itself subject to the policy.
CSP_WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


def test_the_panels_work_under_the_csp_with_no_violations(site, browser, broker, db):
    base, _ = site
    uuid = broker.device_b.username
    add_screen(db, uuid, "foyer-display")
    context = browser.new_context()
    context.add_init_script(CSP_WATCH)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))

    response = page.goto(f"{base}/login")
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    page.fill("input[name=username]", "olga")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
    seen = {"/login": []}

    def visit(path: str, api_call: str | None) -> None:
        if api_call:  # the page's own script ran and fetched its panel's data
            with page.expect_response(lambda r: api_call in r.url, timeout=10_000):
                page.goto(f"{base}{path}")
        else:
            page.goto(f"{base}{path}")
        playwright.expect(page.locator("main")).to_be_visible()
        seen[path] = page.evaluate("() => window.__cspViolations")

    visit("/", "/api/clients/service_failed")
    visit(f"/clients/{uuid}", f"/api/clients/{uuid}/commands")
    playwright.expect(page.locator("#activity svg")).to_be_visible()
    visit(f"/clients/{uuid}/commands/restart_app", None)
    visit("/events", None)
    assert {path: v for path, v in seen.items() if v} == {}
    assert [text for text in console if "Content Security Policy" in text] == []

    # The watch itself works: an inline handler is refused and reported.
    page.evaluate("""() => { const b = document.createElement("button");
                             b.setAttribute("onclick", "window.__inline = true");
                             document.body.append(b); b.click(); }""")
    page.wait_for_function("() => window.__cspViolations.length > 0", timeout=5_000)
    assert page.evaluate("() => window.__inline") is None
    context.close()
