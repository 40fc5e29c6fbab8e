"""Types of sensor/_flows.c, the optional C extension of the flow table's per-flow step, for mypy only."""

from collections.abc import Callable
from typing import Any, TypeAlias

import numpy as np
from _typeshed import ReadableBuffer

_In: TypeAlias = ReadableBuffer | np.ndarray[Any, Any]

def apply(
    tables: tuple[Any, Any, Any, Any], end: Callable[..., Any], types: tuple[Any, Any, Any, Any, Any], keys: _In,
    first_dir: _In, orig_is_a: _In, orig_port: _In, resp_port: _In, vlan: _In, first_ts: _In, pkts: _In,
    nbytes: _In, payload: _In, flags: _In, tags: _In, macs: _In, last: _In, apart: bool = ..., /
) -> tuple[Any, ...]: ...
def evict(tables: tuple[Any, Any, Any, Any], excess: int, flow_type: type, /) -> list[Any]: ...
def orient(
    proto: _In, fragment: _In, sport: _In, dport: _In, tcp_flags: _In, vlan: _In, ts: _In, rows: _In, first: _In,
    first_dir: _In, /
) -> tuple[bytes, bytes, bytes, bytes, bytes]: ...
def lazy_port(flow_type: type, name: str, ports: tuple[int, ...], orig: bool, /) -> Any: ...
