"""sensor/tags.py is the one definition of the payload tag bits: the compiled tagger takes them as arguments, so
moved bits move in C too, and it equals the numpy tagger; ICMP types and masked signatures are tagged alike."""

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


def _frames_of_every_kind() -> list[bytes]:
    from packets import ethernet, icmp_echo, ip, ipv4, mac, udp
    src, dst, cam, gw = "10.20.0.5", "8.8.8.8", mac("00:12:34:00:00:05"), mac("00:0c:29:00:00:01")
    unreachable = b"\x03\x03\x00\x00\x00\x00\x00\x00" + ip(dst, src, 17, udp(dst, src, 53, 5000, b"x"))[:28]
    return [
        ethernet(gw, cam, 0x0800, ip(src, dst, 1, icmp_echo(7, 1))),                       # echo request
        ethernet(cam, gw, 0x0800, ip(dst, src, 1, icmp_echo(7, 1, reply=True))),           # echo reply
        ethernet(gw, cam, 0x0800, ip(src, dst, 1, unreachable)),                           # destination unreachable
        ethernet(gw, cam, 0x86DD, ip("fd00::5", "2001:db8::8", 58, b"\x80\x00\x00\x00" + bytes(8))),  # v6 echo
        ethernet(gw, cam, 0x86DD, ip("fd00::5", "2001:db8::8", 58, b"\x87\x00\x00\x00" + bytes(20))),  # v6 NS
        ethernet(gw, cam, 0x0800, ipv4(src, dst, 1, bytes(64), frag_offset=1480)),         # a later fragment
        # fixed bits equal, the free ones anything: a match; one fixed bit off: none
        ethernet(gw, cam, 0x0800, ip(src, dst, 17, udp(src, dst, 5000, 10240, bytes.fromhex("4c6f2d1f41fe0a0b")))),
        ethernet(gw, cam, 0x0800, ip(src, dst, 17, udp(src, dst, 5000, 10240, bytes.fromhex("4c6f0d0042000000")))),
    ]


@pytest.mark.parametrize("on", [True, False], ids=["compiled", "numpy"])
def test_icmp_types_and_masked_signatures_are_tagged_alike_by_both_taggers(on, monkeypatch):
    """ICMP flows are keyed without their type, so echo and other messages are tagged; a hex signature matches
    under its mask only. Both taggers give the same bits."""
    if on and compiled.extension is None:
        pytest.skip("the C extension was not built on this machine")
    from .builders import batch_of
    monkeypatch.setattr(compiled, "tags", on)
    tagger = tags.PayloadTagger([(bytes.fromhex("4c6f0d0040000000"), bytes.fromhex("ffff1fe0fe010000"))])
    dec = decode(batch_of(_frames_of_every_kind()))
    rows = np.flatnonzero(dec.is_ip)
    got = tagger.tags(dec, rows)
    assert np.array_equal(got, tagger.tags_numpy(dec, rows))
    echo, other, sig = tags.TAG_ICMP_ECHO, tags.TAG_ICMP_OTHER, tags.signature_bit(0)
    assert got.tolist() == [echo, echo, other, echo, other, 0, sig, 0]
    # only the rows asked about: the ICMP rows left out are not tagged, the others keep their places
    subset = rows[[1, 2, 6]]
    assert tagger.tags(dec, subset).tolist() == [echo, other, sig]
    assert tagger.tags(dec, rows[:0]).tolist() == []
    with pytest.raises(ValueError, match="a prefix signature is a"):
        tags.PayloadTagger([(b"\xff\x00", b"\xff")])


@pytest.mark.parametrize("rows_wanted", [40, 700])
def test_signatures_under_any_first_byte_mask_are_tagged_alike_by_both_taggers(rows_wanted):
    """Many rows (the compiled tagger then tries for each row only the signatures its first payload byte allows):
    signatures whose first byte is fixed, partly masked or free, each met by payloads that match it, that miss it
    by one bit of the first byte, or by one bit further on, all tagged as the numpy tagger tags them."""
    if compiled.extension is None:
        pytest.skip("the C extension was not built on this machine")
    from packets import ethernet, ip, mac, udp

    from .builders import batch_of
    signatures = [(bytes.fromhex("4c6f0d0040000000"), bytes.fromhex("ffff1fe0fe010000")),
                  (bytes.fromhex("80e0"), bytes.fromhex("e0ff")),       # first byte partly masked
                  (bytes.fromhex("0012ab"), bytes.fromhex("00ffff")),   # first byte free
                  (bytes.fromhex("f1d0"), bytes.fromhex("ffff")),
                  (bytes.fromhex("f1"), bytes.fromhex("f0"))]
    tagger = tags.PayloadTagger(signatures)
    rng = np.random.default_rng(7)
    src, dst, cam, gw = "10.20.0.5", "10.20.0.2", mac("00:12:34:00:00:05"), mac("00:0c:29:00:00:01")
    frames = []
    for i in range(rows_wanted):
        value, mask = signatures[i % len(signatures)]
        payload = bytearray(rng.integers(0, 256, size=12, dtype=np.uint8).tobytes())
        for j, (v, m) in enumerate(zip(value, mask, strict=True)):
            payload[j] = (payload[j] & ~m & 0xFF) | v
        if i % 3 == 1:
            payload[0] ^= 1 << int(rng.integers(8))   # the first byte off by a bit (masked or not)
        elif i % 3 == 2:
            payload[1] ^= 1 << int(rng.integers(8))
        frames.append(ethernet(gw, cam, 0x0800, ip(src, dst, 17, udp(src, dst, 5000, 6000, bytes(payload)))))
    dec = decode(batch_of(frames))
    rows = np.flatnonzero(dec.is_ip)
    got = tagger.tags(dec, rows)
    assert np.array_equal(got, tagger.tags_numpy(dec, rows))
    for i in range(len(signatures)):   # every signature matched some rows and missed others
        has = (got & np.uint64(tags.signature_bit(i))) != 0
        assert has.any() and not has.all(), i


def test_the_compiled_tagger_refuses_rows_out_of_range_and_columns_that_disagree():
    """Each row indexes the per-packet columns and prefix j sets bit base + j: a row past them, a column of another
    length, unaligned int64s or a bit past the 64th are refused, not read past a buffer or shifted out of a word."""
    if compiled.extension is None:
        pytest.skip("the C extension was not built on this machine")
    n = 16
    proto, plen, head = np.full(n, 17, np.uint8), np.full(n, 20, np.int64), np.zeros(n, np.uint64)
    rows, values, masks = np.arange(n, dtype=np.int64), np.zeros(2, np.uint64), np.zeros(2, np.uint64)
    def call(*columns, base=8):
        return compiled.extension.tags(*columns, 1, 2, 4, 8, base)
    assert np.frombuffer(call(proto, plen, head, rows, values, masks), np.uint64).tolist() == [3 << 8] * n
    for bad in (np.array([n], np.int64), np.array([-1], np.int64), np.array([0, 1 << 40], np.int64)):
        with pytest.raises(ValueError, match="tags: "):
            call(proto, plen, head, bad, values, masks)
    with pytest.raises(ValueError, match="tags: "):
        call(proto, plen[:-1], head, rows, values, masks)
    with pytest.raises(ValueError, match="tags: "):
        call(proto, plen, head[:-1], rows, values, masks)
    with pytest.raises(ValueError, match="tags: "):
        call(proto, plen, head, rows, values, masks[:1])
    with pytest.raises(ValueError, match="tags: "):
        call(proto, plen, memoryview(bytearray(1) + head.tobytes())[1:], rows, values, masks)
    with pytest.raises(ValueError, match="tags: "):
        call(proto, plen, head, rows, values, masks, base=63)
