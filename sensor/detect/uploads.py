"""Sliding windows over what a device sent one peer (video_egress): per-second buckets for the short windows of
bursts and streams, per-slot buckets for the long window of trickles.

Each window is one flat array of [unit, sent, received, packets] buckets, oldest first, with running totals, so an
observation costs an append (or three additions to the newest bucket) and the expiry of whatever fell out of the
window, with no object per bucket; a check reads the running totals, or walks the few buckets of a shorter tail. A
(device, peer) that sends every second holds `span` buckets of 32 bytes in each window, however long it keeps
sending.
"""

from __future__ import annotations

from array import array
from typing import NamedTuple

TRICKLE_SLOTS = 12      # a trickle window of any length is kept in this many slots (10 s each for 120 s)


class Window:
    """Buckets covering the last `span` units (seconds or slots) up to the newest one seen."""

    __slots__ = ("cells", "sent", "received", "packets")

    def __init__(self) -> None:
        self.cells = array("q")
        self.sent = self.received = self.packets = 0

    @classmethod
    def holding(cls, unit: int, sent: int, received: int, packets: int) -> Window:
        """add() of one bucket to a new window (of any span of a unit or more), made at once: a new (device, peer)'s
        first sending, which every forged source of a flood brings."""
        window = cls.__new__(cls)
        window.cells = array("q", (unit, sent, received, packets))
        window.sent, window.received, window.packets = sent, received, packets
        return window

    def add(self, unit: int, span: int, sent: int, received: int, packets: int) -> None:
        """Count sending (`sent` at least 1: every bucket holds some) in `unit`, keeping the last `span` units."""
        # Runs for every observation of every outside peer: the totals are updated inline, not through a helper.
        cells = self.cells
        if cells and unit <= cells[-4]:
            # Flows of one second of capture are handed over in no particular order, so a unit may come a little
            # after a later one: it joins the newest bucket. A jump back past the whole window (another capture
            # replayed, a clock step) starts afresh rather than keeping buckets from the future.
            if unit > cells[-4] - span:
                cells[-3] += sent
                cells[-2] += received
                cells[-1] += packets
                self.sent += sent
                self.received += received
                self.packets += packets
                return
            self.clear()
        cells.extend((unit, sent, received, packets))
        self.sent += sent
        self.received += received
        self.packets += packets
        horizon = unit - span
        while cells[0] <= horizon:
            self.sent -= cells[1]
            self.received -= cells[2]
            self.packets -= cells[3]
            del cells[:4]

    def clear(self) -> None:
        del self.cells[:]
        self.sent = self.received = self.packets = 0

    def tail(self, unit: int, length: int, floor: int = 1) -> Totals:
        """What the buckets of the last `length` units up to `unit` hold; `active` and `first` count only buckets
        with at least `floor` bytes sent."""
        cells = self.cells
        if floor <= 1 and cells and cells[0] > unit - length:
            # the whole window is in the tail, and every bucket holds some sending: the running totals
            return Totals(self.sent, self.received, self.packets, len(cells) >> 2, cells[0])
        sent = received = packets = active = 0
        first = unit
        for i in range(len(cells) - 4, -1, -4):
            if cells[i] <= unit - length:
                break
            sent += cells[i + 1]
            received += cells[i + 2]
            packets += cells[i + 3]
            if cells[i + 1] >= floor:
                active += 1
                first = cells[i]
        return Totals(sent, received, packets, active, first)


class Totals(NamedTuple):      # a tuple: made for every check of a busy peer, and a frozen dataclass costs more
    sent: int
    received: int
    packets: int
    active: int      # buckets with (enough) sending in them
    first: int       # the oldest of them (the unit asked about when there are none)


class Sending:
    """One (device, peer): its recent sending per second and per trickle slot, and the severity already reported
    in its current episode (a later, more severe pattern is reported once more)."""

    __slots__ = ("seconds", "slots", "reported")

    def __init__(self, seconds: Window | None = None, slots: Window | None = None) -> None:
        self.seconds = Window() if seconds is None else seconds
        self.slots = Window() if slots is None else slots
        self.reported = 0
