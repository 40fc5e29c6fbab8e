"""The benchmark tools run and measure what they say: a small capture through bench/ end to end (the speed
targets themselves live in docs/benchmarks.md, measured by these scripts, not asserted here)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys

import pytest
from conftest import REPO, capinfos, tshark_fields

BENCH = REPO / "bench"


def bench(script: str, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / script), *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


@pytest.mark.parametrize("site, cameras", [("nvr20", 20), ("vlan100", 100)])
def test_generated_capture_is_deterministic_and_models_its_site(tmp_path, site, cameras):
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    for path in (a, b):
        r = bench("make_capture.py", path, "-n", 20_000, "--site", site)
        assert r.returncode == 0, r.stderr
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    assert capinfos(a)["packets"] == 20_000
    senders = {row[0] for row in tshark_fields(a, "ip.src", display_filter="rtp or rtsp or udp.dstport == 53")}
    assert len(senders - {"10.20.0.2", "10.20.0.1"}) == cameras


def test_replay_benchmark_reports_every_tool_it_ran(tmp_path):
    capture = tmp_path / "bench.pcap"
    assert bench("make_capture.py", capture, "-n", 5_000, "--site", "vlan100").returncode == 0
    out = tmp_path / "results.json"
    r = bench("replay_peers.py", "--capture", capture, "--only", "camwatch,camwatch-core,tshark", "--repeat", 1,
              "--slice", 500, "--json", out)
    assert r.returncode == 0, r.stderr
    results = {row["tool"]: row for row in json.loads(out.read_text())["results"]}
    assert set(results) == {"camwatch", "camwatch-core", "tshark"}
    for row in results.values():
        assert row["status"] == "ok" and row["file_packets"] == 5_000 and row["pps"] > 0, row
    assert results["camwatch"]["packets"] == results["camwatch-core"]["packets"] == 5_000
    assert results["camwatch"]["flows"] == results["camwatch-core"]["flows"] > 50
    assert "| camwatch pipeline (open_file + Sensor.process) | 5,000 |" in r.stdout


def test_profile_reports_the_stages(tmp_path):
    capture = tmp_path / "bench.pcap"
    assert bench("make_capture.py", capture, "-n", 5_000).returncode == 0
    r = bench("profile_replay.py", "--capture", capture, "--repeat", 1)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("5,000 packets; best of 1:")
    split = r.stdout.strip().splitlines()[-1]   # the coarse split, last: what a short ratio is explained by
    assert split.startswith("split: read ") and all(f" {k} " in split for k in ("decode", "flows", "rest"))
    parts = [float(p.split(" s (")[0].rsplit(" ", 1)[1]) for p in split.split("; ")[0].split(", ")]
    assert sum(parts) == pytest.approx(float(split.rsplit("total ", 1)[1].split()[0]), abs=0.02)
    for stage in ("decode.decode", "flows:   group", "enrich: Enricher.flow_update (and detect)"):
        assert f"| {stage} |" in r.stdout


def test_flood_benchmark_capture_is_all_new_flows(tmp_path):
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    for path in (a, b):
        r = bench("make_flood.py", path, "-n", 3_000)
        assert r.returncode == 0, r.stderr
    assert a.read_bytes() == b.read_bytes()
    assert capinfos(a)["packets"] == 3_000
    out = tmp_path / "results.json"
    r = bench("replay_peers.py", "--capture", a, "--only", "camwatch", "--repeat", 1, "--json", out)
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(out.read_text())["results"]
    assert row["packets"] == row["flows"] == 3_000


def test_flow_memory_benchmark_measures_the_table_per_flow_within_the_target(tmp_path):
    flood = tmp_path / "flood.pcap"
    assert bench("make_flood.py", flood, "-n", 3_000).returncode == 0
    r = bench("flow_memory.py", flood)
    assert r.returncode == 0, r.stderr
    flows, per_flow = re.search(r": ([\d,]+) flows, (\d+) bytes per flow", r.stdout).groups()
    # a Flow alone is over 200 bytes; issue 16's target is 512 for the whole entry
    assert flows == "3,000" and 250 <= int(per_flow) <= 512


def test_replay_ab_runs_both_trees_interleaved_with_the_cli_collector(tmp_path):
    flood = tmp_path / "flood.pcap"
    assert bench("make_flood.py", flood, "-n", 2_000).returncode == 0
    r = bench("replay_ab.py", REPO, REPO, flood, "--rounds", 2, "--repeat", 1, "--clock", "cpu", "--gc", "cli")
    assert r.returncode == 0, r.stderr
    runs = re.findall(r"round (\d) (before|after) .*: 2,000 packets, best", r.stdout)
    assert runs == [("1", "before"), ("1", "after"), ("2", "before"), ("2", "after")]


def test_replay_ab_measures_a_spent_budget(tmp_path):
    """--budget spent: a forged-source flood in its steady state, both trees, every round."""
    flood = tmp_path / "flood.pcap"
    assert bench("make_flood.py", flood, "-n", 2_000, "--kind", "camera-sources").returncode == 0
    r = bench("replay_ab.py", REPO, REPO, flood, "--rounds", 1, "--repeat", 1, "--clock", "cpu", "--budget", "spent")
    assert r.returncode == 0, r.stderr
    assert len(re.findall(r"round 1 (before|after) .*: 2,000 packets, best", r.stdout)) == 2


def test_flow_log_cost_benchmark_runs_both_ways_and_writes_every_record(tmp_path):
    capture = tmp_path / "bench.pcap"
    assert bench("make_capture.py", capture, "-n", 5_000, "--site", "nvr20").returncode == 0
    out = tmp_path / "flows.jsonl"
    r = bench("flow_log_cost.py", capture, "--runs", 1, "--out", out)
    assert r.returncode == 0, r.stderr
    flows = int(r.stdout.split(" flows,")[0].rsplit(" ", 1)[1].replace(",", ""))
    assert flows > 20 and f"{flows:,} records" in r.stdout
    assert len(out.read_text().splitlines()) == flows
    assert "  off " in r.stdout and "  on " in r.stdout and "on/off CPU" in r.stdout
def test_many_cameras_go_on_past_one_subnet(tmp_path):
    path = tmp_path / "many.pcap"
    r = bench("make_capture.py", path, "-n", 10**9, "--site", "substream", "--cameras", 300, "--seconds", 5)
    assert r.returncode == 0, r.stderr
    senders = {row[0] for row in tshark_fields(path, "ip.src", display_filter="rtp or rtsp or udp.dstport == 53")}
    assert len(senders - {"10.20.0.2", "10.20.0.1"}) == 300 and "10.20.1.54" in senders   # camera 299
    assert max(float(t) for (t,) in tshark_fields(path, "frame.time_epoch")) < 1_700_000_005.0


def test_model_cost_benchmark_measures_both_runs_per_camera_count(tmp_path):
    out = tmp_path / "model.json"
    r = bench("model_cost.py", "--cameras", "3,30", "--seconds", 12, "--repeat", 2, "--dir", tmp_path, "--json", out)
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())
    assert [row["cameras"] for row in rows] == [3, 30]
    for row in rows:
        assert row["devices"] >= row["cameras"] and row["packets"] > 0
        for clock in ("wall", "cpu"):
            assert row[clock]["with_pps"] > 0 and len(row[clock]["pair_ratios"]) == 2
            assert row[clock]["ratio"] == pytest.approx(row[clock]["with_pps"] / row[clock]["without_pps"])


def test_model_cost_benchmark_times_the_detectors_hooks_inside_the_cost(tmp_path):
    out = tmp_path / "model.json"
    r = bench("model_cost.py", "--cameras", "3", "--seconds", 12, "--repeat", 1, "--dir", tmp_path, "--json", out,
              "--inside")
    assert r.returncode == 0, r.stderr
    [row] = json.loads(out.read_text())
    inside = row["inside"]
    assert inside["observe"] > 0 and inside["tick"] > 0 and inside["dns_query"] > 0   # the site's cameras resolve
    assert "inside the detector's hooks" in r.stdout


def test_read_floor_benchmark_puts_replay_against_the_readinto_loop(tmp_path):
    capture = tmp_path / "floor.pcap"
    assert bench("make_capture.py", capture, "-n", 20_000).returncode == 0
    out = tmp_path / "floor.json"
    r = bench("read_floor.py", capture, "--repeat", 1, "--whole-process", "--json", out)
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    assert result["packets"] == 20_000 and set(result["rows"]) == {"floor", "mapped", "plain", "ahead", "whole"}
    assert result["rows"]["floor"]["of_floor"] == 1.0
    assert all(row["cpu_median"] > 0 for key, row in result["rows"].items() if key != "whole")
    assert "of the floor" in r.stdout


def test_startup_benchmark_times_camwatch_beside_the_interpreter():
    r = bench("startup.py", "--repeat", 1)
    assert r.returncode == 0, r.stderr
    for name in ("python -c pass", "one BLAS thread", "camwatch replay (1 packet)"):
        assert name in r.stdout


@pytest.mark.skipif(not (REPO / ".venv" / "bin" / "camwatch").exists(), reason="whole_ab runs TREE/.venv/bin/camwatch")
def test_whole_ab_runs_each_named_tree_with_its_environment(tmp_path):
    capture = tmp_path / "flood.pcap"
    assert bench("make_flood.py", capture, "-n", 500).returncode == 0
    r = bench("whole_ab.py", capture, f"a={REPO}", f"b={REPO};OPENBLAS_NUM_THREADS=1", "--rounds", 2, "--wait", 0,
              "--noise", 1000, "--", "--overlap", "off")
    assert r.returncode == 0, r.stderr
    assert "2 rounds, 0 runs discarded" in r.stdout
    assert len(re.findall(r"^  [ab] +wall s [\d.]+ \[[\d.]+-[\d.]+\] +cpu s .* peak RSS MiB \d+", r.stdout, re.M)) == 2
    # the environment given after the tree reaches that tree's runs only: here one that cannot start
    r = bench("whole_ab.py", capture, f"a={REPO}", f"b={REPO};PYTHONHOME={tmp_path / 'none'}", "--rounds", 1,
              "--wait", 0, "--noise", 1000)
    assert r.returncode != 0 and "failed" in r.stderr + r.stdout and "b=" not in r.stdout


def test_sparse_capture_is_one_window_of_one_known_flow_packet_a_second(tmp_path):
    """make_sparse.py: every packet is its own one-second window, of one of a few flows of a camera-side sender;
    the sensor sees exactly that."""
    from sensor.capture import open_file
    from sensor.config import Config
    from sensor.pipeline import Sensor

    capture = tmp_path / "sparse.pcap"
    r = bench("make_sparse.py", capture, "--packets", 300, "--flows", 3)
    assert r.returncode == 0, r.stderr
    assert capinfos(capture)["packets"] == 300
    sensor = Sensor(Config())
    reader, _ = open_file(capture)
    seconds = []
    for batch in reader:
        seconds.extend(int(t) for t in batch.ts)
        sensor.process(batch)
    sensor.finish()
    assert len(set(seconds)) == 300 and sensor.packets == 300
    assert sensor.flows.created == 3
    assert [d["ip"] for d in sensor.inventory_snapshot()] == ["192.168.50.10"]   # the sender alone: a camera


SITE_PACKETS = 7_913   # the real captures one site of make_expanded.py is made of (pcaps/real)


@pytest.mark.parametrize("layout", ["sequential", "concurrent"])
def test_expanded_capture_is_real_sites_moved_apart_and_deterministic(tmp_path, layout):
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    for path in (a, b):
        r = bench("make_expanded.py", path, "-n", SITE_PACKETS + 1, "--layout", layout)
        assert r.returncode == 0, r.stderr
    assert a.read_bytes() == b.read_bytes()
    assert capinfos(a)["packets"] == 2 * SITE_PACKETS   # whole sites: one more packet takes a second site
    rows = tshark_fields(a, "frame.time_epoch", "eth.src", "ip.src", display_filter="ip.src == 10.0.0.0/8")
    # The Xiaobai camera (192.168.1.165, OUI 78:df:72) of each site in its own subnet, OUI kept, MAC not.
    xiaobai = {ip: {mac for _t, mac, src in rows if src == ip} for ip in ("10.0.1.165", "10.1.1.165")}
    assert all(len(macs) == 1 and next(iter(macs)).startswith("78:df:72") for macs in xiaobai.values()), xiaobai
    assert xiaobai["10.0.1.165"] != xiaobai["10.1.1.165"]
    # Every header moved (ICMP errors quote the original header inside, which tcprewrite leaves as it was).
    assert not tshark_fields(a, "ip.src", display_filter="ip.addr == 192.168.0.0/16 and not icmp")
    first = {site: min(float(t) for t, _m, src in rows if src.startswith(f"10.{site}.")) for site in (0, 1)}
    last0 = max(float(t) for t, _m, src in rows if src.startswith("10.0."))
    if layout == "sequential":
        assert first[1] > last0   # one site after the other
    else:
        assert first[1] - first[0] == pytest.approx(7, abs=1) and first[1] < last0   # side by side


@pytest.mark.parametrize("state", ["as-is", "from-disk"])
def test_replay_benchmark_says_which_page_cache_state_it_measured_and_what_mapping_costs_in_it(tmp_path, state):
    """How the cached capture's pages came there moves whole-process times by a fifth (docs/benchmarks.md), so a
    run records the state it chose and what a map of the file costs in it; from-disk works on a capture just
    written, whose pages are still dirty."""
    capture = tmp_path / "bench.pcap"
    assert bench("make_capture.py", capture, "-n", 5_000, "--site", "vlan100").returncode == 0
    out = tmp_path / "results.json"
    r = bench("replay_peers.py", "--capture", capture, "--only", "floor", "--repeat", 1, "--page-cache", state,
              "--json", out)
    assert r.returncode == 0, r.stderr
    cost = re.search(rf"page cache {state}: mapping the file costs (\d+) ms of CPU", r.stdout)
    assert cost, r.stdout
    recorded = json.loads(out.read_text())["page_cache"]
    assert recorded["state"] == state and recorded["map_cpu_seconds"] >= 0
    assert round(recorded["map_cpu_seconds"] * 1000) == int(cost.group(1))
    (row,) = json.loads(out.read_text())["results"]
    assert row["tool"] == "floor" and row["status"] == "ok"


def test_replay_benchmark_times_whole_processes_and_prints_the_issue_row(tmp_path):
    capture = tmp_path / "bench.pcap"
    assert bench("make_capture.py", capture, "-n", 5_000, "--site", "vlan100").returncode == 0
    out = tmp_path / "results.json"
    r = bench("replay_peers.py", "--capture", capture, "--repeat", 2, "--row", "small vlan100", "--json", out)
    assert r.returncode == 0, r.stderr
    results = {row["tool"]: row for row in json.loads(out.read_text())["results"]}
    assert set(results) == {"floor", "camwatch", "camwatch-cli", "nfstream"}
    for name in ("floor", "camwatch", "camwatch-cli"):
        row = results[name]
        assert row["status"] == "ok" and len(row["whole_seconds_all"]) == 2, row
        # A whole process includes its own timed region; the CLI is timed as a whole process only.
        assert row["whole_seconds"] >= row["seconds"] > 0 and row["whole_cpu"] > 0
    assert results["camwatch-cli"]["whole_seconds"] == results["camwatch-cli"]["seconds"]
    if results["nfstream"]["status"] == "ok":   # nfstream comes from bench/requirements.txt, not the test env
        assert "| small vlan100 | 5,000 |" in r.stdout
    else:
        assert "--row needs" in r.stderr


def test_observe_clocks_time_every_detector_hook_and_the_camera_side(tmp_path):
    """bench/observe_clocks.py: a row per detector that observed and for the incidents' traffic, each with calls
    and a per-call time, on a capture whose cameras talk to the Internet."""
    capture = tmp_path / "expanded.pcap"   # real cameras' sites, which reach the Internet
    assert bench("make_expanded.py", capture, "-n", 4 * SITE_PACKETS).returncode == 0
    r = bench("observe_clocks.py", capture)
    assert r.returncode == 0, r.stderr
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in r.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| function")}
    assert "Enricher._camera_side (and detection)" in rows and "Enricher.flow_update (and the camera side)" in rows
    observed = [name for name in rows if name.startswith("observe: ")]
    assert "observe: egress_policy" in observed and len(observed) >= 4
    for name in observed:
        seconds, calls, per_call = rows[name]
        assert int(calls.replace(",", "")) > 0 and float(per_call.rstrip(" |")) > 0


def test_peer_runs_use_compiled_bytecode_even_under_dontwritebytecode(tmp_path, monkeypatch):
    # An installed camwatch runs from pip's compiled bytecode, as the peers do; an editable checkout under
    # PYTHONDONTWRITEBYTECODE=1 would pay for compiling every module on every timed run.
    import importlib.util

    spec = importlib.util.spec_from_file_location("replay_peers_under_test", BENCH / "replay_peers.py")
    peers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peers)
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setattr(peers, "DEFAULT_DIR", tmp_path)
    env = peers._bytecode_env(REPO)
    assert "PYTHONDONTWRITEBYTECODE" not in env
    cache = sorted(tmp_path.joinpath("pycache").rglob("*.pyc"))
    assert any(p.parent.name == "cli" and p.parent.parent.name == "sensor" and p.name.startswith("__init__.")
               for p in cache), cache[:5]
    marker = "import sys; print(sys.modules['sensor.cli'].__cached__)"
    out = subprocess.run([sys.executable, "-c", f"import sensor.cli; {marker}"], env=env, cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out.startswith(str(tmp_path)), out
