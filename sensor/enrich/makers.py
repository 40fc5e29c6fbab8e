"""Who made a device: Wireshark's `manuf` database (MAC prefix to organisation) and the curated list of covered
makers, matched by organisation or by banner text.

Manufacturers are looked up longest assignment first (MA-S /36, MA-M /28, MA-L /24), so a /28 block inside an IEEE
registration-authority /24 resolves to the company that actually holds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sensor.enrich.manuf_index import BITS, REGISTRATION_AUTHORITY, ManufIndex, indexable, parse_line
from sensor.reference_data import COVERED_MAKERS_FILE, Maker, load_covered_makers

MANUF_PATHS = ("/usr/share/wireshark/manuf", "/usr/local/share/wireshark/manuf")


class ManufDatabase:
    """MAC prefix to organisation. Built from a parsed table ({prefix bits: {prefix value: organisation}}, as
    parse_manuf returns), or by `load` from an index over the file's lines (sensor.enrich.manuf_index) that answers
    the same and parses a prefix's lines only when it is looked up."""

    def __init__(self, entries: dict[int, dict[int, str]], index: ManufIndex | None = None,
                 data: bytes | None = None):
        self._by_bits = entries  # prefix length in bits -> {prefix value: manufacturer}
        self._index = index
        self._data = data   # the file the index was built over, parsed whole only if `tables` is asked for
        # The last MAC looked up and its answer: the new sources of a flood (and a routed segment's hosts) come
        # behind one MAC, and each new device asks once.
        self._last: tuple[int, str | None] = (0, None)

    @classmethod
    def load(cls, path: str | Path | None = None) -> ManufDatabase:
        data = None
        for candidate in ([path] if path else MANUF_PATHS):
            try:
                data = Path(candidate).read_bytes()
                break
            except OSError:
                continue
        if data is not None and indexable(data):
            return cls({}, ManufIndex(data), data)
        text = data.decode("utf-8", errors="replace") if data is not None else _from_tshark()
        return cls(parse_manuf(text or ""))

    def lookup(self, mac: int) -> str | None:
        if not mac:
            return None
        last = self._last
        if last[0] == mac:
            return last[1]
        name = self._lookup(mac)
        self._last = (mac, name)
        return name

    def _lookup(self, mac: int) -> str | None:
        index = self._index
        for bits in BITS:
            if index is not None:
                name = index.name(bits, mac >> (48 - bits))
            else:
                table = self._by_bits.get(bits)
                name = table.get(mac >> (48 - bits)) if table else None
            if name:
                return name
        if (mac >> 40) & 0x02:
            return "(locally administered)"
        return None

    def tables(self) -> dict[int, dict[int, str]]:
        """The whole table, as parse_manuf returns it (parsed now if this database was loaded as an index)."""
        if self._data is not None:
            self._by_bits, self._data = parse_manuf(self._data.decode("utf-8", errors="replace")), None
        return self._by_bits

    def __len__(self) -> int:
        return sum(len(t) for t in self.tables().values())


def _from_tshark() -> str | None:
    """Wireshark 4.2+ compiles the table in and prints it with -G manuf."""
    import shutil
    import subprocess
    if not shutil.which("tshark"):
        return None
    try:
        return subprocess.run(["tshark", "-G", "manuf"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def parse_manuf(text: str) -> dict[int, dict[int, str]]:
    out: dict[int, dict[int, str]] = {}
    for line in text.splitlines():
        entry = parse_line(line)
        if entry is None:
            continue
        bits, key, name = entry
        table = out.setdefault(bits, {})
        # A /24 of the IEEE registration authority only says the block is subdivided; keep real owners.
        if bits == 24 and name.startswith(REGISTRATION_AUTHORITY):
            continue
        table[key] = name
    return out


def format_mac(mac: int) -> str | None:
    if not mac:
        return None
    return (mac & 0xFFFFFFFFFFFF).to_bytes(6, "big").hex(":")   # every device's, every scrape: in C


class CoveredMakers:
    """The curated list in data/covered_makers.toml, checked on load (sensor.reference_data)."""

    def __init__(self, makers: Sequence[Maker], version: str):
        self.makers = list(makers)
        self.version = version

    @classmethod
    def load(cls, path: Path = COVERED_MAKERS_FILE) -> CoveredMakers:
        found = load_covered_makers(path)
        return cls(found.makers, found.version)

    def by_manufacturer(self, organisation: str | None) -> Maker | None:
        if organisation:
            for maker in self.makers:
                if any(p.search(organisation) for p in maker.manuf):
                    return maker
        return None

    def by_banner(self, text: str | None) -> Maker | None:
        if text:
            for maker in self.makers:
                if any(p.search(text) for p in maker.banners):
                    return maker
        return None
