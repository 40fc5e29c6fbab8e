"""What each bounded structure of a running Sensor holds, in bytes of Python objects, on its own and per entry.

Used by bench/soak_replay.py --sizes. An object reachable from several structures is counted once, in the first
that reaches it, in this order: the flow table and the inventory own flows and devices (an incident that keeps a
flow the table has let go pays for it), then the incident layer and its companions, then the detectors.

sys.getsizeof summed over the objects reachable through gc.get_referents; types, modules and functions are not
followed, weak references are counted but not followed. An instance without __slots__ keeps its attribute values
in a separate array in Python 3.11, which getsizeof leaves out: it is added (8 bytes an attribute and a header).
Python's own allocator rounds every block up to 8 bytes and keeps arenas partly empty, so resident memory is more.
"""

from __future__ import annotations

import gc
import sys
import types
import weakref
from collections.abc import Iterable

_OPAQUE = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
           types.CodeType, types.FrameType)
_MANAGED_DICT = 1 << 4   # Py_TPFLAGS_MANAGED_DICT (3.11): attribute values live in an array of their own


def deep_size(roots: Iterable[object], seen: set[int]) -> int:
    """Bytes of the objects reachable from roots and not in `seen` (which then holds them too)."""
    total = 0
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _OPAQUE):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, weakref.ReferenceType):
            continue
        referents = gc.get_referents(obj)
        if type(obj).__flags__ & _MANAGED_DICT and not isinstance(obj, BaseException):
            total += 32 + 8 * len(referents)
        stack.extend(referents)
    return total


def _structures(sensor) -> list[tuple[str, object, int]]:
    """(name, object, entries), in the order that decides who owns what is shared."""
    d = sensor.detection
    inc = d.incidents
    out: list[tuple[str, object, int]] = [
        ("flow table", sensor.flows, len(sensor.flows)),
        ("inventory", sensor.inventory, len(sensor.inventory.devices)),
        ("open incidents", inc._open, len(inc._open)),
        ("incidents per device", inc._per_device, len(inc._per_device)),
        ("incidents bare per scope", inc._bare, len(inc._bare)),
        ("services by address", d.services._by_address, len(d.services._by_address)),
        ("services by name", d.services._by_name, len(d.services._by_name)),
        ("alert gate budgets", d.gate._budget, len(d.gate._budget)),
        ("open episodes", d.episodes._open, len(d.episodes._open)),
        ("state: episode rows", sensor.known._episode_rows, len(sensor.known._episode_rows)),
    ]
    for i, detector in enumerate(d.detectors):
        out.append((f"detector {getattr(detector, 'name', i)}", detector, 0))
    out.append(("the rest of the sensor", sensor, 0))
    return out


def _incident_fields(incidents: list, seen: set[int]) -> list[tuple[str, int]]:
    """Bytes per open incident by field, shared objects counted where first met (the key's strings first)."""
    if not incidents:
        return []
    rows = []
    for name in ("id", "service", "lead", "detectors", "evidence", "scope", "device_ref"):
        rows.append((name, deep_size((getattr(i, name) for i in incidents), seen)))
    traffic = [i.traffic for i in incidents]
    rows.append(("traffic (object)", sum(sys.getsizeof(t) for t in traffic)))
    seen.update(id(t) for t in traffic)
    for name in ("flows", "retired", "addresses", "names", "last_seen"):
        rows.append((f"traffic.{name}", deep_size((getattr(t, name) for t in traffic), seen)))
    rows.append(("incident (object)", sum(sys.getsizeof(i) for i in incidents)))
    return rows


def print_sizes(sensor) -> None:
    gc.collect()
    seen: set[int] = set()
    print("\nbytes of Python objects held, by structure (shared objects counted once, in the first listed):")
    incidents = sensor.detection.incidents._open
    for name, root, entries in _structures(sensor):
        if root is incidents:
            # the keys' strings are the devices' and services' own when shared; counted before the fields
            keys = deep_size([list(incidents._entries)], seen)
            fields = _incident_fields(list(incidents.values()), seen)
            size = keys + sum(b for _, b in fields) + deep_size([root], seen)
            _row(name, size, entries)
            _row("  keys and table", keys, entries)
            for field_name, field_bytes in fields:
                _row(f"  {field_name}", field_bytes, entries)
            continue
        _row(name, deep_size([root], seen), entries)


def _row(name: str, size: int, entries: int) -> None:
    per = f"{size / entries:>8,.0f} B/entry" if entries else ""
    print(f"  {name:<40} {size / 2**20:>8.1f} MB  {entries:>9,} entries {per}")
