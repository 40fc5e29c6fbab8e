from __future__ import annotations

import pytest

from sensor import compiled


@pytest.fixture(params=["compiled", "numpy"])
def impl(request, monkeypatch) -> str:
    """Runs a test twice: through the compiled decode and grouping (sensor/_walk.c) and flow-table step
    (sensor/_flows.c), and through their numpy/Python references, so each is held to the same exact values (and a
    mutant of either is seen)."""
    on = request.param == "compiled"
    if on and (compiled.extension is None or compiled.flows_extension is None):
        pytest.skip("the C extensions sensor._walk and sensor._flows were not built on this machine")
    monkeypatch.setattr(compiled, "decode", on)
    monkeypatch.setattr(compiled, "group", on)
    monkeypatch.setattr(compiled, "table", on)
    return request.param
