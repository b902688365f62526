"""docker-compose.yml, checked as far as it can be without a Docker engine."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from infoscreen.cli import main

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
APP = ("migrate", "server", "listener", "scheduler")


def test_it_has_the_production_services():
    assert set(COMPOSE["services"]) == {"postgres", "mosquitto", *APP}


def test_app_services_run_the_infoscreen_commands_in_production_mode():
    commands = {name: COMPOSE["services"][name]["command"][0] for name in APP}
    assert commands == {"migrate": "migrate", "server": "serve", "listener": "listener",
                        "scheduler": "scheduler"}
    for name in APP:
        env = COMPOSE["services"][name]["environment"]
        assert env["INFOSCREEN_ENV"] == "production"
        assert "MQTT_PASSWORD" not in env and "DATABASE_URL" not in env  # only *_FILE
        assert env["MQTT_PASSWORD_FILE"].startswith("/run/secrets/")


def test_services_start_in_order_and_report_health():
    services = COMPOSE["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("server", "listener", "scheduler"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["mosquitto"]["condition"] == "service_healthy"
    for name in ("postgres", "mosquitto", "server", "listener"):
        assert "healthcheck" in services[name], name


def test_the_broker_files_are_mounted_read_only_and_ports_stay_on_loopback():
    broker = COMPOSE["services"]["mosquitto"]
    assert "./var/compose/broker:/mosquitto/broker:ro" in broker["volumes"]
    for name, service in COMPOSE["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), name


def test_the_commands_the_services_run_exist(capsys):
    for name in APP:
        command = COMPOSE["services"][name]["command"]
        try:
            main([*command, "--help"])
        except SystemExit as done:
            assert done.code == 0, name


def test_compose_init_writes_every_mounted_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["compose", "init"]) == 0
    for secret in COMPOSE["secrets"].values():
        path = tmp_path / secret["file"]
        assert path.exists() and path.stat().st_mode & 0o777 == 0o600, path
    conf = (tmp_path / "var/compose/broker/mosquitto.conf").read_text()
    assert "password_file /mosquitto/broker/passwd" in conf
    assert "listener 1883 0.0.0.0" in conf and "allow_anonymous false" in conf
    assert "pid_file /mosquitto/broker/data/mosquitto.pid" in conf  # not in the read-only mount
    first = (tmp_path / "var/compose/secrets/mqtt_password").read_text()
    assert main(["compose", "init"]) == 0  # again: secrets are kept
    assert (tmp_path / "var/compose/secrets/mqtt_password").read_text() == first
    assert os.stat(tmp_path / "var/compose/broker/passwd").st_mode & 0o777 == 0o600
