"""The systemd unit, checked offline by systemd itself: no systemd runs here, but systemd-analyze reads unit files
without one. (The Dockerfile and compose file are checked in test_prometheus.py; no Docker engine runs here.)"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess

import pytest
from conftest import REPO

from sensor.cli import build_parser

UNIT = REPO / "deploy/systemd/camwatch.service"
TPACKET_DROP_IN = REPO / "deploy/systemd/camwatch.service.d/tpacket.conf"
INSTALLED = "/opt/camwatch/.venv/bin/camwatch"
pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")


@pytest.fixture
def unit(tmp_path):
    """The unit with its ExecStart pointed at this checkout's camwatch: verify also checks the program exists."""
    local = REPO / ".venv/bin/camwatch"
    assert local.exists()
    path = tmp_path / "camwatch.service"
    path.write_text(UNIT.read_text().replace(INSTALLED, str(local)))
    return path


def test_unit_verifies_without_a_warning(unit):
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "" and r.stdout.strip() == "", r.stderr + r.stdout


def test_verify_does_report_a_bad_directive(tmp_path, unit):
    """So that the clean verify above means something."""
    bad = tmp_path / "bad.service"
    bad.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHomes=yes"))
    r = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True, text=True, timeout=60)
    assert "Unknown key" in r.stderr and "ProtectHomes" in r.stderr


def test_unit_exposure_stays_low(unit):
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
                       capture_output=True, text=True, timeout=60)
    level = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert level, r.stdout + r.stderr
    # systemd's scale runs 0 (locked down) to 10 (unprotected); "OK" ends at 4.9. Capture needs AF_PACKET and
    # dumpcap's file capabilities (so no NoNewPrivileges), which is most of what keeps this above 0.
    assert float(level[1]) <= 3.0, r.stdout


def test_unit_command_line_is_one_camwatch_accepts():
    text = UNIT.read_text().replace("\\\n", " ")
    exec_start = re.search(r"^ExecStart=(.+)$", text, re.M)[1]
    argv = shlex.split(exec_start)
    assert argv[0] == INSTALLED
    args = build_parser().parse_args(argv[1:])
    assert args.command == "run" and args.interface and args.config.startswith("/etc/camwatch/")


@pytest.fixture
def tpacket_unit(unit):
    """The unit as the tpacket engine's drop-in changes it, merged by hand (verify reads no drop-in directory
    beside a unit outside systemd's search path): each key the drop-in sets replaces the unit's. The drop-in resets
    each list before setting it (an empty assignment, as systemd reads it), so its last assignment is what holds."""
    overrides = dict(line.split("=", 1) for line in TPACKET_DROP_IN.read_text().splitlines()
                     if "=" in line and not line.startswith("#"))
    lines = []
    for line in unit.read_text().splitlines():
        key = line.split("=", 1)[0]
        lines.append(f"{key}={overrides.pop(key)}" if key in overrides else line)
    assert not overrides, f"keys the unit does not have: {overrides}"
    merged = unit.with_name("camwatch-tpacket.service")
    merged.write_text("\n".join(lines) + "\n")
    return merged


def test_tpacket_drop_in_verifies_grants_only_cap_net_raw_and_exposure_stays_low(tpacket_unit):
    text = tpacket_unit.read_text()
    assert "AmbientCapabilities=CAP_NET_RAW\n" in text and "CapabilityBoundingSet=CAP_NET_RAW\n" in text
    assert "NoNewPrivileges=yes\n" in text
    r = subprocess.run(["systemd-analyze", "verify", str(tpacket_unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "" and r.stdout.strip() == "", r.stderr + r.stdout
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(tpacket_unit)],
                       capture_output=True, text=True, timeout=60)
    level = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert level, r.stdout + r.stderr
    assert float(level[1]) <= 3.0, r.stdout
