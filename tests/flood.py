"""Builds flood captures fast with numpy (one template, vectorised fields): the tests need a million packets."""

from __future__ import annotations

import struct

import numpy as np

PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
FRAME = 54


def syn_records(n: int, src: np.ndarray, dst: np.ndarray, sport: np.ndarray, dport: np.ndarray, t0: float,
                rate: float) -> np.ndarray:
    """n pcap records (16-byte header + 54-byte Ethernet/IPv4/TCP SYN) as an (n, 70) uint8 array."""
    rec = np.zeros((n, 16 + FRAME), dtype=np.uint8)
    ts = t0 + np.arange(n) / rate
    sec = ts.astype(np.uint64)
    usec = ((ts - sec) * 1e6).astype(np.uint64)
    hdr = rec[:, :16].view("<u4")
    hdr[:, 0], hdr[:, 1], hdr[:, 2], hdr[:, 3] = sec, usec, FRAME, FRAME
    f = rec[:, 16:]
    f[:, 0:6] = [0x00, 0x11, 0x32, 0, 0, 2]
    f[:, 6:12] = [0x00, 0x1E, 0xBD, 0, 0, 1]
    f[:, 12:14] = [0x08, 0x00]
    f[:, 14:24] = [0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6]
    f[:, 26:30] = src.view(np.uint8).reshape(n, 4)[:, ::-1]
    f[:, 30:34] = dst.view(np.uint8).reshape(n, 4)[:, ::-1]
    f[:, 34], f[:, 35] = sport >> 8, sport & 0xFF
    f[:, 36], f[:, 37] = dport >> 8, dport & 0xFF
    f[:, 46], f[:, 47] = 0x50, 0x02   # data offset 5, SYN
    return rec


def ip(text: str) -> int:
    a, b, c, d = map(int, text.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


def spoofed_flood(n: int, seed: int = 0, t0: float = 1_700_000_000.0, rate: float = 100_000.0) -> np.ndarray:
    """SYNs from random Internet addresses to random camera-VLAN addresses and ports: n distinct flows."""
    rng = np.random.default_rng(seed)
    src = (ip("198.18.0.0") + rng.integers(0, 1 << 17, n)).astype(np.uint32)
    dst = (ip("10.20.0.0") + rng.integers(1, 1 << 16, n)).astype(np.uint32)
    return syn_records(n, src, dst, rng.integers(1024, 65535, n).astype(np.uint32),
                       rng.integers(1, 65535, n).astype(np.uint32), t0, rate)


def camera_scan(n: int, camera: str, t0: float, rate: float = 1000.0) -> np.ndarray:
    """One camera sending SYNs to n different Internet addresses."""
    src = np.full(n, ip(camera), dtype=np.uint32)
    dst = (ip("11.0.0.0") + np.arange(n)).astype(np.uint32)
    return syn_records(n, src, dst, np.full(n, 40000, dtype=np.uint32), np.full(n, 23, dtype=np.uint32), t0, rate)


def spoofed_camera_sources(n: int, seed: int = 0, t0: float = 1_700_000_000.0, rate: float = 100_000.0) -> np.ndarray:
    """SYNs from n distinct forged camera-side addresses (10.0.0.0/8), each to a different Internet address: an
    identity flood, every packet a new device, flow and destination."""
    rng = np.random.default_rng(seed)
    src = (ip("10.0.0.1") + rng.permutation(1 << 24)[:n]).astype(np.uint32)
    dst = (ip("11.0.0.0") + rng.integers(0, 1 << 24, n)).astype(np.uint32)
    return syn_records(n, src, dst, rng.integers(1024, 65535, n).astype(np.uint32),
                       np.full(n, 443, dtype=np.uint32), t0, rate)
