"""Who made a device: Wireshark's `manuf` database (MAC prefix to organisation) and the curated list of covered
makers, matched by organisation or by banner text.

Manufacturers are looked up longest assignment first (MA-S /36, MA-M /28, MA-L /24), so a /28 block inside an IEEE
registration-authority /24 resolves to the company that actually holds it.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from sensor.reference_data import COVERED_MAKERS_FILE, Maker, load_covered_makers

MANUF_PATHS = ("/usr/share/wireshark/manuf", "/usr/local/share/wireshark/manuf")


class ManufDatabase:
    def __init__(self, entries: dict[int, dict[int, str]]):
        self._by_bits = entries  # prefix length in bits -> {prefix value: manufacturer}

    @classmethod
    def load(cls, path: str | Path | None = None) -> ManufDatabase:
        text = None
        for candidate in ([path] if path else MANUF_PATHS):
            try:
                text = Path(candidate).read_text(encoding="utf-8", errors="replace")
                break
            except OSError:
                continue
        if text is None and shutil.which("tshark"):
            # Wireshark 4.2+ compiles the table in and prints it with -G manuf.
            try:
                text = subprocess.run(["tshark", "-G", "manuf"], capture_output=True, text=True,
                                      timeout=30).stdout
            except (OSError, subprocess.SubprocessError):
                text = None
        return cls(parse_manuf(text or ""))

    def lookup(self, mac: int) -> str | None:
        if not mac:
            return None
        for bits in (36, 28, 24):
            table = self._by_bits.get(bits)
            if table:
                name = table.get(mac >> (48 - bits))
                if name:
                    return name
        if (mac >> 40) & 0x02:
            return "(locally administered)"
        return None

    def __len__(self) -> int:
        return sum(len(t) for t in self._by_bits.values())


def parse_manuf(text: str) -> dict[int, dict[int, str]]:
    out: dict[int, dict[int, str]] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            continue
        prefix = parts[0].strip()
        name = (parts[2] if len(parts) > 2 and parts[2].strip() else parts[1]).strip()
        bits = 24
        if "/" in prefix:
            prefix, b = prefix.split("/", 1)
            bits = int(b)
        hexdigits = prefix.replace(":", "").replace("-", "").replace(".", "")
        try:
            value = int(hexdigits, 16)
        except ValueError:
            continue
        value <<= 4 * (12 - len(hexdigits))
        if bits not in (24, 28, 36):
            continue
        table = out.setdefault(bits, {})
        # A /24 of the IEEE registration authority only says the block is subdivided; keep real owners.
        key = value >> (48 - bits)
        if bits == 24 and name.startswith("IEEE Registration Authority"):
            continue
        table[key] = name
    return out


def format_mac(mac: int) -> str | None:
    if not mac:
        return None
    return ":".join(f"{(mac >> s) & 0xFF:02x}" for s in range(40, -8, -8))


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
