"""The simulator's devices and the load generator over TLS, against a TLS-only broker."""

from __future__ import annotations

import subprocess
import threading

import pytest

from core.config import Settings
from infoscreen.dev import find_mosquitto
from mosquitto import certs
from mosquitto.accounts import AccountStore, generate_password
from mosquitto.config import BrokerConfig, Listener, tls_files, write_config
from simulator import loadgen
from simulator.fleet import Fleet, device_client_factory
from simulator.options import DeviceOptions
from tests.helpers import free_port, wait_until

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]
DEVICE = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls-broker")
    store = certs.CertStore.in_broker_dir(directory)
    certs.init_ca(store.directory)
    certs.issue_server(store.directory, dns_names=["localhost"], ips=["127.0.0.1"])
    logins = {"loadgen": generate_password(), DEVICE: generate_password()}
    AccountStore(directory).add_many([("loadgen", "simulator", logins["loadgen"]),
                                      (DEVICE, "device", logins[DEVICE])])
    port, device_port, files = free_port(), free_port(), tls_files(store.directory)
    config = BrokerConfig(directory, (
        Listener(port, "127.0.0.1", "tests: TLS, services", tls=files, services=True),
        Listener(device_port, "127.0.0.1", "tests: TLS, devices", tls=files),
    ), log_dest=f"file {directory / 'mosquitto.log'}")
    write_config(config)
    process = subprocess.Popen([find_mosquitto(), "-c", str(config.conf_file)])
    settings = Settings(mqtt_host="127.0.0.1", mqtt_port=port, mqtt_tls_enabled=True,
                        mqtt_tls_ca_cert=str(store.bundle))
    try:
        # The load generator logs in on the services' port, a device on the devices'.
        yield settings, settings.model_copy(update={"mqtt_port": device_port}), logins
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_load_generator_publishes_over_tls(tls_broker):
    settings, _, logins = tls_broker

    def run():
        return loadgen.run_load(
            settings.mqtt_host, settings.mqtt_port, "loadgen", logins["loadgen"],
            prefix="infoscreen", client_ids=loadgen.client_ids(50, "tls"), rate=500,
            duration=0.5, qos=1, connections=1, tls=loadgen.TlsOptions.from_settings(settings))

    result = wait_until(lambda: _try(run), timeout=15, message="a TLS load run")
    assert result.sent >= 200 and result.acked == result.sent and result.rejected == 0


def test_the_load_generator_refuses_a_broker_it_cannot_verify(tls_broker, tmp_path):
    settings, _, logins = tls_broker
    other = tmp_path / "other-ca"
    certs.init_ca(other)
    with pytest.raises(loadgen.LoadError, match="CERTIFICATE_VERIFY_FAILED"):
        loadgen.run_load(
            settings.mqtt_host, settings.mqtt_port, "loadgen", logins["loadgen"],
            prefix="infoscreen", client_ids=loadgen.client_ids(2), rate=10, duration=0.2,
            qos=1, connections=1, tls=loadgen.TlsOptions(cafile=str(other / "ca-bundle.crt")))


def test_a_simulated_device_connects_over_tls(tls_broker):
    _, settings, logins = tls_broker
    fleet = Fleet.create(settings.mqtt_topic_prefix, [(DEVICE, logins[DEVICE])],
                         DeviceOptions(seed=1), client_factory=device_client_factory(settings))
    stop = threading.Event()
    fleet.start(settings)
    thread = threading.Thread(target=fleet.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_until(lambda: fleet.connected_count() == 1, timeout=15,
                   message="the device to connect over TLS")
        assert fleet.links[0].sock.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        stop.set()
        thread.join(timeout=10)
        fleet.stop()


def _try(run):
    try:
        return run()
    except loadgen.LoadError:
        return None
