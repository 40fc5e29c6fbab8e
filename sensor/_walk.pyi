"""Types of sensor/_walk.c, the optional C extension, for mypy only (Python never reads this file).

Each signature follows the function's PyArg_ParseTuple format and its Py_BuildValue result. Buffers are anything
with the buffer protocol: bytes, bytearray, memoryview, contiguous numpy arrays.
"""

from typing import Any, TypeAlias

import numpy as np
from _typeshed import ReadableBuffer, WriteableBuffer

_In: TypeAlias = ReadableBuffer | np.ndarray[Any, Any]

# walk's, walk_pcapng's and decode's columns are read-only memoryviews of pooled memory (_walk.c says why).
def walk(
    data: _In, big_endian: bool, scale: float, max_record: int, populate: bool = ..., /
) -> tuple[int, int, int, int, memoryview, memoryview, memoryview, memoryview]: ...
def walk_pcapng(
    data: _In, start: int, big_endian: bool, max_block: int, linktypes: _In, scales: _In, offsets: _In, snaps: _In,
    last_ts: float, /
) -> tuple[int, memoryview, memoryview, memoryview, memoryview, memoryview]: ...
def decode(data: _In, offsets: _In, caplens: _In, linktypes: _In, /) -> tuple[memoryview, ...]: ...
def pooled(empty: bool = ..., /) -> tuple[int, int]: ...
def group(
    vlan: _In, proto: _In, fragment: _In, src: _In, dst: _In, sport: _In, dport: _In, tcp_flags: _In,
    payload_len: _In, src_mac: _In, wirelen: _In, ts: _In, tags: _In, rows: _In, hash_mask: int = ...,
    bounds: _In = ..., /
) -> tuple[bytes, ...]: ...
def tags(
    proto: _In, payload_len: _In, head: _In, rows: _In, values: _In, masks: _In, tag_rtp: int, tag_pppp: int,
    tag_drw: int, tag_tls: int, signature_base: int, /
) -> bytes: ...
def route(
    is_ip: _In, proto: _In, payload_len: _In, head: _In, sport: _In, dport: _In, identity_ports: _In,
    http_prefixes: _In, banner_prefixes: _In, post: int, /
) -> tuple[list[int], list[int], list[int], list[int], list[int], list[int]]: ...
def fill(fd: int, buffer: WriteableBuffer, start: int, stop: int, timeout: float, gather: float, /) -> int | None: ...
def forest(
    left: _In, right: _In, feature: _In, threshold: _In, leaf_value: _In, roots: _In, x: _In, n_features: int, /
) -> bytes: ...
