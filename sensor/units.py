"""How camwatch writes a number of bytes for a person: alert summaries, the inventory table and the report all
say sizes the same way."""

from __future__ import annotations

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


def byte_size(nbytes: float) -> str:
    """Decimal (SI) units with three significant figures, "812 B", "5.30 kB", "530 kB", "1.41 MB", "12.3 GB":
    enough to compare two devices at a glance without pretending to a precision a byte count over minutes lacks."""
    value = float(nbytes)
    for unit in _UNITS:
        # 999.5 rounds to "1000" at three figures: it is shown as the next unit's "1.00" instead.
        if abs(value) < 999.5 or unit == _UNITS[-1]:
            break
        value /= 1000
    if unit == "B":
        return f"{value:.0f} B"
    decimals = 2 if abs(value) < 9.995 else 1 if abs(value) < 99.95 else 0
    return f"{value:.{decimals}f} {unit}"
