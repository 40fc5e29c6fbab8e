"""The tpacket ring reader on blocks whose descriptors and frame headers say anything at all. The kernel writes
them, so this is not wire input; but the reader trusts no offset in them, and a bug in that trust would read or
write outside the ring or the caller's buffer: every garbled block must end in whole, parseable records (or none),
the block handed back and the reader ready for the next."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_tpacket import BLOCK_DESC, TP_STATUS_KERNEL, Frame, block, ipv4_udp, records, ring, status

tpacket = pytest.importorskip("sensor.tpacket")
if tpacket.extension is None:
    pytest.skip("sensor._tpacket not built", allow_module_level=True)

SIZE = 4096


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.integers(1, 12), pokes=st.lists(st.tuples(st.integers(0, 1023), st.integers(0, 2**32 - 1)),
                                                  min_size=1, max_size=12),
       out_bytes=st.sampled_from([200, 1000, 1 << 16]))
def test_garbled_blocks_end_in_whole_records_and_go_back(frames, pokes, out_bytes):
    good = block([Frame(ipv4_udp(sport=i, payload=b"z" * (i * 7))) for i in range(frames)], SIZE)
    for word, value in pokes:
        # Only the descriptor and the frame headers: the first 12 frames' worth of the block.
        at = min(word * 4, SIZE - 4)
        if at >= BLOCK_DESC + 8 or at in (12, 16):   # never block_status itself: the block must be retired
            struct.pack_into("=I", good, at, value)
    r = ring([good, block([], SIZE, TP_STATUS_KERNEL)])
    cursor = bytearray(32)
    stream = b""
    for _ in range(64):
        out = bytearray(out_bytes)
        try:
            got = tpacket.extension.read(-1, r, SIZE, cursor, out, 0.0, 0.0)
        except ValueError:
            # A frame claims more than the whole buffer: refused; the same call with room goes on past it.
            out = bytearray(SIZE * 2)
            got = tpacket.extension.read(-1, r, SIZE, cursor, out, 0.0, 0.0)
        if got is None:
            break
        written, packets = got
        assert 0 < written <= len(out) and packets > 0
        stream += bytes(out[:written])
    else:
        pytest.fail("the reader never finished the block")
    assert status(r, SIZE, 0) == TP_STATUS_KERNEL
    assert struct.unpack("=4Q", cursor)[:3] == (1, 0, 0)
    for _ts, caplen, _wirelen, data in records(stream):
        assert len(data) == caplen <= SIZE + 4
