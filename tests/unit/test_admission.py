"""The new-device budget: a token bucket on packet time that starts with the whole site's worth."""

from __future__ import annotations

import pytest

from sensor.config import parse_config
from sensor.enrich.admission import AdmissionBudget
from sensor.errors import ConfigError
from sensor.pipeline import Sensor


def admitted(budget: AdmissionBudget, times) -> int:
    return sum(budget.admit(t) for t in times)


def test_the_start_allowance_then_the_burst_then_the_rate():
    budget = AdmissionBudget(per_second=10, burst=5, start=50)
    assert admitted(budget, [100.0] * 60) == 50          # a fresh sensor meets its whole site at once
    assert budget.held == 10
    assert admitted(budget, [100.5] * 20) == 5           # half a second at 10/s
    assert admitted(budget, [200.0] * 20) == 5           # a long quiet refills up to the burst, not beyond
    assert budget.held == 10 + 15 + 15


def test_a_burst_larger_than_the_start_is_available_at_once():
    budget = AdmissionBudget(per_second=1, burst=30, start=10)
    assert admitted(budget, [0.0] * 40) == 30


def test_time_running_backwards_refills_nothing_and_cannot_freeze_the_refill():
    budget = AdmissionBudget(per_second=10, burst=10, start=10)
    assert admitted(budget, [1e9] * 10) == 10            # a packet stamped far ahead spends the tokens
    assert admitted(budget, [1000.0] * 5) == 0           # back to the real time: nothing refilled by going back
    assert admitted(budget, [1001.0] * 20) == 10         # ... but the next second refills as usual


@pytest.mark.parametrize("rate,seconds", [(100, 3), (7, 10)])
def test_a_sustained_flood_gets_at_most_the_rate(rate, seconds):
    budget = AdmissionBudget(per_second=rate, burst=rate, start=0)
    times = [i / 10_000 for i in range(10_000 * seconds)]   # 10,000 new sources a second
    got = admitted(budget, times)
    assert rate * seconds - 1 <= got <= rate * (seconds + 1)
    assert budget.held == len(times) - got


def test_the_inventory_holds_new_sources_back_but_never_known_ones():
    config = parse_config({"limits": {"max_devices": 3, "new_devices_burst": 1, "new_devices_per_second": 1}})
    inventory = Sensor(config).inventory
    made = [inventory.touch(f"10.0.0.{i}", 0x001132000000 + i, 10.0) for i in range(1, 6)]
    assert [d is not None for d in made] == [True, True, True, False, False]
    assert inventory.admission.held == 2
    assert inventory.touch("10.0.0.1", 0x001132000001, 10.2) is made[0]   # known: never waits
    assert inventory.touch("10.0.0.4", 0x001132000004, 10.5) is None       # no token yet
    later = inventory.touch("10.0.0.4", 0x001132000004, 11.5)              # a second on: one token
    assert later is not None and later.ip == "10.0.0.4"
    assert inventory.lookup("10.0.0.5") is None


def test_a_link_claim_is_held_back_like_traffic():
    config = parse_config({"limits": {"max_devices": 1, "new_devices_burst": 1, "new_devices_per_second": 1}})
    inventory = Sensor(config).inventory
    assert inventory.claim("10.0.0.1", 0x001132000001, 5.0) is not None
    assert inventory.claim("10.0.0.2", 0x001132000002, 5.0) is None
    assert inventory.claim("10.0.0.3", 0x001132000001, 5.0) is not None   # a new address of a known box
    assert inventory.admission.held == 1


@pytest.mark.parametrize("key", ["new_devices_per_second", "new_devices_burst"])
@pytest.mark.parametrize("value", [0, -1, True, 1.5, "100", 2_000_000])
def test_budget_settings_are_checked(key, value):
    with pytest.raises(ConfigError, match=key):
        parse_config({"limits": {key: value}})


def test_asking_whether_it_would_hold_spends_nothing_and_counts_what_admit_would():
    budget = AdmissionBudget(per_second=1, burst=1, start=1)
    assert not budget.would_hold(0.0) and budget.tokens == 1.0   # a token left: not held, none spent
    assert budget.admit(0.0)
    assert budget.would_hold(0.5) and budget.held == 1           # spent: held, counted as admit would count it
    assert not budget.admit(0.9) and budget.held == 2
    assert not budget.would_hold(1.6) and budget.admit(1.6)      # refilled by then
