"""Supply: the install is pinned and hash-checked, and covers every declared dependency."""

from __future__ import annotations

import re
import tomllib

from conftest import REPO


def pins(path):
    text = (REPO / path).read_text()
    found = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", text, re.M))
    blocks = re.split(r"^(?=[A-Za-z0-9_.-]+==)", text, flags=re.M)[1:]
    for block in blocks:
        assert "--hash=sha256:" in block, block.splitlines()[0]
    return {k.lower().replace("_", "-"): v for k, v in found.items()}


def declared(extra=None):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + (project["optional-dependencies"][extra] if extra else [])
    return {re.split(r"[<>=!~ \[]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def test_sensor_lock_pins_and_hashes_every_dependency():
    lock = pins("requirements/sensor.txt")
    assert declared() <= set(lock)
    assert "setuptools" in lock  # the build backend too: the project installs with --no-build-isolation


def test_test_lock_covers_the_test_extra():
    assert declared("test") <= set(pins("requirements/test.txt"))


def test_bootstrap_installs_from_the_lock_with_hashes():
    script = (REPO / "scripts/bootstrap.sh").read_text()
    assert "--require-hashes -r" in script and "--no-deps --no-build-isolation -e ." in script
