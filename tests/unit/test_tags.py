"""sensor/tags.py is the one definition of the payload tag bits: the compiled tagger takes them as arguments, so
moved bits move in C too, and it equals the numpy tagger."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import PCAPS, REAL, REPO

from sensor import compiled, tags
from sensor.capture import open_file
from sensor.config import Config
from sensor.decode import decode
from sensor.pipeline import Sensor


@pytest.mark.parametrize("capture", [PCAPS / "synthetic" / "camera_site.pcap",
                                     REAL / "nku-lifecycle" / "xiaobai_Y2camera_idle_local.pcap"], ids=lambda p: p.name)
def test_the_compiled_tagger_takes_its_bits_from_sensor_tags(capture, monkeypatch):
    """Moved to other bit positions in sensor/tags.py, the tags move in the compiled tagger too: C has no copy."""
    if compiled.extension is None:
        pytest.skip("the C extension was not built on this machine")
    if not capture.exists():
        pytest.skip(f"{capture} is not in this checkout")
    c_source = (REPO / "sensor" / "_walk.c").read_text(encoding="utf-8")
    assert not re.search(r"#define\s+TAG_", c_source)
    tagger = Sensor(Config()).tagger
    before = [tagger.tags(d, np.flatnonzero(d.is_ip)) for d in (decode(b) for b in open_file(capture)[0])]
    moved = {"TAG_RTP": 1 << 5, "TAG_PPPP": 1 << 6, "TAG_PPPP_DRW": 1 << 4, "TAG_TLS": 1 << 7,
             "TAG_SIGNATURE_BASE": 12}
    for name, value in moved.items():
        monkeypatch.setattr(tags, name, value)
    for batch, old in zip(open_file(capture)[0], before, strict=True):
        dec = decode(batch)
        rows = np.flatnonzero(dec.is_ip)
        fast, ref = tagger.tags(dec, rows), tagger.tags_numpy(dec, rows)
        assert np.array_equal(fast, ref)
        assert np.array_equal(fast == 0, old == 0)   # the same rows tagged, at the new positions
        assert not np.any(fast & np.uint64(0b1111))
