"""Types of sensor/_manuf.c, the optional C extension of the manuf index's line scan, for mypy only."""

def locate(data: bytes, /) -> tuple[tuple[bytes, bytes, bytes, bytes], bytes]:
    """The canonical assignment lines' columns (starts, ends, bits, keys) and the other lines' (start, end) pairs
    that are not comments, as native int64, in file order."""
