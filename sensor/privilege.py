"""Giving up the capture privilege once the capture is open, as tcpdump does: CAP_NET_RAW is needed to open a
packet socket and its ring, not to read them. After `drop_privileges` no thread of camwatch holds any capability
(effective, permitted, inheritable, ambient; the bounding set too where CAP_SETPCAP allows), no_new_privs is set so
no exec can bring one back, and a camwatch started as root runs on as the configured user.
"""

from __future__ import annotations

import os
from pathlib import Path

from sensor.errors import CamwatchError

_CAP_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapAmb")


def thread_capabilities() -> dict[int, dict[str, int]]:
    """Each thread's capability sets, by thread id (from /proc/self/task/*/status; threads that end meanwhile are
    left out)."""
    found: dict[int, dict[str, int]] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            lines = (task / "status").read_text().splitlines()
        except OSError:
            continue
        sets = {}
        for line in lines:
            key, _, value = line.partition(":")
            if key in _CAP_FIELDS:
                sets[key] = int(value.strip(), 16)
        found[int(task.name)] = sets
    return found


def _switch_user(user: str) -> None:
    """Run on as `user` (its primary group, no supplementary groups). glibc applies set*id to every thread."""
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise CamwatchError(f"capture.user {user!r}: no such user") from None
    if os.geteuid() != 0:
        if os.geteuid() == entry.pw_uid:
            return
        raise CamwatchError(f"capture.user {user!r}: camwatch must start as root to switch to another user "
                            f"(it runs as uid {os.geteuid()})")
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


def drop_privileges(user: str | None = None, *, wait: float = 2.0) -> None:
    """Switch to `user` if given, then drop every capability in every thread; raise CamwatchError if any thread
    still holds one afterwards (camwatch must not read a packet with privileges). `wait`: how long each of up to
    three rounds waits for the other threads to answer."""
    try:
        from sensor import _tpacket
    except ImportError:
        raise CamwatchError("dropping capabilities needs camwatch's compiled extension (sensor._tpacket)") from None
    if user:
        _switch_user(user)
    for _attempt in range(3):   # a thread started during the broadcast may have been missed: ask again
        _tpacket.drop_capabilities(wait)
        holding = {tid: sets for tid, sets in thread_capabilities().items() if any(sets.values())}
        if not holding:
            return
    tid, sets = next(iter(holding.items()))
    raise CamwatchError(f"could not drop capabilities in {len(holding)} thread(s) (thread {tid}: "
                        + ", ".join(f"{k} {v:016x}" for k, v in sets.items()) + ")")
