"""The committed synthetic fixtures are exactly what the generator writes."""

from __future__ import annotations

import subprocess
import sys

from conftest import PCAPS, SYNTHETIC


def test_generator_reproduces_committed_fixtures_byte_for_byte(tmp_path):
    subprocess.run([sys.executable, str(PCAPS / "generate.py"), str(tmp_path)], check=True)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.pcap*"))
    committed = sorted(p.relative_to(SYNTHETIC) for p in SYNTHETIC.rglob("*.pcap*"))
    assert generated == committed
    for rel in generated:
        assert (tmp_path / rel).read_bytes() == (SYNTHETIC / rel).read_bytes(), rel
