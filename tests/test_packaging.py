"""The wheel is the product: built from this tree, installed away from it, it carries the
panels' templates and static files, the migrations and the broker templates, and serves the
sign-in page with its stylesheet."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

SERVE = textwrap.dedent("""
    import sys
    import server
    from core.config import Settings
    from server import create_app

    assert server.__file__.startswith(sys.argv[1]), server.__file__
    app = create_app(Settings(DATABASE_URL=sys.argv[2], SECRET_KEY="k" * 40))
    client = app.test_client()
    page = client.get("/login")
    css = client.get("/static/app.css")
    print(page.status_code, css.status_code, css.mimetype)
    print("app.css" in page.get_data(as_text=True), b"header" in css.data)
""")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy: a build leaves build/ and *.egg-info behind in the tree it reads.
    source = tmp_path_factory.mktemp("source") / "tree"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "var", "build", "*.egg-info", "__pycache__", "tests", "bench"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True, timeout=300)
    [built] = out.glob("infoscreen_fleet-*.whl")
    return built


def test_the_wheel_carries_the_panels_the_migrations_and_the_broker_templates(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("frontend/templates/base.html", "frontend/templates/wall.html",
                   "frontend/static/app.css", "frontend/static/panels.js",
                   "migrations/versions/0001_initial_schema.py",
                   "mosquitto/templates/mosquitto.conf.tmpl"):
        assert needed in names, needed
    assert not [n for n in names if n.startswith("tests/")]


def test_the_installed_wheel_serves_the_sign_in_page_with_its_stylesheet(wheel, tmp_path):
    venv = tmp_path / "venv"  # a fresh virtual environment, outside the source tree
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                    "--no-deps", "-q", str(wheel)], check=True, capture_output=True, timeout=300)
    installed = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip()
    # The dependencies come from this environment's folder, named in a .pth file: the .pth
    # files inside it (the editable install that points at this tree) are not read, so only
    # the wheel's copy of the project can be imported.
    Path(installed, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    result = subprocess.run(
        [str(python), "-c", SERVE, installed, f"sqlite:///{tmp_path / 'panel.db'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["200", "200", "text/css", "True", "True"]


def test_the_lock_file_pins_every_dependency_within_its_range():
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in [*project["dependencies"],
                                       *project["optional-dependencies"]["test"]]]
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep, f"not an exact pin: {line}"
            pins[canonicalize_name(name)] = version
    for requirement in wanted:
        pinned = pins.get(canonicalize_name(requirement.name))
        assert pinned, f"{requirement.name} is not in requirements.lock"
        assert requirement.specifier.contains(pinned, prereleases=True), (
            f"requirements.lock pins {requirement.name}=={pinned}, outside {requirement}")
