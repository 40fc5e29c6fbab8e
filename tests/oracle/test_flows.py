"""Flow table: bidirectional keys, direction, per-direction counts, state, timeouts and the max_flows cap."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import REAL, SYNTHETIC, tshark_fields

from packets import PcapWriter, ethernet, ipv4, mac, tcp, udp
from sensor.capture import open_file
from sensor.config import Config, FlowSettings
from sensor.pipeline import Sensor

A_MAC, B_MAC = mac("04:03:12:00:00:01"), mac("00:11:32:00:00:02")


def run(path: Path, config: Config | None = None) -> tuple[Sensor, list]:
    """Replay a file; returns the sensor and every flow that ended (expired, evicted or flushed)."""
    ended = []
    sensor = Sensor(config or Config())
    sensor.flows.on_end = lambda flow, reason: ended.append(flow)
    reader, _ = open_file(path)
    for batch in reader:
        sensor.process(batch)
    sensor.finish()
    return sensor, ended


def tshark_conversations(path: Path, kind: str) -> list[tuple[str, str, int, int, int, int]]:
    """(endpoint A, endpoint B, frames A->B, bytes A->B, frames B->A, bytes B->A) from tshark -z conv."""
    out = subprocess.run(["tshark", "-n", "-q", "-r", str(path), "-z", f"conv,{kind}"], capture_output=True,
                         text=True, check=True).stdout
    convs = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) > 10 and parts[1] == "<->":
            # A <-> B, frames and bytes B->A, A->B, then total frames at column 9
            convs.append(parts)
    return convs


@pytest.mark.parametrize("path", [SYNTHETIC / "camera_site.pcap", REAL / "nku-lifecycle/xiaobai_Y2camera_setup.pcap",
                                  REAL / "iot-sentinel/D-LinkCam/Setup-A-1-STA.pcap"], ids=lambda p: p.name)
def test_tcp_and_udp_flows_match_tshark_conversations(path):
    """Captures shorter than every idle timeout: one flow per tshark conversation, same totals."""
    _, ended = run(path)
    for kind, proto in (("tcp", 6), ("udp", 17)):
        convs = tshark_conversations(path, kind)
        ours = [f for f in ended if f.proto == proto]
        assert len(ours) == len(convs), kind
        # tshark's total frames per conversation, as a multiset, equals ours
        theirs = sorted(int(c[9]) for c in convs)
        assert sorted(f.orig_pkts + f.resp_pkts for f in ours) == theirs


def test_rtsp_session_direction_counts_and_state():
    _, ended = run(SYNTHETIC / "camera_site.pcap")
    rtsp = [f for f in ended if f.proto == 6 and f.resp_port == 554]
    assert len(rtsp) == 5
    for f in rtsp:
        assert str(f.orig_ip) == "10.20.0.2"           # the NVR opened it, although the camera is the 'server'
        assert f.orig_pkts > 3 and f.resp_pkts > 3
        assert f.state == "S1"                           # established, never closed in the capture
    cloud = [f for f in ended if f.proto == 6 and f.resp_port == 8555]
    assert len(cloud) == 1 and cloud[0].state == "SF" and str(cloud[0].orig_ip) == "10.20.0.14"
    rtp = [f for f in ended if f.proto == 17 and f.orig_port == 6970]
    assert len(rtp) == 5
    assert all(f.orig_bytes > 100 * f.resp_bytes for f in rtp)  # video flows one way only


def write_udp(path: Path, times: list[float], sport: int = 5000, dport: int = 6000, src: str = "10.0.0.1",
              dst: str = "10.0.0.2") -> None:
    with PcapWriter(path) as w:
        for t in times:
            w.write(t, ethernet(B_MAC, A_MAC, 0x0800, ipv4(src, dst, 17, udp(src, dst, sport, dport, b"x" * 20))))


def test_udp_idle_timeout_splits_on_packet_time(tmp_path):
    path = tmp_path / "gap.pcap"
    write_udp(path, [1000.0, 1030.0, 1090.5, 1091.0])  # 60.5 s of silence after the second packet
    sensor, ended = run(path)
    assert sensor.flows.created == 2
    assert sorted(f.orig_pkts for f in ended) == [2, 2]
    assert sensor.flows.expired["idle"] == 1 and sensor.flows.expired["end"] == 1


def test_active_timeout_cuts_long_flows(tmp_path):
    path = tmp_path / "long.pcap"
    write_udp(path, [1000.0 + 30 * k for k in range(10)])  # 270 s, one packet every 30 s
    sensor, ended = run(path, Config(flows=FlowSettings(active_timeout=100.0)))
    assert sensor.flows.created >= 2
    assert sum(f.orig_pkts for f in ended) == 10
    assert sensor.flows.expired["active"] >= 1


def test_max_flows_evicts_and_counts(tmp_path):
    path = tmp_path / "scan.pcap"
    with PcapWriter(path) as w:
        for port in range(1, 501):
            seg = tcp("10.0.0.1", "10.0.0.2", 40000, port, 1, 0, "S")
            w.write(1000 + port / 1000, ethernet(B_MAC, A_MAC, 0x0800, ipv4("10.0.0.1", "10.0.0.2", 6, seg)))
    sensor, ended = run(path, Config(flows=FlowSettings(max_flows=100)))
    assert sensor.flows.created == 500
    assert sensor.flows.expired["evicted"] == 400
    assert len(sensor.flows) == 0 and len(ended) == 500


def test_tcp_port_reuse_after_close_is_a_new_flow(tmp_path):
    path = tmp_path / "reuse.pcap"
    c, s = "10.0.0.1", "10.0.0.2"
    segs = [(c, s, 40000, 80, "S"), (s, c, 80, 40000, "SA"), (c, s, 40000, 80, "A"), (c, s, 40000, 80, "FA"),
            (s, c, 80, 40000, "FA"), (c, s, 40000, 80, "A"), (c, s, 40000, 80, "S"), (s, c, 80, 40000, "SA")]
    with PcapWriter(path) as w:
        for k, (src, dst, sp, dp, fl) in enumerate(segs):
            w.write(1000 + k * 2.0, ethernet(B_MAC, A_MAC, 0x0800, ipv4(src, dst, 6, tcp(src, dst, sp, dp, 1, 1, fl))))
    sensor, ended = run(path)
    assert sensor.flows.created == 2
    first = min(ended, key=lambda f: f.first)
    assert first.state == "SF" and first.orig_pkts == 4 and first.resp_pkts == 2


def test_midstream_server_packet_is_oriented_by_port(tmp_path):
    path = tmp_path / "mid.pcap"
    c, s = "10.0.0.1", "10.0.0.2"
    with PcapWriter(path) as w:
        w.write(1000, ethernet(A_MAC, B_MAC, 0x0800, ipv4(s, c, 6, tcp(s, c, 554, 40000, 1, 1, "PA", b"RTSP/1.0 200"))))
    _, ended = run(path)
    assert str(ended[0].orig_ip) == c and ended[0].resp_port == 554 and ended[0].state == "OTH"


def replay_with_read_size(path: Path, chunk_bytes: int, monkeypatch, model=None, config: Config | None = None):
    """What each alert is about (its wording may quote the packets seen so far, which depends on where a batch
    ended) and the summary of a replay that reads the file `chunk_bytes` at a time."""
    import sensor.capture as capture
    monkeypatch.setattr(capture, "CHUNK_BYTES", chunk_bytes)
    alerts = []
    sensor = Sensor(config or Config(), model=model, on_alert=lambda a: alerts.append(
        (a.detector, a.severity, a.device_ip, a.dst_ip, a.dst_port, a.dst_proto, a.dst_name, a.dst_scope,
         round(a.ts, 6))))
    reader, _ = open_file(path)
    batches = 0
    for batch in reader:
        sensor.process(batch)
        batches += 1
    sensor.finish()
    return sorted(alerts), sensor.summary(), batches


@pytest.mark.parametrize("path", sorted(SYNTHETIC.rglob("*.pcap*")) + sorted(REAL.rglob("*.pcap*")),
                         ids=lambda p: p.name)
def test_alerts_and_counts_do_not_depend_on_how_the_input_is_read(path, monkeypatch):
    # Live, batches are whatever the pipe delivered; in replay, file chunks. Detectors see each flow once per
    # second of capture time, so the outcome must not follow batch boundaries. (A flow's first sight is the
    # exception: it is reported with the batch that brought its first packets, so that it reaches the detectors
    # without waiting for the second to end. Reads of 1 KiB, a dozen packets, keep those together here.)
    whole = replay_with_read_size(path, 8 << 20, monkeypatch)
    pieces = replay_with_read_size(path, 1024, monkeypatch)
    assert pieces[2] > whole[2] >= 1 or path.stat().st_size < 2048
    assert pieces[:2] == whole[:2]


def tshark_directions(path: Path, times: dict | None = None) -> dict[tuple, list[int]]:
    """(proto, src, sport, dst, dport) -> [frames, frame bytes, transport payload bytes], from tshark's own
    dissection of every TCP and UDP packet (ICMP errors quoting a datagram left out). `times`, if given, gets each
    direction's first and last packet time (epoch seconds, as tshark prints them)."""
    rows = tshark_fields(path, "frame.len", "ip.src", "ipv6.src", "ip.dst", "ipv6.dst", "tcp.srcport",
                         "tcp.dstport", "udp.srcport", "udp.dstport", "tcp.len", "udp.length", "frame.time_epoch",
                         display_filter="(tcp or udp) and not icmp and not icmpv6")
    out: dict[tuple, list[int]] = {}
    for length, src4, src6, dst4, dst6, tsport, tdport, usport, udport, tlen, ulen, epoch in rows:
        tcp_row = bool(tsport)
        key = ("tcp" if tcp_row else "udp", src4 or src6, int(tsport or usport), dst4 or dst6, int(tdport or udport))
        entry = out.setdefault(key, [0, 0, 0])
        entry[0] += 1
        entry[1] += int(length)
        entry[2] += int(tlen) if tcp_row else int(ulen) - 8
        if times is not None:
            first, last = times.get(key, (float(epoch), float(epoch)))
            times[key] = (min(first, float(epoch)), max(last, float(epoch)))
    return out


@pytest.mark.parametrize("path", [SYNTHETIC / "camera_site.pcap", REAL / "nku-lifecycle/xiaobai_Y2camera_setup.pcap",
                                  REAL / "iot-sentinel/D-LinkCam/Setup-A-1-STA.pcap", REAL / "ndpi/rtsp.pcap"],
                         ids=lambda p: p.name)
def test_flow_records_agree_with_tshark_field_by_field(path, tmp_path):
    """Each TCP/UDP record of the flow log (--flows): its packets, bytes on the wire and payload bytes, each way,
    equal what tshark dissects for that direction, and so do its first packet's time and its duration."""
    import json

    from sensor.export.flow_log import FlowLog

    sensor = Sensor(Config())
    log = FlowLog(str(tmp_path / "flows.jsonl"))
    log.attach(sensor)
    reader, _ = open_file(path)
    for batch in reader:
        sensor.process(batch)
    sensor.finish()
    log.close()
    records = [json.loads(line) for line in (tmp_path / "flows.jsonl").read_text().splitlines()]
    times: dict[tuple, tuple[float, float]] = {}
    theirs = tshark_directions(path, times)
    ours: dict[tuple, list[int]] = {}
    for r in records:
        if r["proto"] not in ("tcp", "udp"):
            continue
        ends = ((r["id.orig_h"], r["id.orig_p"]), (r["id.resp_h"], r["id.resp_p"]))
        for (src, dst), side in ((ends, "orig"), (ends[::-1], "resp")):
            counts = [r[f"{side}_pkts"], r[f"camwatch.{side}_wire_bytes"], r[f"{side}_bytes"]]
            if counts[0]:
                entry = ours.setdefault((r["proto"], *src, *dst), [0, 0, 0])
                entry[:] = [a + b for a, b in zip(entry, counts, strict=True)]
    # A TCP port pair used again after a close, or a flow past a timeout, is several records here and one
    # conversation to tshark: the sums per direction are what must agree.
    assert ours == theirs
    pairs = {frozenset(((k[1], k[2]), (k[3], k[4]))) for k in theirs}
    assert len(pairs) <= len([r for r in records if r["proto"] in ("tcp", "udp")])
    # where a conversation is one record, its first packet and duration are tshark's too
    per_pair: dict[tuple, list[dict]] = {}
    for r in records:
        if r["proto"] in ("tcp", "udp"):
            per_pair.setdefault((r["proto"], r["id.orig_h"], r["id.orig_p"], r["id.resp_h"], r["id.resp_p"]),
                                []).append(r)
    alone = [rs[0] for rs in per_pair.values() if len(rs) == 1]
    assert alone
    for r in alone:
        spans = [times[k] for k in ((r["proto"], r["id.orig_h"], r["id.orig_p"], r["id.resp_h"], r["id.resp_p"]),
                                    (r["proto"], r["id.resp_h"], r["id.resp_p"], r["id.orig_h"], r["id.orig_p"]))
                 if k in times]
        first, last = min(s[0] for s in spans), max(s[1] for s in spans)
        assert r["ts"] == pytest.approx(first, abs=1e-6) and r["duration"] == pytest.approx(last - first, abs=2e-6)
