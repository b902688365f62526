"""The services' MQTT clients get TLS from the settings, in one place (mqtt_client)."""

from __future__ import annotations

import logging
import ssl

import pytest

from core.config import Settings
from mosquitto.certs import init_ca, issue_client
from mqtt_client import service_client, tls_context
from simulator.fleet import device_client_factory
from simulator.loadgen import TlsOptions


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    directory = tmp_path_factory.mktemp("certs")
    init_ca(directory)
    issue_client(directory, "3fa85f64-5717-4562-b3fc-2c963f66afa6")
    return directory


def settings(**values) -> Settings:
    return Settings(mqtt_user="svc", mqtt_password="pw-long-enough", **values)


def test_service_client_speaks_plain_mqtt_when_tls_is_off():
    client = service_client(settings(), "plain")
    assert client._ssl is False and client._ssl_context is None


def test_service_client_speaks_tls_verified_against_the_ca_when_tls_is_on(ca):
    client = service_client(settings(mqtt_tls_enabled=True,
                                     mqtt_tls_ca_cert=str(ca / "ca-bundle.crt")), "tls")
    context = client._ssl_context
    assert client._ssl and context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert len(context.get_ca_certs()) == 1  # our CA, not the system's trust store


def test_without_a_ca_file_the_system_trust_store_verifies_the_broker():
    context = tls_context(settings(mqtt_tls_enabled=True))
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


def test_a_client_certificate_is_loaded(ca):
    uuid = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
    context = tls_context(settings(
        mqtt_tls_enabled=True, mqtt_tls_ca_cert=str(ca / "ca-bundle.crt"),
        mqtt_tls_certfile=str(ca / "clients" / f"{uuid}.crt"),
        mqtt_tls_keyfile=str(ca / "clients" / f"{uuid}.key")))
    assert context is not None  # load_cert_chain would have raised on a mismatch


def test_insecure_skips_only_the_host_name_and_warns_loudly(ca, caplog):
    with caplog.at_level(logging.WARNING, logger="mqtt_client"):
        client = service_client(settings(mqtt_tls_enabled=True, mqtt_tls_insecure=True,
                                         mqtt_tls_ca_cert=str(ca / "ca-bundle.crt")), "insecure")
    context = client._ssl_context
    assert not context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert any(r.levelno == logging.WARNING and "MQTT_TLS_INSECURE" in r.getMessage()
               for r in caplog.records)


def test_simulated_devices_and_the_load_generator_follow_the_tls_settings(ca):
    plain = device_client_factory(settings())("3fa85f64-5717-4562-b3fc-2c963f66afa6", "pw")
    assert plain._ssl is False
    tls_settings = settings(mqtt_tls_enabled=True, mqtt_tls_ca_cert=str(ca / "ca-bundle.crt"))
    factory = device_client_factory(tls_settings)
    first, second = factory("a", "pw"), factory("b", "pw")
    assert first._ssl and first._ssl_context is second._ssl_context  # one context per fleet
    assert TlsOptions.from_settings(settings()) is None
    options = TlsOptions.from_settings(tls_settings)
    assert options == TlsOptions(cafile=str(ca / "ca-bundle.crt"))
    assert options.context("127.0.0.1").verify_mode == ssl.CERT_REQUIRED
