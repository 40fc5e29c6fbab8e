"""The alert log: one JSON line per alert, through the one line writer (sensor.export.lines)."""

from __future__ import annotations

from sensor.detect import Alert
from sensor.export.lines import LineFile, encode


class AlertLog:
    """Alert JSON lines; each line is written and flushed at once, so a crash never loses an alert already raised."""

    def __init__(self, target: str | None, append: bool = False):
        self.file = LineFile(target, "alerts", append=append)

    @property
    def count(self) -> int:
        return self.file.lines

    def write(self, alert: Alert) -> None:
        self.file.write(encode(alert.as_dict()))

    def close(self) -> None:
        self.file.close()
