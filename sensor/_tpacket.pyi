"""Types of sensor/_tpacket.c, the optional TPACKET_V3 reader and capability drop, for mypy only."""

from _typeshed import ReadableBuffer, WriteableBuffer

def read(
    fd: int, ring: WriteableBuffer, block_size: int, cursor: WriteableBuffer, out: WriteableBuffer, timeout: float,
    gather: float, /
) -> tuple[int, int] | None: ...
def attach_filter(fd: int, program: ReadableBuffer, /) -> None: ...
def drop_capabilities(wait: float = ..., /) -> tuple[int, int, int]: ...
