"""Sign-in throttling on shared storage: the database-backed counters on their own, two app
instances sharing one database, and the real server with two gunicorn workers; on both
databases. Also ProxyFix: X-Forwarded-For counts only behind TRUSTED_PROXIES."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.clock import utc_now
from core.staff import add_user
from server.ratelimit_storage import DatabaseStorage, stored_key
from tests.helpers import free_port, make_web_app, wait_until, web_up

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "a long enough password"
START = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime = START):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def storage(db):
    clock = FakeClock()
    return DatabaseStorage(engine=lambda: db.engine, clock=clock), clock


# The storage on its own -------------------------------------------------------------------


def test_a_window_counts_up_and_says_when_it_ends(storage):
    counters, _ = storage
    assert [counters.incr("k", 60) for _ in range(3)] == [1, 2, 3]
    assert counters.incr("k", 60, amount=2) == 5
    assert counters.get("k") == 5 and counters.get("other") == 0
    assert counters.get_expiry("k") == (START + timedelta(seconds=60)).timestamp()


def test_an_expired_window_counts_as_nothing_and_restarts_on_the_next_hit(storage):
    counters, clock = storage
    counters.incr("k", 60)
    counters.incr("k", 60)
    clock.now = START + timedelta(seconds=60)
    assert counters.get("k") == 0
    assert counters.get_expiry("k") == clock.now.timestamp()
    assert counters.incr("k", 60) == 1
    assert counters.get_expiry("k") == (clock.now + timedelta(seconds=60)).timestamp()


def test_clear_and_reset_forget_counts(storage):
    counters, _ = storage
    counters.incr("a", 60)
    counters.incr("b", 60)
    counters.clear("a")
    assert (counters.get("a"), counters.get("b")) == (0, 1)
    assert counters.reset() == 1
    assert counters.get("b") == 0
    assert counters.check() is True


def test_an_overlong_key_is_stored_as_its_digest(storage):
    counters, _ = storage
    key = "LIMITER/" + "x" * 400
    assert counters.incr(key, 60) == 1 and counters.incr(key, 60) == 2
    assert stored_key(key).startswith("sha256:") and len(stored_key(key)) <= 255


def test_concurrent_hits_are_each_counted_once(storage):
    counters, _ = storage
    with ThreadPoolExecutor(8) as pool:
        counts = list(pool.map(lambda _: counters.incr("busy", 60), range(80)))
    assert sorted(counts) == list(range(1, 81))


# The limits in the app ---------------------------------------------------------------------


@pytest.fixture
def users(db):
    with db.sessions() as session, session.begin():
        for name in ("admin", "olga"):
            add_user(session, name, "operator", PASSWORD, now=utc_now(), actor="test")


def json_sign_in(client, username: str, password: str = PASSWORD, **kwargs):
    return client.post("/api/auth/login", json={"username": username, "password": password},
                       **kwargs)


def form_sign_in(client, username: str, password: str = PASSWORD):
    page = client.get("/login")
    token = re.search(rb'name="csrf_token" value="([^"]+)"', page.data).group(1).decode()
    return client.post("/login", data={"username": username, "password": password,
                                       "csrf_token": token})


def test_two_app_instances_share_the_budget_and_spare_other_users(db, users):
    clients = [make_web_app(db.url).test_client(), make_web_app(db.url).test_client()]
    codes = [json_sign_in(clients[n % 2], "admin", "wrong").status_code for n in range(15)]
    assert codes == [401] * 10 + [429] * 5
    # The right password waits too: the account's budget is spent.
    assert json_sign_in(clients[0], "admin").status_code == 429
    # A colleague at the same address signs in meanwhile, on either instance.
    assert json_sign_in(clients[1], "olga").status_code == 200


def test_the_form_and_the_api_share_one_budget(db, users):
    client = make_web_app(db.url, SIGN_IN_LIMIT_PER_ACCOUNT="4 per minute").test_client()
    assert [form_sign_in(client, "admin", "wrong").status_code for _ in range(2)] == [401] * 2
    assert [json_sign_in(client, "admin", "wrong").status_code for _ in range(2)] == [401] * 2
    form = form_sign_in(client, "admin")
    assert form.status_code == 429
    assert re.search(rb"Too many sign-in attempts; try again in \d+ seconds", form.data)
    assert json_sign_in(client, "admin").status_code == 429


def test_a_refusal_says_when_to_retry(db, users):
    client = make_web_app(db.url, SIGN_IN_LIMIT_PER_ACCOUNT="1 per minute").test_client()
    json_sign_in(client, "admin", "wrong")
    response = json_sign_in(client, "admin", "wrong")
    assert response.status_code == 429
    wait = int(response.headers["Retry-After"])
    assert 1 <= wait <= 60
    body = response.get_json()
    assert body["error"] == "Too Many Requests"
    assert body["message"] == f"Too many sign-in attempts; try again in {wait} seconds."


def test_the_address_wide_limit_stops_guessing_across_accounts(db, users):
    client = make_web_app(db.url, SIGN_IN_LIMIT_PER_ADDRESS="3 per minute").test_client()
    codes = [json_sign_in(client, name, "wrong").status_code
             for name in ("u1", "u2", "u3", "olga")]
    assert codes == [401, 401, 401, 429]
    elsewhere = {"REMOTE_ADDR": "192.0.2.10"}
    assert json_sign_in(client, "olga", environ_base=elsewhere).status_code == 200


@pytest.mark.parametrize("proxies", [0, 1])
def test_forwarded_for_counts_only_behind_trusted_proxies(db, users, proxies):
    client = make_web_app(db.url, SIGN_IN_LIMIT_PER_ADDRESS="2 per minute",
                      TRUSTED_PROXIES=proxies).test_client()

    def attempt(username: str, forwarded_for: str) -> int:
        return json_sign_in(client, username, "wrong",
                            headers={"X-Forwarded-For": forwarded_for}).status_code

    assert [attempt("u1", "203.0.113.7"), attempt("u2", "203.0.113.7")] == [401, 401]
    # Another client behind the proxy has a budget of its own; without a trusted proxy the
    # header is anyone's to forge, and the peer's address is all that counts.
    assert attempt("u3", "203.0.113.8") == (401 if proxies else 429)


def test_a_bad_limit_setting_is_refused(tmp_path):
    from core.config import ConfigError, load_settings

    (tmp_path / "empty.env").write_text("")
    with pytest.raises(ConfigError, match="SIGN_IN_LIMIT_PER_ACCOUNT: .*'10 per minute'"):
        load_settings({"SIGN_IN_LIMIT_PER_ACCOUNT": "often"}, dotenv_path=tmp_path / "empty.env")


# The real server: gunicorn with two workers ------------------------------------------------


@pytest.fixture
def gunicorn(db, tmp_path):
    """`infoscreen serve` with two workers; the access log names the worker (pid) of each
    request."""
    port = free_port()
    (tmp_path / "empty.env").write_text("")
    env = {**os.environ, "DATABASE_URL": db.url, "SECRET_KEY": "k" * 40,
           "INFOSCREEN_ENV_FILE": str(tmp_path / "empty.env"), "LOG_LEVEL": "WARNING",
           "GUNICORN_CMD_ARGS": "--access-logformat 'pid=%(p)s %(r)s %(s)s'"}
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "infoscreen", "serve", "--workers", "2",
             "--bind", f"127.0.0.1:{port}"], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    try:
        wait_until(lambda: web_up(base), timeout=30, message="gunicorn answering /healthz")
        yield base, log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def post_json(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


@pytest.mark.slow
def test_fifteen_wrong_passwords_are_throttled_across_gunicorn_workers(db, users, gunicorn):
    base, log = gunicorn
    wrong = b'{"username": "admin", "password": "wrong"}'
    with ThreadPoolExecutor(15) as pool:  # at once, so that both workers take some
        answers = list(pool.map(lambda _: post_json(f"{base}/api/auth/login", wrong), range(15)))
    assert sorted(code for code, _ in answers) == [401] * 10 + [429] * 5
    assert all(1 <= int(headers["Retry-After"]) <= 60
               for code, headers in answers if code == 429)
    right = f'{{"username": "olga", "password": "{PASSWORD}"}}'.encode()
    assert post_json(f"{base}/api/auth/login", right)[0] == 200

    def sign_in_lines() -> list[str]:
        return re.findall(r"pid=<?(\d+)>? POST /api/auth/login", log.read_text())

    lines = wait_until(lambda: len(sign_in_lines()) == 16 and sign_in_lines(),
                       timeout=10, message="16 sign-ins in the access log")
    assert len(set(lines)) == 2, "one worker answered every request: nothing was shared"
