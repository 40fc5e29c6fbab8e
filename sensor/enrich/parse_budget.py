"""What a flood of packets that are dear to parse may cost: parses allowed per capture second, in all and per
sender, the rest left unread and counted (camwatch_parses_skipped_total). The identity readers (sensor.enrich.identity)
spend one per packet, the DNS reader (sensor.enrich.naming) one per answer record of a message it has not seen."""

from __future__ import annotations


class ParseBudget:
    """Parse cost allowed per capture second, in all and per sender; refused counts the packets left unread."""

    def __init__(self, total: int, per_sender: int):
        self.total, self.per_sender = total, per_sender
        self.refused = 0
        self._second: int | None = None
        self._granted = 0
        self._used: dict[str, int] = {}   # at most `total` senders: only a granted parse adds one

    def allow(self, sender: str, ts: float, cost: int = 1) -> bool:
        second = int(ts)
        if second != self._second:
            self._second, self._granted, self._used = second, 0, {}
        used = self._used.get(sender, 0)
        if used + cost > self.per_sender or self._granted + cost > self.total:
            self.refused += 1
            return False
        self._used[sender] = used + cost
        self._granted += cost
        return True
