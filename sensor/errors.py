"""camwatch's errors: what the CLI reports as one line, and the warning for faults it rides out."""

import sys


class CamwatchError(Exception):
    """An error the user can fix; the CLI prints it as one line, without a traceback."""


class ConfigError(CamwatchError):
    pass


class CaptureError(CamwatchError):
    """A capture file or stream that cannot be read further.

    `offset` is the byte offset in the file where reading stopped; everything before it was processed.
    """

    def __init__(self, message: str, offset: int | None = None, path: str | None = None):
        self.offset = offset
        self.path = path
        where = path or "capture"
        if offset is not None:
            where += f" at byte {offset}"
        super().__init__(f"{where}: {message}")


class StartCancelled(CamwatchError):
    """A stop requested while live capture was still starting: nothing was captured, and nothing failed."""


def warn(message: str) -> None:
    """A fault camwatch rides out (a packet it could not parse, a state write that failed): one line on stderr."""
    sys.stderr.write(f"camwatch: warning: {message}\n")
