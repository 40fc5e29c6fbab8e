"""The CLI end to end, as a user runs it: alerts, summary, metrics, errors and exit codes."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request

import pytest
from conftest import (
    REAL,
    SYNTHETIC,
    addresses_of,
    alerts_of,
    all_fixtures,
    camwatch,
    capinfos,
    evidence_of,
    fixture_id,
    metric_values,
    names_of,
    value,
)

SITE = SYNTHETIC / "camera_site.pcap"
SITE_CONFIG = SYNTHETIC / "camera_site.toml"
ALERT_KEYS = {"ts", "sensor", "detector", "severity", "device", "destination", "score", "summary"}


@pytest.fixture(scope="module")
def site_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    proc = camwatch("replay", SITE, "--config", SITE_CONFIG, "--metrics-out", out / "metrics.prom")
    return proc, (out / "metrics.prom").read_text()


def test_demo_capture_alerts_only_on_the_phone_home_camera(site_run):
    """One incident: the Hikvision camera and its vendor's cloud. The lookup, the connection by name, the IP-literal
    P2P port and the TLS session by SNI are all its evidence; it opens once and closes at the end with totals."""
    proc, _ = site_run
    assert proc.returncode == 0, proc.stderr
    alerts = alerts_of(proc.stdout)
    assert [a["event"] for a in alerts] == ["open", "close"]
    opened, closed = alerts
    assert opened["incident"] == closed["incident"] and opened["contract"] == 2
    assert opened["service"] == {"id": "hik-connect", "name": "Hik-Connect / EZVIZ cloud (Hikvision)",
                                 "kind": "vendor"}
    assert (opened["detector"], opened["severity"]) == ("vendor_cloud", "high")   # Hikvision is a covered maker
    assert set(opened["detectors"]) == {"vendor_cloud", "egress_policy"}
    by_detector = {(e["detector"], e["severity"]) for e in opened["evidence"]}
    # the lookup of the vendor's name (medium), the connection to it (high), egress of a covered maker (high)
    assert by_detector == {("vendor_cloud", "high"), ("vendor_cloud", "medium"), ("egress_policy", "high")}
    # the DNS query's capture time: the lookup is the incident's first evidence
    assert opened["ts"] == pytest.approx(1_700_000_003.0)
    for a in alerts:
        assert ALERT_KEYS <= set(a)
        assert a["sensor"] == "demo-site"
        assert a["device"] == {"ip": "10.20.0.14", "mac": "18:68:cb:00:00:14",
                               "vendor": "Hangzhou Hikvision Digital Technology Co.,Ltd."}
        assert a["destination"]["scope"] == "public" and 0.0 <= a["score"] <= 1.0
    assert opened["destination"]["ip"] in opened["summary"]
    assert (opened["destination"]["ip"], opened["destination"]["port"], opened["destination"]["name"]) == (
        "203.0.113.50", 8555, "litedev.hik-connect.com")
    totals = closed["totals"]
    # by the DNS CNAME chain's query name, by nothing (an IP literal on a Hik-Connect port), and by the TLS SNI
    assert set(totals["addresses"]) == {"203.0.113.50", "198.51.100.20", "203.0.113.60"}
    assert set(totals["names"]) == {"litedev.hik-connect.com", "dev.hik-connect.com"}
    assert closed["reason"] == "end" and totals["packets_out"] > 0 and totals["bytes_in"] > 0


def test_summary_on_stderr(site_run):
    proc, _ = site_run
    packets = capinfos(SITE)["packets"]
    assert f"{packets:,} packets" in proc.stderr
    assert "incidents:             1 (2 lines written: close: 1, open: 1)" in proc.stderr
    # vendor_cloud: the lookup, the name, the IP literal on a Hik-Connect port, the TLS session's SNI
    assert "detections:            7 (egress_policy: 3, vendor_cloud: 4)" in proc.stderr
    assert "devices:               7" in proc.stderr
    assert "external destinations: 3" in proc.stderr


def test_metrics_file_counts_what_capinfos_counts(site_run):
    _, text = site_run
    m = metric_values(text)
    info = capinfos(SITE)
    assert value(m, "camwatch_packets_total", sensor="demo-site") == info["packets"]
    assert value(m, "camwatch_bytes_total") == info["bytes"]
    assert value(m, "camwatch_alerts_total", detector="egress_policy", severity="high") == 3  # a covered maker
    assert value(m, "camwatch_alerts_total", detector="egress_policy", severity="critical") == 0
    assert value(m, "camwatch_decoded_packets_total", network="arp") == 6
    assert value(m, "camwatch_devices") == 7
    assert value(m, "camwatch_flows_active") == 0
    assert value(m, "camwatch_flows_expired_total") == value(m, "camwatch_flows_created_total")
    assert value(m, "camwatch_flows_expired_total", reason="idle") == 1  # the TLS session, 5 s after its FINs
    public = value(m, "camwatch_device_egress_bytes_total", device="10.20.0.14", scope="public")
    assert public > 0
    # nothing else left for the Internet
    assert sum(v for (n, ls), v in m.items() if n == "camwatch_device_egress_bytes_total"
               and dict(ls)["scope"] == "public") == public


def test_metrics_pass_promtool_lint(site_run):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (scripts/test.sh installs it)")
    _, text = site_run
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_allowlist_by_dns_pattern_silences_the_cloud_alerts(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[networks]\ncamera = ["10.20.0.0/24"]\n[[allow]]\ndst = "*.hik-connect.com"\n'
                      '[[allow]]\ndst = "198.51.100.0/24"\nport = 6002\nproto = "udp"\n')
    proc = camwatch("replay", SITE, "--config", config)
    assert proc.returncode == 0, proc.stderr
    assert alerts_of(proc.stdout) == []


def test_core_network_access_is_a_segmentation_alert_not_egress(tmp_path):
    config = tmp_path / "c.toml"
    # Declare the documentation range a core network: the camera reaching it is now a segmentation breach.
    config.write_text('[networks]\ncamera = ["10.20.0.0/24"]\ncore = ["203.0.113.0/24"]\n')
    lines = alerts_of(camwatch("replay", SITE, "--config", config).stdout)
    found = evidence_of(lines)
    segmentation = [text for _, det, sev, text in found if det == "segmentation" and sev == "high"]
    assert sorted(ip for text in segmentation for ip in ("203.0.113.50", "203.0.113.60") if ip in text) == [
        "203.0.113.50", "203.0.113.60"]
    egress = [text for _, det, _, text in found if det == "egress_policy"]
    assert len(egress) == 1 and "198.51.100.20" in egress[0]
    assert all(a["destination"]["scope"] != "core" or a["detector"] in ("segmentation", "vendor_cloud")
               for a in lines)


def test_alerts_to_file_and_stdout_is_clean(tmp_path):
    out = tmp_path / "alerts.jsonl"
    proc = camwatch("replay", SITE, "--alerts", out)
    assert proc.returncode == 0
    assert proc.stdout == ""
    assert [a["event"] for a in alerts_of(out.read_text())] == ["open", "close"]


REAL_INTERNET = {  # real camera captures that reach the Internet, and what they must be seen reaching
    "nku-lifecycle/xiaobai_Y2camera_setup.pcap": ("192.168.1.165", {"110.43.87.34", "42.157.163.171"}),
    "neu-intl-iot/yi_camera_sample.pcap": ("192.168.10.204", {"47.88.59.209", "47.90.240.160", "47.74.255.9"}),
    "iot-sentinel/D-LinkCam/Setup-A-1-STA.pcap": ("10.10.10.37", {"54.229.64.81", "52.8.178.58", "54.194.162.61"}),
}
REAL_LAN_ONLY = ["iot-sentinel/D-LinkDayCam/Setup-A-1-STA.pcap", "iot-sentinel/EdimaxCam1/Setup-A-1-STA.pcap"]


@pytest.mark.parametrize("name", sorted(REAL_INTERNET))
def test_real_cameras_reaching_the_internet_are_flagged(name):
    camera, destinations = REAL_INTERNET[name]
    alerts = alerts_of(camwatch("replay", REAL / name).stdout)
    assert destinations <= addresses_of(alerts, camera)


def test_real_xiaobai_alerts_carry_the_p2p_and_api_hostnames():
    alerts = alerts_of(camwatch("replay", REAL / "nku-lifecycle/xiaobai_Y2camera_setup.pcap").stdout)
    assert {"xiaomi8.p2psy2.io.mi.com", "xiaomi8.p2psy3.io.mi.com", "business.smartcamera.api.io.mi.com"} <= names_of(
        alerts)
    assert all(a["device"]["vendor"] == "Shanghai Imilab Technology Co.Ltd" for a in alerts)


@pytest.mark.parametrize("name", REAL_LAN_ONLY)
def test_real_lan_only_cameras_raise_nothing_of_substance(name):
    proc = camwatch("replay", REAL / name)
    assert proc.returncode == 0
    alerts = alerts_of(proc.stdout)
    assert all(a["severity"] in ("info", "low") for a in alerts)
    assert not any(a["destination"]["scope"] in ("public", "core") for a in alerts)
    igd = [a for a in alerts if a["service"]["id"] == "upnp-igd"]
    # both really do search for an Internet gateway (ST: InternetGatewayDevice / WANIPConnection): one low incident
    assert [a["event"] for a in igd] == ["open", "close"] and len(alerts) == 2


@pytest.mark.parametrize("path", all_fixtures(), ids=fixture_id)
def test_every_fixture_replays_cleanly(path):
    proc = camwatch("replay", path, "--alerts", "/dev/null")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"{capinfos(path)['packets']:,} packets" in proc.stderr


# ---- bad input: one line, non-zero, nothing processed is lost ---------------------------------------------
def one_line_error(proc) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(("camwatch: error", "camwatch: config error"))]
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_missing_file(tmp_path):
    proc = camwatch("replay", tmp_path / "nope.pcap")
    assert proc.returncode == 2
    assert "no such file" in one_line_error(proc)


def test_not_a_capture(tmp_path):
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"this is not a capture file at all")
    proc = camwatch("replay", bad)
    assert proc.returncode == 1
    assert "not a pcap or pcapng file" in one_line_error(proc)
    assert proc.stderr.count("\n") == 1   # nothing was read: the fault alone, no summary of zeros


def test_truncated_capture_keeps_alerts_and_metrics(tmp_path):
    data = SITE.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) - 700])
    proc = camwatch("replay", cut, "--metrics-out", tmp_path / "m.prom")
    assert proc.returncode == 1
    line = one_line_error(proc)
    assert "truncated" in line and "at byte" in line
    assert [a["event"] for a in alerts_of(proc.stdout)] == ["open", "close"]
    m = metric_values((tmp_path / "m.prom").read_text())
    assert value(m, "camwatch_packets_total") == capinfos(SITE)["packets"] - 1


def test_good_files_after_a_bad_one_are_still_processed(tmp_path):
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"\0" * 100)
    proc = camwatch("replay", bad, SITE)
    assert proc.returncode == 1
    assert [a["event"] for a in alerts_of(proc.stdout)] == ["open", "close"]


@pytest.mark.parametrize("output", ["--alerts", "--flows", "--metrics-out"])
def test_an_output_never_names_an_input(tmp_path, output):
    """An output on a file the replay reads would destroy it (the logs start afresh before the capture is read; the
    metrics file replaces its target at the end): refused before anything is opened, a hard link too."""
    capture, config = tmp_path / "site.pcap", tmp_path / "site.toml"
    shutil.copy(SITE, capture)
    shutil.copy(SITE_CONFIG, config)
    (tmp_path / "link.pcap").hardlink_to(capture)
    state = tmp_path / "state.db"
    config.write_text(config.read_text() + f'\n[state]\npath = "{state}"\n')
    for target, what in ((capture, "a capture it reads"), (tmp_path / "link.pcap", "a capture it reads"),
                         (config, "its config"), (state, "its state database")):
        before = capture.read_bytes(), config.read_bytes()
        proc = camwatch("replay", capture, "--config", config, output, target, "--quiet")
        assert proc.returncode == 2, target
        assert proc.stderr == f"camwatch: error: {output} names {target}, {what}: the output would destroy it\n"
        assert (capture.read_bytes(), config.read_bytes()) == before
    assert not state.exists()   # refused before the sensor (and its state database) was made


def test_two_outputs_never_share_a_file_but_may_share_a_device(tmp_path):
    same = tmp_path / "out"
    proc = camwatch("replay", SITE, "--alerts", same, "--metrics-out", tmp_path / "." / "out", "--quiet")
    assert proc.returncode == 2 and not same.exists()
    assert proc.stderr == (f"camwatch: error: --alerts and --metrics-out both name {same}: "
                           "give each output its own file\n")
    proc = camwatch("replay", SITE, "--flows", same, "--metrics-out", same, "--quiet")
    assert proc.returncode == 2 and "--flows and --metrics-out both name" in proc.stderr


def _device(path, minor: int):
    """A character device node of our own (1, minor: 3 is null, 7 is full), so that a regression replaces it, not
    the system's /dev/null; only root may make one."""
    import os
    import stat
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    except PermissionError:
        pytest.skip("making a device node needs root")
    return path


def _still_device(path, minor: int) -> bool:
    import os
    import stat
    st = os.stat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, minor)


def test_metrics_to_a_device_or_a_pipe_are_written_in_place(tmp_path):
    """A rename over the target would leave a regular file where the device or pipe was (as root, /dev/null
    itself was replaced): what is not a regular file is written to, and stays what it was."""
    import os
    import stat
    import threading
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(pipe.read_bytes()), daemon=True)
    reader.start()
    proc = camwatch("replay", SITE, "--alerts", "/dev/null", "--metrics-out", pipe, "--quiet")
    reader.join(30)
    assert proc.returncode == 0 and stat.S_ISFIFO(pipe.stat().st_mode)
    assert value(metric_values(b"".join(got).decode()), "camwatch_packets_total") == capinfos(SITE)["packets"]
    null = _device(tmp_path / "null", 3)
    proc = camwatch("replay", SITE, "--alerts", null, "--flows", null, "--metrics-out", null, "--quiet")
    assert proc.returncode == 0 and _still_device(null, 3)


def test_a_metrics_file_that_cannot_be_written_is_refused_at_start_or_reported_after_the_summary(tmp_path):
    """A missing directory is found before the capture is read, as --alerts's is; a write that fails at the end
    (a full disk) still leaves the summary and the alerts, then one error line and exit 2."""
    missing = tmp_path / "nodir" / "m.prom"
    proc = camwatch("replay", SITE, "--metrics-out", missing)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"camwatch: error: {missing}: cannot write metrics: No such file or directory\n"
    proc = camwatch("replay", SITE, "--metrics-out", tmp_path)
    assert proc.stderr == f"camwatch: error: {tmp_path}: cannot write metrics: Is a directory\n"
    full = _device(tmp_path / "full", 7)
    proc = camwatch("replay", SITE, "--metrics-out", full)
    assert proc.returncode == 2 and _still_device(full, 7)
    assert [a["event"] for a in alerts_of(proc.stdout)] == ["open", "close"]
    summary, error = proc.stderr.rsplit("camwatch: error: ", 1)
    assert "packets" in summary and "detections" in summary
    assert error == f"{full}: cannot write metrics: No space left on device\n"


@pytest.mark.parametrize("toml,needle", [
    ('[networks]\ncameras = ["10.0.0.0/8"]\n', "unknown key networks.cameras"),
    ('[networks]\ncamera = ["10.0.0.300/8"]\n', "is not an IP network"),
    ('[[allow]]\nport = 554\n', "needs dst"),
    ('[[allow]]\ndst = "10.0.0.1"\nport = 70000\n', "allow[1].port"),
    ('[sensor\nname = "x"\n', "not valid TOML"),
    ('[alarms]\n', "unknown section [alarms]"),
])
def test_bad_config_is_one_clear_line(tmp_path, toml, needle):
    config = tmp_path / "c.toml"
    config.write_text(toml)
    proc = camwatch("replay", SITE, "--config", config)
    assert proc.returncode == 2
    assert needle in one_line_error(proc)


@pytest.mark.parametrize("args,needle", [
    (["--pace", "fastest"], "--pace"),
    (["--serve", "localhost"], "--serve"),
])
def test_bad_options(args, needle):
    proc = camwatch("replay", SITE, *args)
    assert proc.returncode == 2
    assert needle in one_line_error(proc)


def test_serve_during_paced_replay_then_sigterm(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import sys

    from conftest import REPO
    proc = subprocess.Popen([sys.executable, "-m", "sensor", "replay", str(SITE), "--pace", "10x",
                             "--serve", f"127.0.0.1:{port}", "--alerts", str(tmp_path / "a.jsonl")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        seen = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                text = urllib.request.urlopen(url + "/metrics", timeout=2).read().decode()
            except OSError:
                time.sleep(0.2)
                continue
            seen.append(value(metric_values(text), "camwatch_packets_total"))
            if seen[-1] == capinfos(SITE)["packets"]:
                break
            time.sleep(0.3)
        # paced: the count was seen growing, not jumping straight to the end
        assert len(set(seen)) >= 3, seen
        assert seen[-1] == capinfos(SITE)["packets"]
        assert urllib.request.urlopen(url + "/healthz", timeout=2).status == 200
        assert urllib.request.urlopen(url + "/readyz", timeout=2).status == 200
    finally:
        proc.send_signal(__import__("signal").SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    # the replay had ended before the signal: its incident closed at the end of the capture
    assert [(a["event"], a.get("reason")) for a in alerts_of((tmp_path / "a.jsonl").read_text())] == [
        ("open", None), ("close", "end")]


def test_readme_demo_command(tmp_path):
    """scripts/demo.sh, as the README gives it: prints the phone-home alerts and serves the metrics until SIGTERM."""
    import os
    import signal
    import socket

    from conftest import REPO
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, CAMWATCH_LISTEN=f"127.0.0.1:{port}")
    proc = subprocess.Popen(["bash", "scripts/demo.sh"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        total = capinfos(SITE)["packets"]
        deadline = time.monotonic() + 120   # the bootstrap may have work to do on a fresh machine
        seen = None
        while time.monotonic() < deadline and seen != total:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
                seen = value(metric_values(text), "camwatch_packets_total")
            except OSError:
                pass
            time.sleep(0.3)
        assert seen == total
        assert proc.poll() is None  # still serving after the replay
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    alerts = alerts_of(out)
    assert len(alerts) == 2 and {a["device"]["ip"] for a in alerts} == {"10.20.0.14"}
    assert "still serving metrics" in err and "detections:            7" in err
