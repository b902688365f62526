"""Settings: read once, validated, with errors that name the variable."""

from __future__ import annotations

import pytest

from core.config import ConfigError, load_settings

STRONG = "x" * 40


def load(env: dict[str, str], tmp_path):
    """Load from `env` alone: an empty dotenv file keeps a developer's .env out of the test."""
    path = tmp_path / "empty.env"
    path.write_text("")
    return load_settings(env, dotenv_path=path)


def test_defaults_give_a_working_development_setup(tmp_path):
    settings = load({}, tmp_path)
    assert settings.database_url.startswith("sqlite:///")
    assert settings.mqtt_topic_prefix == "infoscreen"
    assert settings.listener_flush_ms == 100


def test_the_environment_overrides_the_dotenv_file(tmp_path):
    path = tmp_path / ".env"
    path.write_text("MQTT_PORT=1999\nMQTT_HOST=from-file\n")
    settings = load_settings({"MQTT_PORT": "2000"}, dotenv_path=path)
    assert (settings.mqtt_host, settings.mqtt_port) == ("from-file", 2000)


@pytest.mark.parametrize(
    ("name", "value"),
    [("MQTT_PORT", "70000"), ("MQTT_PORT", "abc"), ("LISTENER_FLUSH_MS", "0"),
     ("DATABASE_URL", "mysql://x"), ("MQTT_TOPIC_PREFIX", "a/b"), ("INFOSCREEN_ENV", "prod"),
     ("LISTENER_SHARED_GROUP", "no spaces")],
)
def test_it_rejects_invalid_values_naming_the_variable(tmp_path, name, value):
    with pytest.raises(ConfigError, match=name):
        load({name: value}, tmp_path)


def test_it_never_repeats_a_secret_in_an_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        load({"DATABASE_URL": "mysql://user:hunter2-secret@db/x"}, tmp_path)
    assert "hunter2" not in str(err.value)


def test_secrets_can_come_from_files(tmp_path):
    secret = tmp_path / "mqtt_password"
    secret.write_text("from-a-docker-secret\n")
    settings = load({"MQTT_PASSWORD_FILE": str(secret)}, tmp_path)
    assert settings.mqtt_password == "from-a-docker-secret"


def test_it_rejects_a_secret_given_twice(tmp_path):
    secret = tmp_path / "s"
    secret.write_text("a")
    with pytest.raises(ConfigError, match="MQTT_PASSWORD and MQTT_PASSWORD_FILE"):
        load({"MQTT_PASSWORD": "b", "MQTT_PASSWORD_FILE": str(secret)}, tmp_path)


def test_it_names_an_unreadable_secret_file(tmp_path):
    with pytest.raises(ConfigError, match="SECRET_KEY_FILE"):
        load({"SECRET_KEY_FILE": str(tmp_path / "missing")}, tmp_path)


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"MQTT_USER": "svc", "SECRET_KEY": STRONG}, "MQTT_PASSWORD"),
        ({"MQTT_USER": "svc", "MQTT_PASSWORD": "changeme", "SECRET_KEY": STRONG}, "MQTT_PASSWORD"),
        ({"MQTT_PASSWORD": STRONG, "SECRET_KEY": STRONG}, "MQTT_USER"),
        ({"MQTT_USER": "svc", "MQTT_PASSWORD": STRONG, "SECRET_KEY": "secret"}, "SECRET_KEY"),
        ({"MQTT_USER": "svc", "MQTT_PASSWORD": STRONG, "SECRET_KEY": "short"}, "SECRET_KEY"),
    ],
)
def test_production_refuses_missing_or_default_secrets(tmp_path, env, complaint):
    with pytest.raises(ConfigError, match=complaint):
        load({"INFOSCREEN_ENV": "production", **env}, tmp_path)


def test_production_starts_with_real_secrets(tmp_path):
    settings = load({"INFOSCREEN_ENV": "production", "MQTT_USER": "svc",
                     "MQTT_PASSWORD": STRONG, "SECRET_KEY": STRONG,
                     "NOTIFY_SECRET_KEY": STRONG}, tmp_path)
    assert settings.is_production


def test_it_names_a_missing_env_file(tmp_path):
    with pytest.raises(ConfigError, match="INFOSCREEN_ENV_FILE"):
        load_settings({"INFOSCREEN_ENV_FILE": str(tmp_path / "nope.env")})


def test_down_must_come_after_stale(tmp_path):
    with pytest.raises(ConfigError, match="HEARTBEAT_DOWN_SECONDS"):
        load({"HEARTBEAT_STALE_SECONDS": "100", "HEARTBEAT_DOWN_SECONDS": "50"}, tmp_path)


def test_every_setting_is_documented_in_env_example():
    from pathlib import Path

    from core.config import SECRET_NAMES, Settings

    text = (Path(__file__).resolve().parent.parent / ".env.example").read_text()
    for field in Settings.model_fields.values():
        assert f"\n{field.alias}=" in text, field.alias
    for name in SECRET_NAMES:
        assert f"{name}_FILE" in text, name


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    from mosquitto.certs import init_ca, issue_client

    directory = tmp_path_factory.mktemp("pki")
    init_ca(directory)
    issued = issue_client(directory, "3fa85f64-5717-4562-b3fc-2c963f66afa6")
    return directory / "ca-bundle.crt", issued.cert_path, issued.key_path


def test_tls_is_off_by_default_and_reads_its_files(tmp_path, pki):
    assert not load({}, tmp_path).mqtt_tls_enabled
    ca, cert, key = pki
    settings = load({"MQTT_TLS_ENABLED": "true", "MQTT_TLS_CA_CERT": str(ca),
                     "MQTT_TLS_CERTFILE": str(cert), "MQTT_TLS_KEYFILE": str(key)}, tmp_path)
    assert settings.mqtt_tls_enabled and settings.mqtt_tls_ca_cert == str(ca)
    assert (settings.mqtt_tls_certfile, settings.mqtt_tls_keyfile) == (str(cert), str(key))


def test_it_rejects_a_ca_file_that_is_not_a_certificate(tmp_path):
    junk = tmp_path / "ca.crt"
    junk.write_text("not a certificate")
    with pytest.raises(ConfigError, match="MQTT_TLS_CA_CERT: not a PEM"):
        load({"MQTT_TLS_ENABLED": "true", "MQTT_TLS_CA_CERT": str(junk)}, tmp_path)


def test_it_rejects_a_key_that_does_not_fit_the_client_certificate(tmp_path, pki):
    from mosquitto.certs import issue_client

    _, cert, _ = pki
    other = issue_client(pki[0].parent, "9b2c1f3e-0d4a-4e7b-8c6f-1a2b3c4d5e6f")
    with pytest.raises(ConfigError, match="MQTT_TLS_CERTFILE/MQTT_TLS_KEYFILE"):
        load({"MQTT_TLS_ENABLED": "true", "MQTT_TLS_CERTFILE": str(cert),
              "MQTT_TLS_KEYFILE": str(other.key_path)}, tmp_path)


@pytest.mark.parametrize("name", ["MQTT_TLS_CA_CERT", "MQTT_TLS_CERTFILE", "MQTT_TLS_KEYFILE"])
def test_it_rejects_a_tls_file_that_does_not_exist(tmp_path, name):
    other = tmp_path / "exists.pem"
    other.write_text("x")
    env = {"MQTT_TLS_ENABLED": "true", "MQTT_TLS_CERTFILE": str(other),
           "MQTT_TLS_KEYFILE": str(other), name: str(tmp_path / "missing.pem")}
    with pytest.raises(ConfigError, match=f"{name}: no such file"):
        load(env, tmp_path)


@pytest.mark.parametrize("given", ["MQTT_TLS_CERTFILE", "MQTT_TLS_KEYFILE"])
def test_it_rejects_a_client_certificate_without_its_key_or_the_other_way(tmp_path, given):
    path = tmp_path / "one.pem"
    path.write_text("x")
    with pytest.raises(ConfigError, match="MQTT_TLS_CERTFILE and MQTT_TLS_KEYFILE"):
        load({"MQTT_TLS_ENABLED": "true", given: str(path)}, tmp_path)


def test_it_rejects_insecure_tls_in_production(tmp_path):
    env = {"INFOSCREEN_ENV": "production", "MQTT_USER": "svc", "MQTT_PASSWORD": STRONG,
           "SECRET_KEY": STRONG, "MQTT_TLS_ENABLED": "true", "MQTT_TLS_INSECURE": "true"}
    with pytest.raises(ConfigError, match="MQTT_TLS_INSECURE.*production"):
        load(env, tmp_path)
    assert load({**env, "INFOSCREEN_ENV": "development"}, tmp_path).mqtt_tls_insecure


@pytest.mark.parametrize(
    ("name", "value"),
    [("MQTT_TLS_ENABLED", "maybe"), ("MQTT_PLAIN_LISTENER", "network"),
     ("BROKER_TLS_PORT", "0"), ("BROKER_MTLS_PORT", "70000")],
)
def test_it_rejects_invalid_tls_and_broker_settings(tmp_path, name, value):
    with pytest.raises(ConfigError, match=name):
        load({name: value}, tmp_path)


def test_default_supported_actions_are_read_as_a_list_and_unknown_names_refused(tmp_path):
    settings = load({"DEFAULT_SUPPORTED_ACTIONS": "shutdown_host, reboot_host"}, tmp_path)
    assert settings.default_supported_actions == ("reboot_host", "shutdown_host")
    with pytest.raises(ConfigError, match="DEFAULT_SUPPORTED_ACTIONS.*unknown action 'dance'"):
        load({"DEFAULT_SUPPORTED_ACTIONS": "reboot_host,dance"}, tmp_path)
