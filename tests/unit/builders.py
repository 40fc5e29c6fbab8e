"""Batches built from frames in memory, for the unit tests: no capture file, no reader."""

from __future__ import annotations

import dataclasses

import numpy as np

from sensor.capture import Batch


def batch_of(frames: list[bytes], ts: list[float] | None = None, linktype: int | list[int] = 1,
             caplen: list[int] | None = None, wirelen: list[int] | None = None) -> Batch:
    """One batch holding `frames` back to back. caplen cuts a frame's capture (the bytes past it are not in the
    batch); wirelen defaults to the captured length."""
    caps = [len(f) if caplen is None else caplen[i] for i, f in enumerate(frames)]
    data = b"".join(f[:c] for f, c in zip(frames, caps, strict=True))
    lengths = np.array(caps, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if frames else lengths.copy()
    types = [linktype] * len(frames) if isinstance(linktype, int) else linktype
    return Batch(data, offsets, lengths,
                 lengths.copy() if wirelen is None else np.array(wirelen, dtype=np.int64),
                 np.array([1_700_000_000.0 + i for i in range(len(frames))] if ts is None else ts, dtype=np.float64),
                 np.array(types, dtype=np.int32))


def decoded_fields(dec) -> dict:
    """Every column of a Decoded as lists (the batch aside): what the compiled decode and the numpy reference are
    held equal by."""
    return {f.name: np.asarray(getattr(dec, f.name)).tolist() for f in dataclasses.fields(dec) if f.name != "batch"}
