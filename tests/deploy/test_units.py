"""The systemd units in deploy/: what they run exists, they may write where friendbot writes,
they are hardened, and ``systemd-analyze verify`` accepts them.

CI installs systemd (Debian's package, for ``systemd-analyze``) so the verification always runs
there; FRIENDBOT_TEST_SYSTEMD_ANALYZE names the binary and makes its absence a failure.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from bot.cli import main
from storage.db import DEFAULT_DATABASE_URL
from training.settings import TrainingSettings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PREFIX = "/opt/friendbot"  # code and virtual environment (docs/deploy.md)
HOME = "/srv/friendbot"  # the working directory: .env, data/, models/, exports/
FRIENDBOT = f"{PREFIX}/.venv/bin/friendbot"
SERVICES = ("friendbot.service", "friendbot-schedule.service", "friendbot-retrain.service")
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "RestrictSUIDSGID": "yes",
    "CapabilityBoundingSet": "",
}
MAX_EXPOSURE = 20  # systemd-analyze security's score x 10 (they measure 1.7 as shipped)


def unit(name: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> keys -> every value given (systemd allows a key several times)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in (DEPLOY / name).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(values: dict[str, list[str]], key: str) -> str:
    assert len(values.get(key, [])) == 1, f"{key}: expected exactly one value"
    return values[key][0]


def test_the_units_shipped() -> None:
    found = sorted(p.name for p in DEPLOY.iterdir() if p.suffix in (".service", ".timer"))
    assert found == sorted([*SERVICES, "friendbot-retrain.timer"])


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_runs_a_real_friendbot_command(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    service = unit(name)["Service"]
    argv = shlex.split(one(service, "ExecStart"))
    assert argv[0] == FRIENDBOT
    main([*argv[1:], "--help"])  # an unknown command or option raises here
    assert "Usage: " in capsys.readouterr().out
    assert one(service, "WorkingDirectory") == HOME
    assert one(service, "User") == one(service, "Group") == "friendbot"


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_may_write_where_friendbot_writes_and_nowhere_else(name: str) -> None:
    service = unit(name)["Service"]
    writable = [Path(p) for p in one(service, "ReadWritePaths").split()]
    assert writable == [Path(HOME, "data"), Path(HOME, "models"), Path(HOME, "exports")]
    retrain = TrainingSettings(_env_file=None)
    database = Path(str(make_url(DEFAULT_DATABASE_URL).database))
    defaults = [database, retrain.models_dir, retrain.exports_dir, retrain.retrain_work_dir]
    for relative in defaults:  # every default place friendbot writes, below HOME
        target = Path(HOME, relative)
        assert any(target.is_relative_to(w) for w in writable), f"{target} is read-only"
    for key, value in HARDENING.items():
        assert one(service, key) == value, key


def test_the_services_stop_cleanly_and_the_bot_restarts() -> None:
    for name in SERVICES:
        service = unit(name)["Service"]
        assert one(service, "KillMode") == "mixed"  # SIGTERM to friendbot, which stops its children
        assert int(one(service, "TimeoutStopSec")) >= 60
    bot = unit("friendbot.service")
    assert one(bot["Service"], "Restart") == "on-failure"
    assert one(bot["Install"], "WantedBy") == "multi-user.target"
    timer = unit("friendbot-retrain.timer")
    assert one(timer["Timer"], "Unit") == "friendbot-retrain.service"
    assert one(timer["Timer"], "Persistent") == "true"  # a run missed while off runs at boot


def systemd_analyze() -> str:
    required = os.environ.get("FRIENDBOT_TEST_SYSTEMD_ANALYZE")
    if required:
        assert Path(required).is_file(), f"FRIENDBOT_TEST_SYSTEMD_ANALYZE={required}: not found"
        return required
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    return found


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """The units with their two folders moved under tmp_path, and a friendbot executable
    there: verify checks that ExecStart's program exists."""
    root = tmp_path / "root"
    program = Path(str(root) + FRIENDBOT)
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    for source in DEPLOY.iterdir():
        if source.suffix in (".service", ".timer"):
            text = source.read_text(encoding="utf-8")
            text = text.replace(PREFIX, f"{root}{PREFIX}").replace(HOME, f"{root}{HOME}")
            (units / source.name).write_text(text, encoding="utf-8")
    return units


def analyze(binary: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_systemd_analyze_verify_accepts_the_units(installed: Path) -> None:
    binary = systemd_analyze()
    names = sorted(p.name for p in installed.iterdir())
    done = analyze(binary, "verify", "--man=no", *names, cwd=installed)
    assert done.returncode == 0, done.stdout + done.stderr
    assert complaints(done, names) == [], done.stdout + done.stderr


def complaints(done: subprocess.CompletedProcess[str], names: list[str]) -> list[str]:
    """What verify said about our units: an unknown key or a bad value is only a warning
    (exit status 0), so its output is what counts."""
    output = done.stdout + done.stderr
    return [line for line in output.splitlines() if any(n in line for n in names)]


def test_systemd_analyze_verify_would_catch_a_mistake(installed: Path) -> None:
    binary = systemd_analyze()
    bot = installed / "friendbot.service"
    bot.write_text(bot.read_text().replace("ProtectSystem=strict", "ProtectSystem=strcit"))
    done = analyze(binary, "verify", "--man=no", bot.name, cwd=installed)
    found = complaints(done, [bot.name])
    assert len(found) == 1 and "strcit" in found[0], done.stdout + done.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_the_services_stay_hardened(installed: Path, name: str) -> None:
    binary = systemd_analyze()
    done = analyze(
        binary,
        "security",
        "--offline=true",
        f"--threshold={MAX_EXPOSURE}",
        "--no-pager",
        name,
        cwd=installed,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert "Overall exposure level" in done.stdout
