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
    assert set(COMPOSE["services"]) == {"postgres", "mosquitto", "caddy", *APP}


def test_app_services_run_the_infoscreen_commands_in_production_mode():
    commands = {name: COMPOSE["services"][name]["command"][0] for name in APP}
    assert commands == {"migrate": "migrate", "server": "serve", "listener": "listener",
                        "scheduler": "scheduler"}
    for name in APP:
        env = COMPOSE["services"][name]["environment"]
        assert env["INFOSCREEN_ENV"] == "production"
        assert "MQTT_PASSWORD" not in env and "DATABASE_URL" not in env  # only *_FILE
        assert env["MQTT_PASSWORD_FILE"].startswith("/run/secrets/")
        # Every secret file a service reads is one compose mounts (production refuses to
        # start without NOTIFY_SECRET_KEY, for one).
        for variable, path in env.items():
            if variable.endswith("_FILE") and path.startswith("/run/secrets/"):
                assert path.removeprefix("/run/secrets/") in COMPOSE["services"][name]["secrets"]
        assert env["NOTIFY_SECRET_KEY_FILE"] == "/run/secrets/notify_secret_key"


def test_services_start_in_order_and_report_health():
    services = COMPOSE["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("server", "listener", "scheduler"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["mosquitto"]["condition"] == "service_healthy"
    for name in ("postgres", "mosquitto", "server", "listener"):
        assert "healthcheck" in services[name], name


def test_the_broker_files_are_mounted_read_only_and_only_tls_leaves_loopback():
    broker = COMPOSE["services"]["mosquitto"]
    # mosquitto.conf, passwd, acl and certs/ live in this folder.
    assert "./var/compose/broker:/mosquitto/broker:ro" in broker["volumes"]
    assert "/dev/null:/mosquitto/broker/certs/ca.key:ro" in broker["volumes"]  # CA key stays
    for volume in broker["volumes"]:
        if volume.startswith("./"):
            assert volume.endswith(":ro"), volume
    assert broker["ports"] == ["8883:8883"]  # the TLS listener, for devices on the network
    for name, service in COMPOSE["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:") or port == "8883:8883" or (
                name == "caddy" and port in ("80:80", "443:443")), name


def test_app_services_talk_tls_to_the_broker_and_trust_the_mounted_ca_bundle():
    for name in APP:
        service = COMPOSE["services"][name]
        env = service["environment"]
        # The services' listener, which devices cannot log in on; not published.
        assert env["MQTT_TLS_ENABLED"] == "true" and env["MQTT_PORT"] == "8885"
        assert env["MQTT_HOST"] == "mosquitto"
        assert "MQTT_TLS_INSECURE" not in env
        mounts = {v.split(":")[1]: v for v in service["volumes"]}
        bundle = mounts[env["MQTT_TLS_CA_CERT"]]
        assert bundle == f"./var/compose/broker/certs/ca-bundle.crt:{env['MQTT_TLS_CA_CERT']}:ro"
        assert not any("ca.key" in v or v.endswith("/certs:ro") for v in service["volumes"])


def test_the_broker_image_builds_the_plugin_the_config_names():
    broker = COMPOSE["services"]["mosquitto"]
    assert broker["build"] == {"context": ".", "dockerfile": "mosquitto/Dockerfile"}
    dockerfile = (ROOT / "mosquitto/Dockerfile").read_text()
    assert "FROM eclipse-mosquitto:2.0" in dockerfile
    assert "COPY mosquitto/guard/infoscreen_guard.c" in dockerfile
    assert "/mosquitto/plugins/infoscreen_guard.so" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "mosquitto" not in ignored and "mosquitto/guard" not in ignored


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
    for service in COMPOSE["services"].values():
        for volume in service.get("volumes", []):
            if volume.startswith("./deploy/"):  # shipped with the project
                assert (ROOT / volume.split(":")[0]).exists(), volume
            elif volume.startswith("./"):
                assert (tmp_path / volume.split(":")[0]).exists(), volume
    conf = (tmp_path / "var/compose/broker/mosquitto.conf").read_text()
    assert "password_file /mosquitto/broker/passwd\n" in conf
    assert "password_file /mosquitto/broker/passwd-services\n" in conf
    assert "listener 8883 0.0.0.0" in conf and "allow_anonymous false" in conf
    assert "listener 8885 0.0.0.0" in conf
    # The devices' listener: client id = username, and the plugin the image builds.
    assert "use_username_as_clientid true" in conf
    assert "plugin /mosquitto/plugins/infoscreen_guard.so" in conf
    assert "max_packet_size 4194304" in conf and "max_queued_bytes 1073741824" in conf
    assert "certfile /mosquitto/broker/certs/server.crt" in conf
    assert "cafile /mosquitto/broker/certs/ca-bundle.crt" in conf
    assert "tls_version tlsv1.2" in conf
    assert "listener 1883" not in conf  # no plain listener
    assert "pid_file /mosquitto/broker/data/mosquitto.pid" in conf  # not in the read-only mount
    first = (tmp_path / "var/compose/secrets/mqtt_password").read_text()
    assert main(["compose", "init"]) == 0  # again: secrets are kept
    assert (tmp_path / "var/compose/secrets/mqtt_password").read_text() == first
    assert os.stat(tmp_path / "var/compose/broker/passwd").st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "var/compose/broker/certs/server.key").st_mode & 0o777 == 0o600


def test_compose_init_issues_the_server_certificate_for_the_names_devices_use(tmp_path,
                                                                              monkeypatch):
    from mosquitto.certs import load_cert, san_strings

    monkeypatch.chdir(tmp_path)
    server = tmp_path / "var/compose/broker/certs/server.crt"
    assert main(["compose", "init", "--dns", "broker.example.org"]) == 0
    assert {"mosquitto", "localhost", "broker.example.org", "127.0.0.1"} <= set(
        san_strings(load_cert(server)))
    ca = (tmp_path / "var/compose/broker/certs/ca.crt").read_bytes()
    assert main(["compose", "init", "--ip", "192.0.2.10"]) == 0  # a name is never dropped
    assert {"broker.example.org", "192.0.2.10"} <= set(san_strings(load_cert(server)))
    assert (tmp_path / "var/compose/broker/certs/ca.crt").read_bytes() == ca  # the CA stays


def test_compose_init_can_add_a_mutual_tls_listener(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["compose", "init", "--mtls-port", "8884"]) == 0
    conf = (tmp_path / "var/compose/broker/mosquitto.conf").read_text()
    assert "listener 8884 0.0.0.0" in conf and "require_certificate true" in conf


def test_the_listener_stores_screenshots_where_the_server_reads_them():
    services = COMPOSE["services"]
    folder = "./var/compose/screenshots:/var/lib/infoscreen/screenshots"
    assert folder in services["listener"]["volumes"]
    assert f"{folder}:ro" in services["server"]["volumes"]
    for name in ("listener", "server"):
        env = services[name]["environment"]
        assert env["SCREENSHOT_DIR"] == "/var/lib/infoscreen/screenshots"
        assert "./var/compose/broker/certs/ca-bundle.crt:/run/infoscreen/ca-bundle.crt:ro" in \
            services[name]["volumes"]


def test_https_in_front_of_the_panels_with_the_proxy_trusted_once():
    caddy = COMPOSE["services"]["caddy"]
    assert "443:443" in caddy["ports"]
    assert caddy["depends_on"]["server"]["condition"] == "service_healthy"
    mount = next(v for v in caddy["volumes"] if v.endswith(":/etc/caddy/Caddyfile:ro"))
    caddyfile = (ROOT / mount.split(":")[0]).read_text()
    assert "reverse_proxy server:8080" in caddyfile
    assert COMPOSE["services"]["server"]["environment"]["TRUSTED_PROXIES"] == "1"


def test_compose_init_says_how_to_create_the_first_admin_and_that_command_parses(
        tmp_path, monkeypatch, capsys):
    from infoscreen.cli import build_parser
    from infoscreen.compose import FIRST_ADMIN

    monkeypatch.chdir(tmp_path)
    assert main(["compose", "init"]) == 0
    assert FIRST_ADMIN in capsys.readouterr().out
    words = FIRST_ADMIN.split()
    assert words[:5] == ["docker", "compose", "run", "--rm", "server"]
    args = build_parser().parse_args(words[5:])  # what the image's `infoscreen` gets
    assert (args.command, args.name, args.role) == ("user", "admin", "admin")
