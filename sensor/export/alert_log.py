"""The alert log: one JSON line per alert."""

from __future__ import annotations

import json
import sys
import threading
from typing import IO

from sensor.detect import Alert
from sensor.errors import CamwatchError


class AlertLog:
    """Alert JSON lines; each line is flushed as written so a crash never loses an alert already raised."""

    def __init__(self, target: str | None, append: bool = False):
        self._own = False
        self.count = 0
        if target is None:
            self._fh: IO[str] | None = None
        elif target == "-":
            self._fh = sys.stdout
        else:
            try:
                self._fh = open(target, "a" if append else "w", encoding="utf-8")
            except OSError as exc:
                raise CamwatchError(f"{target}: cannot write alerts: {exc.strerror}") from None
            self._own = True
        self._lock = threading.Lock()

    def write(self, alert: Alert) -> None:
        self.count += 1
        if self._fh is None:
            return
        line = json.dumps(alert.as_dict(), separators=(",", ":"), sort_keys=False)
        with self._lock:
            try:
                self._fh.write(line + "\n")
                self._fh.flush()
            except BrokenPipeError:
                self._fh = None

    def close(self) -> None:
        if self._own and self._fh is not None:
            self._fh.close()
