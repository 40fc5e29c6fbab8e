"""Wireshark's manuf file indexed without parsing it: the prefix of each line read at start-up, its organisation
only when a device with that prefix is first seen.

Parsing all ~50,000 lines in Python (sensor.enrich.makers.parse_manuf) took ~0.06 s of every start-up, more than
half of camwatch's own share of the time before the first packet, while a site's cameras come from a few dozen
prefixes. Here a line whose prefix has the file's canonical shape (`00:1B:C5` then a tab, or
`00:1B:C5:00:00:00/36` then a tab) is located by one pass in C (sensor/_manuf.c), or by numpy's array operations
without it; every other line (comments aside) goes through the same line parser as parse_manuf, so an odd file
still gives parse_manuf's answers, only slower. A prefix's
lines are parsed, in file order, by that same parser when it is looked up: the index answers exactly what the
parsed table would (later lines win; an "IEEE Registration Authority" /24 owns nothing), checked in
tests/unit/test_enrich_manuf_index.py against parse_manuf on the installed file.

No cache file: the file is re-read (a page-cache copy of ~2 MB) and re-indexed each start, so a swapped file is
never answered from a stale copy.
"""

from __future__ import annotations

from bisect import bisect_left

import numpy as np

from sensor import compiled

BITS = (36, 28, 24)   # the assignment sizes looked up, longest first
REGISTRATION_AUTHORITY = "IEEE Registration Authority"
# Characters str.splitlines() ends a line at besides \n, as UTF-8: a file holding one is parsed line by line in
# Python (parse_manuf) instead, since the index splits at \n only.
_OTHER_LINE_BREAKS = (b"\r", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e")
_UNICODE_LINE_BREAKS = ("\x85".encode(), "\u2028".encode(), "\u2029".encode())   # and these, which start with C2 or E2
MAX_LEAD_BYTES = 1 << 12
_HEX = np.full(256, 16, dtype=np.uint8)   # a hex digit's value; 16 for any other byte
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
    _HEX[bytes([_c]).upper()[0]] = _i
_LONG_DIGITS = (0, 1, 3, 4, 6, 7, 9, 10, 12, 13, 15, 16)    # `00:1B:C5:00:00:00/36\t`
_SHORT_DIGITS = _LONG_DIGITS[:6]                             # `00:1B:C5\t`: _locate reads both from one matrix
_WIDTH = 21
_KEY_BITS = 40   # above any prefix value looked up (36 bits at most)


def parse_line(line: str) -> tuple[int, int, str] | None:
    """One manuf line's prefix length, prefix value and organisation; None for a comment or a line that is not an
    assignment of a length camwatch looks up. The one parser behind both parse_manuf and the index."""
    if not line or line[0] == "#":
        return None
    parts = line.split("\t")
    if len(parts) < 2:
        return None
    prefix = parts[0].strip()
    name = (parts[2] if len(parts) > 2 and parts[2].strip() else parts[1]).strip()
    bits = 24
    if "/" in prefix:
        prefix, b = prefix.split("/", 1)
        try:
            bits = int(b)
        except ValueError:   # used to stop the parse with an error too
            return None
    hexdigits = prefix.replace(":", "").replace("-", "").replace(".", "")
    if len(hexdigits) > 12:   # longer than a MAC: not an assignment (it used to stop the parse with an error)
        return None
    try:
        value = int(hexdigits, 16)
    except ValueError:
        return None
    value <<= 4 * (12 - len(hexdigits))
    if bits not in BITS:
        return None
    return bits, value >> (48 - bits), name


def indexable(data: bytes) -> bool:
    """Whether the index splits `data` into the lines str.splitlines() would."""
    if any(mark in data for mark in _OTHER_LINE_BREAKS):   # memchr: well under a millisecond each
        return False
    # U+0085 (C2 85), U+2028 and U+2029 (E2 80 A8, E2 80 A9): found by their lead bytes (memchr; the installed file
    # has 45), the bytes after each compared: ~0.1 ms. Searching for the sequences with `in` took 1.3-18 ms each,
    # and comparing with numpy made two 2.3 MB temporaries that a fresh process page-faults in (issue 16). Past
    # MAX_LEAD_BYTES of them (~0.3 us each) the file is parsed line by line instead, as an odd file is.
    seen = 0
    for lead in (0xC2, 0xE2):
        at = data.find(lead)
        while at >= 0:
            seen += 1
            if seen > MAX_LEAD_BYTES or data.startswith(_UNICODE_LINE_BREAKS, at):
                return False
            at = data.find(lead, at + 1)
    return True


class ManufIndex:
    """The lines of a manuf file (bytes) by prefix; `name(bits, key)` is what parse_manuf's table[bits].get(key)
    would be. The caller checks `indexable(data)` first."""

    def __init__(self, data: bytes):
        self._data = data
        starts, ends, bits, keys = _locate(data)
        # (bits, key) as one int (a key has at most 36 bits): one sort key, and one sorted list of the prefixes that a
        # lookup bisects (~0.5 µs, once per prefix length of a MAC not seen before). A dict of the ~50,000 prefixes
        # cost ~4 ms of every start and a Python loop over them ~25 ms; the groups' bounds are read once per prefix
        # resolved, so they stay an array.
        joined = (bits << _KEY_BITS) | keys
        order = np.lexsort((starts, joined))   # grouped by (bits, key), file order within a group
        self._starts, self._ends = starts[order], ends[order]   # read once per prefix looked up: kept as arrays
        joined = joined[order]
        change = np.ones(len(joined), dtype=bool)   # empty for a file without one assignment
        change[1:] = joined[1:] != joined[:-1]
        first = np.flatnonzero(change)
        self._bounds = np.r_[first, len(order)]   # group g: sorted lines bounds[g] to bounds[g + 1]
        self._prefixes: list[int] = joined[first].tolist()   # group g's (bits, key), ascending
        # The resolved names, bounded by the file: only prefixes the file lists are kept.
        self._names: dict[tuple[int, int], str | None] = {}

    def name(self, bits: int, key: int) -> str | None:
        if key >> _KEY_BITS:   # no prefix that long (or negative): it must not alias another length's entry
            return None
        found = self._names.get((bits, key), False)
        if found is not False:
            return found   # type: ignore[return-value]   # False only marks "not resolved yet"
        joined = (bits << _KEY_BITS) | key
        group = bisect_left(self._prefixes, joined)
        if group == len(self._prefixes) or self._prefixes[group] != joined:
            return None
        name = None
        for i in range(int(self._bounds[group]), int(self._bounds[group + 1])):
            line = self._data[int(self._starts[i]):int(self._ends[i])]
            entry = parse_line(line.decode("utf-8", errors="replace"))
            if entry is None or entry[:2] != (bits, key):   # cannot happen for a located line; kept total
                continue
            if bits == 24 and entry[2].startswith(REGISTRATION_AUTHORITY):
                continue
            name = entry[2]
        self._names[(bits, key)] = name
        return name

    def listed(self, bits: int) -> set[int]:
        """The prefix values of that length the file has lines for (an IEEE RA /24 included)."""
        return {joined & ((1 << _KEY_BITS) - 1) for joined in self._prefixes if joined >> _KEY_BITS == bits}


def _locate(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Start, end, prefix length and prefix value of every assignment line of the lengths looked up: the canonical
    ones first, in file order, then the others the line parser accepts. In C where built (sensor/_manuf.c: ~2 ms
    in a fresh process against _locate_numpy's ~11 ms, issue 16)."""
    if compiled.manuf_extension is None or not compiled.manuf:
        return _locate_numpy(data)
    columns, odd = compiled.manuf_extension.locate(data)
    starts, ends, bits, keys = (np.frombuffer(column, dtype=np.int64) for column in columns)
    if not odd:   # Wireshark's file: no line for the line parser, nothing to append
        return starts, ends, bits, keys
    spans = np.frombuffer(odd, dtype=np.int64).reshape(-1, 2)
    extra = _parse_others(data, spans[:, 0], spans[:, 1])
    return np.r_[starts, extra[0]], np.r_[ends, extra[1]], np.r_[bits, extra[2]], np.r_[keys, extra[3]]


def _locate_numpy(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """_locate's reference: the lines' first bytes as one matrix, their shapes checked a column at a time."""
    raw = np.frombuffer(data, dtype=np.uint8)
    size = len(raw)
    breaks = np.flatnonzero(raw == 10)
    starts = np.r_[0, breaks + 1]
    ends = np.r_[breaks, size]
    keep = starts < ends
    starts, ends = starts[keep], ends[keep]
    # The first _WIDTH bytes of every line as one matrix: rows of a sliding window over the file, copied 21 bytes
    # at a time (one gather per column cost ~15 ms over the ~50,000 lines). A line starting in the last _WIDTH bytes
    # reads a 0 past the file's end, from a padded copy of that tail only: a padded copy of the whole file cost a
    # page-faulting 2 MB allocation at every start, as did taking every column's hex value.
    tail = min(size, _WIDTH)
    padded = np.zeros(tail + _WIDTH, dtype=np.uint8)
    padded[:tail] = raw[size - tail:]
    head = np.empty((len(starts), _WIDTH), dtype=np.uint8)
    near = int(np.searchsorted(starts, size - tail))   # the lines from here on start in the tail
    if near:
        window = np.lib.stride_tricks.as_strided(raw, shape=(size - _WIDTH + 1, _WIDTH), strides=(1, 1),
                                                 writeable=False)
        head[:near] = window[starts[:near]]
    for row in range(near, len(starts)):   # at most _WIDTH lines
        at = int(starts[row]) - (size - tail)
        head[row] = padded[at:at + _WIDTH]
    digit = _HEX[head[:, _LONG_DIGITS]]   # the long shape's digit columns; the short shape's are its first six
    length = ends - starts
    short = _shape(head, digit[:, :len(_SHORT_DIGITS)], (2, 5), 8) & (length > 8)
    long_ = _shape(head, digit, (2, 5, 8, 11, 14), 20) & (length > 20) & (head[:, 17] == ord("/"))
    tens, units = head[:, 18].astype(np.int64) - ord("0"), head[:, 19].astype(np.int64) - ord("0")
    long_bits = np.where((tens >= 0) & (tens <= 9) & (units >= 0) & (units <= 9), 10 * tens + units, 0)
    long_ &= np.isin(long_bits, BITS)
    fast = short | long_
    bits = np.where(short, 24, long_bits)[fast]
    nibbles = digit[fast]
    nibbles[short[fast], len(_SHORT_DIGITS):] = 0   # a /24 line's tab and name, not digits
    value = np.zeros(len(nibbles), dtype=np.int64)
    for column in range(len(_LONG_DIGITS)):   # not a matrix product: numpy's integer matmul has no fast path
        value = (value << 4) | nibbles[:, column]
    other = ~fast & (head[:, 0] != ord("#"))
    extra = _parse_others(data, starts[other], ends[other])
    return (np.r_[starts[fast], extra[0]], np.r_[ends[fast], extra[1]], np.r_[bits, extra[2]],
            np.r_[value >> (48 - bits), extra[3]])


def _shape(head: np.ndarray, digits: np.ndarray, colons: tuple[int, ...], tab: int) -> np.ndarray:
    """Lines with a tab at `tab`, colons at `colons` and hex digits in the columns `digits` holds the values of."""
    ok = head[:, tab] == ord("\t")
    for pos in colons:
        ok &= head[:, pos] == ord(":")
    return ok & (digits < 16).all(axis=1)


def _parse_others(data: bytes, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, ...]:
    """The lines not in the canonical shape, through the line parser: none in Wireshark's own file."""
    found: list[tuple[int, int, int, int]] = []
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        entry = parse_line(data[start:end].decode("utf-8", errors="replace"))
        if entry is not None:
            found.append((start, end, entry[0], entry[1]))
    columns = list(zip(*found, strict=True)) if found else [(), (), (), ()]
    return tuple(np.array(c, dtype=np.int64) for c in columns)
