"""A flood of forged identities on the camera VLAN costs bounded memory, bounded state and a bounded number of
alert lines, and the site's established devices survive it."""

from __future__ import annotations

import ipaddress
import json
import sqlite3

from conftest import alerts_of, camwatch

from packets import PcapWriter, ethernet, ip, mac, tcp
from sensor.alerting import FLOOD_DEVICES
from sensor.config import parse_config
from sensor.detect import tracked_pairs
from sensor.pipeline import Sensor

CAMERA_MAC = mac("18:68:cb:00:00:14")   # Hikvision
GATEWAY_MAC = mac("00:11:32:00:00:01")


# ---- identity floods -------------------------------------------------------------------------------------------
def forged_sources(path, n: int, t0: float = 1_700_000_100.0, rate: float = 10_000.0, established=()):
    """A camera that has been talking for a minute, then n forged camera-side sources each sending one SYN to a
    different public address, then the real camera again."""
    with PcapWriter(path) as w:
        for cam in established:
            for i in range(60):
                w.write(t0 - 60 + i, ethernet(GATEWAY_MAC, CAMERA_MAC, 0x0800, ip(
                    cam, "203.0.113.50", 6, tcp(cam, "203.0.113.50", 40000, 443, i, 0, "A", b"x" * 200))))
        for i in range(n):
            src = str(ipaddress.IPv4Address(0x0A000001 + i))
            dst = str(ipaddress.IPv4Address(0x0B000001 + i))
            w.write(t0 + i / rate, ethernet(GATEWAY_MAC, CAMERA_MAC, 0x0800, ip(
                src, dst, 6, tcp(src, dst, 1024 + i % 60000, 443, 0, 0, "S"))))
        for cam in established:
            w.write(t0 + n / rate + 1, ethernet(GATEWAY_MAC, CAMERA_MAC, 0x0800, ip(
                cam, "203.0.113.50", 6, tcp(cam, "203.0.113.50", 40000, 443, 99, 0, "A", b"x" * 200))))


def test_a_flood_of_forged_sources_is_one_summary_per_detector_and_bounded_state(tmp_path):
    n, limit = 20_000, 200
    capture = tmp_path / "flood.pcap"
    forged_sources(capture, n, established=("10.99.0.7",))
    config = tmp_path / "c.toml"
    # every forged source made a device (the new-device budget opened wide): the inventory's own bound is tested
    config.write_text(f'[limits]\nmax_devices = {limit}\nnew_devices_burst = {n}\n'
                      f'[state]\npath = "{tmp_path / "state.db"}"\n')
    metrics = tmp_path / "m.prom"
    proc = camwatch("replay", capture, "--config", config, "--metrics-out", metrics, timeout=300)
    assert proc.returncode == 0, proc.stderr
    alerts = alerts_of(proc.stdout)
    summaries = [a for a in alerts if "flood" in a]
    # FLOOD_DEVICES incidents per detector, then one summary: never a line per source; only what was written closes
    opened = [a for a in alerts if a["event"] == "open"]
    assert len(opened) + len(summaries) <= 2 * (FLOOD_DEVICES + 2)
    assert sum(1 for a in alerts if a["event"] == "close") == len(opened)
    assert [s["detector"] for s in summaries] == ["egress_policy"]
    flood = summaries[0]["flood"]
    # the real camera's alert, a minute earlier, was in a flood window of its own
    assert flood["alerts"] == flood["devices"] == n - FLOOD_DEVICES
    assert "Flood on VLAN 0" in summaries[0]["summary"]
    text = metrics.read_text()
    assert f'camwatch_alerts_suppressed_total{{detector="egress_policy",sensor="camwatch"}} {n - FLOOD_DEVICES}.0' \
        in text
    assert f'camwatch_devices_evicted_total{{sensor="camwatch"}} {n + 1 - limit}.0' in text
    # the camera that had been talking before the flood is still known, with its history
    db = sqlite3.connect(tmp_path / "state.db")
    bounds = {"device": limit, "inventory": limit, "destination": limit, "episode": tracked_pairs(limit)}
    for table, bound in bounds.items():
        (rows,) = db.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert rows <= bound, table   # bounded by the limits, not by the flood
    (devices,) = db.execute("SELECT count(*) FROM device").fetchone()
    assert devices == 1   # forged one-packet sources never established themselves
    doc = json.loads(db.execute("SELECT doc FROM inventory WHERE ip = '10.99.0.7'").fetchone()[0])
    assert doc["packets_sent"] == 61


def test_an_established_camera_keeps_its_identity_through_a_flood():
    config = parse_config({"limits": {"max_devices": 50, "new_devices_burst": 10_000}})
    sensor = Sensor(config)
    cam = sensor.inventory.touch("10.99.0.7", int.from_bytes(CAMERA_MAC, "big"), 1000.0)
    sensor.inventory.add_identity(cam, {"model": "DS-2CD2042WD"})
    sensor.inventory.touch("10.99.0.7", 0, 1005.0)   # sends again: established
    for i in range(10_000):
        sensor.inventory.touch(f"10.1.{i >> 8}.{i & 0xFF}", 0, 1006.0 + i / 1000)
    assert len(sensor.inventory) == 50
    assert sensor.inventory.devices.get("10.99.0.7").identity["model"] == "DS-2CD2042WD"
    assert sensor.inventory.evicted == 10_000 + 1 - 50
    sensor.close()


def test_the_new_device_budget_holds_a_flood_back_and_lets_a_real_newcomer_in(tmp_path):
    """Default budget, a fresh sensor: the start allowance (max_devices) and then new_devices_per_second make
    devices; every other forged source is a held sighting. A camera new to the sensor that keeps sending after
    the flood becomes a device, and the camera known before it keeps being analysed."""
    n, limit = 30_000, 2_000
    capture = tmp_path / "flood.pcap"
    forged_sources(capture, n, established=("10.99.0.7",))   # 3 s of flood at 10,000 sources a second
    newcomer = tmp_path / "newcomer.pcap"
    with PcapWriter(newcomer) as w:
        for i in range(3):   # a camera new to the sensor, after the flood, sending in three seconds
            w.write(1_700_000_110.0 + i, ethernet(GATEWAY_MAC, mac("18:68:cb:00:00:99"), 0x0800, ip(
                "10.98.0.9", "203.0.113.77", 6, tcp("10.98.0.9", "203.0.113.77", 41000, 443, i, 0, "A", b"v" * 300))))
    config = tmp_path / "c.toml"
    config.write_text(f'[limits]\nmax_devices = {limit}\n[state]\npath = "{tmp_path / "state.db"}"\n')
    metrics = tmp_path / "m.prom"
    proc = camwatch("replay", capture, newcomer, "--config", config, "--metrics-out", metrics, timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = metrics.read_text()
    held = int(float(text.split('camwatch_devices_held_total{sensor="camwatch"} ')[1].split()[0]))
    made = n + 1 - held    # the forged sources and the known camera that became devices
    assert limit <= made <= limit + 100 * 4   # the start allowance, then 100 a second for the flood's 3 s
    evicted = int(float(text.split('camwatch_devices_evicted_total{sensor="camwatch"} ')[1].split()[0]))
    assert evicted == made + 1 - limit   # the newcomer came in as well, through the same bound
    db = sqlite3.connect(tmp_path / "state.db")
    sent = dict(db.execute("SELECT ip, json_extract(doc, '$.packets_sent') FROM inventory "
                           "WHERE ip IN ('10.98.0.9', '10.99.0.7')").fetchall())
    assert sent == {"10.98.0.9": 3, "10.99.0.7": 61}
    alerts = alerts_of(proc.stdout)
    assert len(alerts) <= 2 * (FLOOD_DEVICES + 2) + 4


def _replayed(path, config: dict) -> tuple:
    """The in-process replay of a capture: held sightings, devices, alert counts, evictions."""
    from sensor.capture import open_file

    sensor = Sensor(parse_config(config))
    reader, _ = open_file(path)
    for batch in reader:
        sensor.process(batch)
    sensor.finish()
    inv = sensor.inventory
    out = (inv.admission.held, inv.admission.tokens, inv.evicted, sorted(inv._by_address),
           sorted((d.id, d.packets_sent, d.bytes_sent, d.first_seen, d.last_seen) for d in inv.devices.values()),
           sorted(sensor.alert_counts.items()), sorted(sensor.suppressed.items()),
           sensor.enricher.link.learned_state(), sensor.enricher.link._candidates.items())
    sensor.close()
    return out


def test_a_flood_settled_a_window_at_a_time_holds_back_exactly_what_one_flow_at_a_time_holds(tmp_path,
                                                                                            monkeypatch):
    """The 30,000-source flood above, with the known camera and a newcomer: new_flows (a window's flows settled
    together, sensor.enrich.new_flows) and flow_update flow by flow make the same devices, held sightings, alerts
    and link sightings, zero-config and with the camera network configured."""
    from sensor.enrich.stage import Enricher
    from sensor.flows import new_update

    capture = tmp_path / "flood.pcap"
    forged_sources(capture, 30_000, established=("10.99.0.7",))
    for config in ({"limits": {"max_devices": 2_000}},
                   {"limits": {"max_devices": 500}, "networks": {"camera": ["10.0.0.0/8"]}}):
        fast = _replayed(capture, config)
        with monkeypatch.context() as m:
            m.setattr(Enricher, "new_flows", lambda self, flows: [self.flow_update(new_update(f)) for f in flows])
            reference = _replayed(capture, config)
        assert fast == reference
        assert reference[0] > 25_000   # held back: the batch's way was taken
