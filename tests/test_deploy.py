"""The unit files for hosts without Docker: systemd reads every one without a complaint
(where systemd-analyze exists), and they run the commands this project has."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from infoscreen.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
UNITS = sorted((ROOT / "deploy" / "systemd").glob("infoscreen-*"))
INSTALLED = "/opt/infoscreen/venv/bin/infoscreen"


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # systemd's keys are case-sensitive
    parser.read(path)
    return parser


def test_there_is_a_unit_for_each_process_the_broker_and_the_nightly_backup():
    names = {path.name for path in UNITS}
    assert {"infoscreen-listener.service", "infoscreen-scheduler.service",
            "infoscreen-web.service", "infoscreen-mosquitto.service",
            "infoscreen-backup.service", "infoscreen-backup.timer"} <= names


@pytest.mark.parametrize("path", [p for p in UNITS if p.suffix == ".service"],
                         ids=lambda p: p.name)
def test_each_service_runs_a_command_of_ours_as_an_unprivileged_user(path):
    service = unit(path)["Service"]
    assert service["User"] == "infoscreen" and service["NoNewPrivileges"] == "yes"
    command = service["ExecStart"]
    if INSTALLED in command:
        words = command.split(INSTALLED, 1)[1].split("'")[0].split()
        words = [w for w in words if "$(" not in w]  # the backup's dated file name
        build_parser().parse_args([*words, *(["x"] if words[-1] == "--output" else [])])


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_reads_every_unit_without_a_complaint(tmp_path):
    fake = tmp_path / "infoscreen"  # the installed command, where the units expect it
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    for path in UNITS:
        text = path.read_text().replace(INSTALLED, str(fake))
        if not Path(mosquitto).exists():
            text = text.replace("/usr/sbin/mosquitto", str(fake))
        (tmp_path / path.name).write_text(text)
    done = subprocess.run(["systemd-analyze", "verify",
                           *(str(tmp_path / p.name) for p in UNITS)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr
