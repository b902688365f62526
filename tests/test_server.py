"""The web server's skeleton: the app factory and its health check."""

from __future__ import annotations

from core.config import Settings
from server import create_app


def test_healthz_answers_ok_when_the_database_answers(db):
    app = create_app(Settings.model_validate({"DATABASE_URL": db.url, "SECRET_KEY": "k" * 40}))
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}


def test_healthz_answers_503_when_the_database_is_unreachable():
    url = "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1"
    app = create_app(Settings.model_validate({"DATABASE_URL": url}))
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["database"] == "unreachable"


def test_unknown_routes_get_the_json_error_shape(db):
    app = create_app(Settings.model_validate({"DATABASE_URL": db.url}))
    response = app.test_client().get("/nope")
    assert response.status_code == 404
    assert response.get_json()["error"] == "Not Found"


def test_a_relative_sqlite_path_means_the_same_file_for_every_process(tmp_path, monkeypatch):
    from migrations import runner as migrate

    monkeypatch.chdir(tmp_path)
    migrate.upgrade("sqlite:///var/relative.db")
    app = create_app(Settings.model_validate({"DATABASE_URL": "sqlite:///var/relative.db"}))
    assert app.test_client().get("/healthz").status_code == 200
    assert (tmp_path / "var" / "relative.db").exists()
