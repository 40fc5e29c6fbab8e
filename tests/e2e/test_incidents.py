"""The alert log as incidents, end to end on every fixture and the labelled scenarios: one open line per (device,
service) at a time, updates and closes only of incidents that opened, every incident closed at the end with totals,
and the lines an analyst reads per planted behaviour and per benign camera-hour (docs/detectors.md)."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, alerts_of, all_fixtures, camwatch, fixture_id

FIXTURES = [p for p in all_fixtures() if "links" not in p.parts]


def check_incident_lifecycle(lines: list[dict]) -> dict[str, list[dict]]:
    """Asserts the contract's life cycle; returns each incident's lines."""
    open_now: dict[tuple[str, str], str] = {}
    by_incident: dict[str, list[dict]] = {}
    for line in lines:
        assert line["contract"] == 2
        if line["event"] == "flood":
            assert line["incident"] is None and line["flood"]["alerts"] > 0
            continue
        key = (line["device"]["ip"], line["service"]["id"])
        if line["event"] == "open":
            assert key not in open_now, f"a second open line for {key} while {open_now.get(key)} is open"
            open_now[key] = line["incident"]
            assert line["incident"] not in by_incident, "an incident id was reused"
        else:
            assert open_now.get(key) == line["incident"], f"{line['event']} of an incident that is not open"
            if line["event"] == "close":
                del open_now[key]
                totals = line["totals"]
                assert totals["last_seen"] >= totals["first_seen"] and line["reason"] in (
                    "silence", "end", "shutdown", "evicted")
        assert line["detector"] in line["detectors"]
        assert {e["detector"] for e in line["evidence"]} == set(line["detectors"])
        by_incident.setdefault(line["incident"], []).append(line)
    assert not open_now, f"incidents never closed: {sorted(open_now)}"
    return by_incident


@pytest.mark.parametrize("capture", FIXTURES, ids=[fixture_id(p) for p in FIXTURES])
def test_every_fixture_writes_whole_incidents(capture):
    proc = camwatch("replay", capture)
    assert proc.returncode == 0, proc.stderr
    check_incident_lifecycle(alerts_of(proc.stdout))


def test_updates_only_raise_severity_or_add_a_detector(scenario_lines):
    by_incident = check_incident_lifecycle(scenario_lines)
    ranks = ["info", "low", "medium", "high", "critical"]
    for lines in by_incident.values():
        for before, after in zip(lines, lines[1:], strict=False):
            if after["event"] == "update":
                assert (ranks.index(after["severity"]) > ranks.index(before["severity"])
                        or set(after["detectors"]) > set(before["detectors"])), after


@pytest.fixture(scope="module")
def scenario_lines(scenario, tmp_path_factory):
    log = tmp_path_factory.mktemp("incident-log") / "alerts.jsonl"
    proc = camwatch("eval", "--json", "--labels", scenario / "labels.json", "--config", scenario / "site.toml",
                    "--model", REPO / "models" / "baseline.json", "--alerts", log, scenario / "baseline.pcap",
                    scenario / "mixed.pcap")
    assert proc.returncode == 0, proc.stderr
    return alerts_of(log.read_text())


def test_each_planted_behaviour_opens_one_incident_per_service(scenario_lines):
    """The scenario is shorter than one episode timeout: no pair may open twice in it."""
    pairs = [(a["device"]["ip"], a["service"]["id"]) for a in scenario_lines if a["event"] == "open"]
    assert pairs and len(pairs) == len(set(pairs)), "a (device, service) opened twice within one episode"


def test_eval_reports_lines_per_behaviour_and_per_benign_camera_hour(scenario):
    proc = camwatch("eval", "--json", "--labels", scenario / "labels.json", "--config", scenario / "site.toml",
                    scenario / "baseline.pcap", scenario / "mixed.pcap")
    report = json.loads(proc.stdout)["incidents"]
    rows = {r["id"]: r for r in report["behaviours"]}
    assert all(r["ttd_s"] is not None and r["ttd_s"] <= 30 for r in rows.values() if r["id"] != "beacon")
    assert report["lines_on_benign"] == 0 and report["lines_per_benign_camera_hour"] == 0
    # the cloud registration by name: lookup, connection and egress are one incident, opened once and closed once
    assert (rows["hik-connect"]["incidents"], rows["hik-connect"]["opens"], rows["hik-connect"]["lines"]) == (1, 1, 2)
    # one incident per behaviour and service; a sweep of 40 addresses folds into a fan-out after FAN_OUT of them
    from sensor.detect.incidents import FAN_OUT
    assert all(r["opens"] == 1 for r in rows.values() if r["id"] != "telnet-sweep"), rows
    assert rows["telnet-sweep"]["opens"] == FAN_OUT + 1
    assert all(2 <= r["lines"] <= 4 for r in rows.values() if r["id"] != "telnet-sweep"), rows
    assert report["lines_per_behaviour"] < 4
    table = camwatch("eval", "--labels", scenario / "labels.json", "--config", scenario / "site.toml",
                     scenario / "baseline.pcap", scenario / "mixed.pcap").stdout
    assert "lines per planted behaviour:" in table and "hik-connect" in table


def test_the_readme_example_lines_are_what_the_demo_writes():
    """README, *Alert contract*: its open line is the demo's, field for field; its close line's fields are too."""
    import re

    from conftest import SYNTHETIC
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Alert contract"):text.index("## Metrics")]
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", section, re.S)]
    opened, closed = alerts_of(camwatch("replay", SYNTHETIC / "camera_site.pcap", "--config",
                                        SYNTHETIC / "camera_site.toml").stdout)
    assert blocks[0] == opened
    assert {k: closed[k] for k in blocks[1]} == blocks[1]
