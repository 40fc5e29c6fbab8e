"""The phrases alert summaries are made of, shared so that every detector names devices and destinations alike."""

from __future__ import annotations

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


def size_text(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f} MB" if nbytes >= 10_000_000 else f"{nbytes / 1e3:.0f} kB"
