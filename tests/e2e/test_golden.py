"""Every fixture and scenario produces exactly its recorded alerts, metrics and inventory (tests/golden.py).

A change that should not alter behaviour is held to these outputs; one that should updates them with
`python tests/golden.py --update`, and the commit says why."""

from __future__ import annotations

import golden
import pytest

CASES = golden.fixture_cases()


@pytest.fixture(scope="module")
def scenario_cases(tmp_path_factory):
    return {c.name: c for c in golden.scenario_cases(tmp_path_factory.mktemp("scenarios"))}


def check(case: golden.Case) -> None:
    expected = golden.load(case)
    assert expected is not None, f"no golden outputs for {case.name}: python tests/golden.py --update"
    diff = golden.differences(expected, golden.outputs(case))
    assert not diff, f"{case.name} differs from its golden outputs:\n" + "\n".join(diff)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fixture_outputs_are_golden(case):
    check(case)


@pytest.mark.parametrize("name", ["scenarios/baseline.pcap", "scenarios/mixed.pcap", "scenarios/mixed.pcap+model"])
def test_scenario_outputs_are_golden(scenario_cases, name):
    check(scenario_cases[name])


def test_every_golden_file_has_a_case(scenario_cases):
    """A renamed or removed fixture takes its golden file with it."""
    wanted = {golden.golden_path(c) for c in [*CASES, *scenario_cases.values()]}
    assert set(golden.GOLDEN.glob("*.json")) == wanted
