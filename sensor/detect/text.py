"""The phrases alert summaries are made of, shared so that every detector names devices and destinations alike."""

from __future__ import annotations

from sensor.enrich.geography import Place
from sensor.enrich.inventory import Device


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def describe_device(dev: Device) -> str:
    who = dev.maker_name or (f"unknown maker, {dev.module} module" if dev.module else dev.vendor)
    if who and dev.role != "other":
        return f"{dev.role} {dev.ip} ({who})"
    return f"{dev.ip} ({who})" if who else dev.ip


def describe_destination(ip: str, name: str | None, port: int | None, proto: str) -> str:
    where = f"{name} ({ip})" if name else ip
    return f"{where} {proto}/{port}" if port else f"{where} {proto}"


def covered_note(dev: Device) -> str:
    """Why the device counts as covered; with the OEM or relabel finding when its badge says another maker."""
    if dev.maker is None:
        return ""
    note = f" {dev.maker.name} is a covered maker ({dev.covered_basis or dev.maker.basis})."
    return f"{note} {dev.verdict.note}." if dev.verdict.note else note


def severity_for(dev: Device, covered: str, other: str) -> str:
    return covered if dev.covered else other


def rate_text(bps: float) -> str:
    return f"{bps / 1e6:.2f} Mbit/s" if bps >= 100_000 else f"{bps / 1e3:.0f} kbit/s"


def with_place(summary: str, ip: str, place: Place | None) -> str:
    """The summary with the destination's country and owner after the first mention of its address:
    "name (110.43.68.240, CN, <owner>)", "8.8.8.8 (Google Public DNS, US, <owner>)", or "110.43.68.240 (CN, <owner>)"
    where the address stands alone."""
    said = place.describe() if place is not None else ""
    if not said or not ip:
        return summary
    start = _address_at(summary, ip)
    if start < 0:
        return summary
    end = start + len(ip)
    if summary[start - 1:start] == "(" and summary[end:end + 1] == ")":
        return f"{summary[:end]}, {said}{summary[end:]}"
    if summary[end:end + 2] == " (" and (close := summary.find(")", end)) > 0:   # "8.8.8.8 (Google Public DNS)"
        return f"{summary[:close]}, {said}{summary[close:]}"
    return f"{summary[:end]} ({said}){summary[end:]}"


def _word(c: str) -> bool:
    return c.isalnum() or c == "_"


def _address_at(text: str, ip: str) -> int:
    """Where the address first stands as a whole token: not the start of a longer one, nor part of a name (a full
    stop may follow it); -1 if nowhere. A scan, not a regular expression: each detection has its own address, and
    compiling a pattern per address costs more than the rest of the detection."""
    start = text.find(ip)
    while start >= 0:
        end = start + len(ip)
        before, after, beyond = text[start - 1:start] if start else "", text[end:end + 1], text[end + 1:end + 2]
        if not (before and (_word(before) or before in ".:-")) and not (
                after and (_word(after) or after == ":" or (after == "." and beyond and _word(beyond)))):
            return start
        start = text.find(ip, start + 1)
    return -1
