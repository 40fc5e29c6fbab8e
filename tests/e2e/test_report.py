"""`camwatch report`: ranking (the rule in docs/report.md), content from generated and real captures, state
databases and running sensors, escaping of hostile wire strings in HTML, SVG and CSV, errors, and speed."""

from __future__ import annotations

import csv
import json
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import REAL, REPO, SYNTHETIC, camwatch

from sensor.config import Config
from sensor.report import DeviceRecord, Estate, Incident, Site, context, rank, render_html, safe_cell, write_csv
from sensor.report.sources import clean_doc
from sensor.state import SCHEMA

SITE_PCAP = SYNTHETIC / "camera_site.pcap"
SITE_TOML = SYNTHETIC / "camera_site.toml"
HIKVISION, DAHUA = "18:68:cb:00:00:01", "08:ed:ed:00:00:01"


# ---- helpers -------------------------------------------------------------------------------------------------
class Tags(HTMLParser):
    """Every start tag with its attributes, and the text outside tags, as a browser's tokenizer sees them."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> Tags:
    tags = Tags()
    tags.feed(html)
    return tags


def assert_inert(html: str, page: bool = True) -> None:
    """No script, no event handler, no URL that runs code or fetches anything, nothing that loads a resource."""
    tags = parse(html)
    names = {t for t, _ in tags.tags}
    assert not names & {"script", "img", "iframe", "object", "embed", "link", "base", "form", "image", "use",
                        "foreignobject", "animate", "set"}, names
    for tag, attrs in tags.tags:
        for key, value in attrs.items():
            assert not key.startswith("on"), (tag, key)
            if key in ("href", "src", "xlink:href", "action"):
                assert value.startswith("#"), (tag, key, value)
        if tag == "meta" and attrs.get("http-equiv") == "Content-Security-Policy":
            assert "default-src 'none'" in attrs["content"] and "script-src" not in attrs["content"]
    if page:
        assert sum(1 for t, a in tags.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy") == 1


def device(ip: str, *, covered: bool = True, basis: str | None = "named", public: int = 0, core: int = 0,
           mac: str = HIKVISION, **extra) -> dict:
    doc = {"ip": ip, "mac": mac, "vendor": "Hangzhou Hikvision Digital Technology Co.,Ltd." if covered else "Axis",
           "covered": covered, "maker": "Hikvision" if covered else None, "covered_basis": basis if covered else None,
           "maker_evidence": "mac" if covered else None, "role": "camera", "identity": {"model": "DS-2CD"},
           "first_seen": 1_700_000_000.0, "last_seen": 1_700_086_400.0, "packets_sent": 10, "bytes_sent": 1000,
           "egress_bytes": {"camera": 1000, **({"public": public} if public else {}),
                            **({"core": core} if core else {})},
           "dns_queries": [], "external_destinations": [{"ip": "203.0.113.9", "name": "x.example", "bytes": public}]
           if public else []}
    doc.update(extra)
    cleaned = clean_doc(doc)
    assert cleaned is not None
    return cleaned


def incident(detector: str, ts: float = 1_700_000_100.0, **kw) -> Incident:
    return Incident(detector, ts, ts + 60, kw.pop("destination", "203.0.113.9 tcp/443"), **kw)


def report(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    return camwatch("report", *map(str, args), timeout=timeout)


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ---- the ranking rule (docs/report.md) -----------------------------------------------------------------------
def test_ranking_follows_the_documented_rule():
    sensitive = Site("hq", True, (__import__("ipaddress").ip_network("10.9.0.0/24"),))
    records = {
        "video": DeviceRecord("a", device("10.0.0.1", basis="prc-nil"), alerts=[incident("video_egress")]),
        "cloud+core+internet+sensitive": DeviceRecord(
            "a", device("10.9.0.2", public=50, core=10), episodes=[incident("vendor_cloud", service="hik-connect")]),
        "watched": DeviceRecord("a", device("10.0.0.11", basis="behaviour", destination_countries=[
            {"country": "CN", "bytes": 700, "destinations": 2}, {"country": "US", "bytes": 90, "destinations": 1}])),
        "watched by alert": DeviceRecord("a", device("10.0.0.12", basis="oem"),
                                         alerts=[incident("jurisdiction", destination="110.43.0.1 tcp/443")]),
        "core": DeviceRecord("a", device("10.0.0.3", core=5)),
        "internet named big": DeviceRecord("a", device("10.0.0.4", public=9000)),
        "internet named small": DeviceRecord("a", device("10.0.0.5", public=100)),
        "internet prc-nil bigger": DeviceRecord("a", device("10.0.0.6", basis="prc-nil", public=50_000)),
        "quiet on sensitive site": DeviceRecord("a", device("10.9.0.7")),
        "quiet named": DeviceRecord("a", device("10.0.0.8")),
        "quiet prc-nil": DeviceRecord("a", device("10.0.0.9", basis="prc-nil")),
        "quiet behaviour": DeviceRecord("a", device("10.0.0.13", basis="behaviour")),
        "quiet oem": DeviceRecord("a", device("10.0.0.14", basis="oem")),
        "not covered, streaming out": DeviceRecord("a", device("10.0.0.10", covered=False, public=10**9),
                                                   alerts=[incident("video_egress")]),
    }
    by_doc = {id(r.doc): name for name, r in records.items()}
    ranked = rank(list(reversed(records.values())), (sensitive,), frozenset({"CN", "HK", "MO"}))
    assert [by_doc[id(r.record.doc)] for r in ranked] == [
        "video", "cloud+core+internet+sensitive", "watched by alert", "watched", "core", "internet named big",
        "internet named small", "internet prc-nil bigger", "quiet on sensitive site", "quiet named", "quiet prc-nil",
        "quiet oem", "quiet behaviour"]
    assert [r.rank for r in ranked] == list(range(1, 14))
    assert ranked[3].findings["watched"] == ["700 bytes sent to 2 destination(s) registered or located in CN"]
    assert "jurisdiction" in ranked[2].findings["watched"][0]
    unwatched = rank([records["watched"]], (), frozenset())
    assert "watched" not in unwatched[0].findings   # watch_countries = [] switches the finding off
    top_two = ranked[1].findings
    assert set(top_two) == {"vendor_cloud", "core_contact", "internet", "sensitive_site"}
    assert "hik-connect" in top_two["vendor_cloud"][0] and "site hq is marked sensitive (10.9.0.0/24)" in \
        top_two["sensitive_site"][0]
    assert top_two["core_contact"][0] == "10 bytes sent to core networks"
    assert [r.acting for r in ranked] == [True] * 8 + [False] * 5


def test_ranking_documentation_names_the_same_order():
    from sensor.report.ranking import FINDINGS
    text = (REPO / "docs" / "report.md").read_text()
    positions = [text.index(f"`{name}`") for name in FINDINGS]
    assert positions == sorted(positions), "docs/report.md must list the findings in ranking order"
    assert "`named`, then `prc-nil`, `oem`, `behaviour`" in text


# ---- from captures -------------------------------------------------------------------------------------------
def test_report_from_the_synthetic_site(tmp_path):
    out = tmp_path / "site.html"
    proc = report(SITE_PCAP, "--config", SITE_TOML, "--out", out, "--csv", tmp_path / "csv")
    assert proc.returncode == 0, proc.stderr
    html = out.read_text()
    assert_inert(html)
    removal = read_csv(tmp_path / "csv" / "removal.csv")
    # the three covered cameras; the one phoning Hik-Connect first, with its evidence
    assert [r["ip"] for r in removal] == ["10.20.0.14", "10.20.0.11", "10.20.0.12"]
    top = removal[0]
    assert (top["vendor_cloud"], top["internet"], top["video_egress"]) == ("yes", "yes", "no")
    assert "litedev.hik-connect.com tcp/8555" in top["evidence"] and "hik-connect" in top["evidence"]
    assert top["site"] == "demo-site" and top["covered_basis"] == "named"
    inventory = read_csv(tmp_path / "csv" / "inventory.csv")
    assert {r["ip"] for r in inventory} == {"10.20.0.1", "10.20.0.2", "10.20.0.11", "10.20.0.12", "10.20.0.13",
                                            "10.20.0.14", "10.20.0.15"}
    assert next(r for r in inventory if r["ip"] == "10.20.0.15")["covered"] == "no"   # Dahua *Scale*, not Dahua
    # the statements the report owes its reader
    from sensor.enrich import CoveredMakers
    listed = f"covered-maker list version {CoveredMakers.load().version}"
    for needed in ("camwatch 0.1.0", listed, "2023-11-14 22:13:20Z",
                   "camera_site.pcap", "replayed as site demo-site",
                   "What this report cannot show", "Destination country / jurisdiction", "Prioritised removal list",
                   "litedev.hik-connect.com", "Hik", "Outbound traffic in alert episodes"):
        assert needed in html, needed
    assert html.count('<section class="card') == 7
    # destinations scoped by the sensor's own rules: TEST-NET addresses are public to it, as in its alerts
    assert "<td>litedev.hik-connect.com</td><td>203.0.113.50</td><td>public</td><td>hik-connect</td>" in html
    assert html.index('id="dev-demo-site-10.20.0.14"') < html.index('id="dev-demo-site-10.20.0.13"')


def test_report_from_a_real_capture(tmp_path):
    """The Yi camera (Zowee, prc-nil) reaching Alibaba-cloud addresses in a public capture."""
    capture = REAL / "neu-intl-iot" / "yi_camera_sample.pcap"
    out = tmp_path / "yi.html"
    proc = report(capture, "--out", out, "--csv", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_inert(out.read_text())
    removal = read_csv(tmp_path / "removal.csv")
    assert [(r["ip"], r["covered_basis"], r["internet"]) for r in removal] == [("192.168.10.204", "prc-nil", "yes")]
    assert "47.88.59.209" in removal[0]["evidence"]
    assert "bytes sent to the public Internet" in removal[0]["evidence"]


def test_two_real_captures_are_one_estate_read_in_order(tmp_path):
    captures = sorted((REAL / "nku-lifecycle").glob("*.pcap"))
    proc = report(*captures, "--out", tmp_path / "r.html", "--csv", tmp_path)
    assert proc.returncode == 0, proc.stderr
    removal = read_csv(tmp_path / "removal.csv")
    assert removal and removal[0]["maker"].startswith("Xiaomi ecosystem") and removal[0]["internet"] == "yes"


# ---- from state databases and running sensors ----------------------------------------------------------------
def test_report_from_state_databases_of_two_sites(tmp_path):
    db = tmp_path / "site-a.db"
    config = tmp_path / "a.toml"
    config.write_text(SITE_TOML.read_text() + f'\n[state]\npath = "{db}"\n')
    replay = camwatch("replay", SITE_PCAP, "--config", config, "--alerts", tmp_path / "a.jsonl", "--quiet")
    assert replay.returncode == 0, replay.stderr
    before = db.read_bytes()
    other = tmp_path / "second.db"
    other.write_bytes(before)
    sites = tmp_path / "report.toml"
    sites.write_text(SITE_TOML.read_text() + '\n[sites.hq]\nsensitive = true\nsubnets = ["10.20.0.0/28"]\n')
    proc = report("--state", f"demo-site={db}", "--state", other, "--config", sites, "--alerts", tmp_path / "a.jsonl",
                  "--out", tmp_path / "r.html", "--csv", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert db.read_bytes() == before, "the state database is read only"
    removal = read_csv(tmp_path / "removal.csv")
    assert [(r["site"], r["ip"]) for r in removal[:2]] == [("demo-site", "10.20.0.14"), ("second", "10.20.0.14")]
    assert removal[0]["sensitive_site"] == "yes" and "site hq is marked sensitive (10.20.0.0/28)" in \
        removal[0]["evidence"]
    # the alert log's lines carry sensor "demo-site": they belong to that site's device, not the copy's
    assert "egress_policy high alert" in removal[0]["evidence"]
    assert "egress_policy episode" in removal[1]["evidence"] and "high alert" not in removal[1]["evidence"]
    html = (tmp_path / "r.html").read_text()
    assert f"state database {db} (site demo-site)" in html and "Sites from the config" in html


def test_report_from_a_running_sensor(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sensor = subprocess.Popen([sys.executable, "-m", "sensor", "replay", str(SITE_PCAP), "--config", str(SITE_TOML),
                               "--serve", f"127.0.0.1:{port}", "--alerts", str(tmp_path / "a.jsonl"), "--quiet"],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/inventory", timeout=2).read()):
                    break
            except OSError:
                pass
            time.sleep(0.2)
        served_countries = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/countries", timeout=5).read())
        proc = report("--url", f"site-b=http://127.0.0.1:{port}", "--alerts", tmp_path / "a.jsonl",
                      "--out", tmp_path / "r.html", "--csv", tmp_path)
    finally:
        sensor.terminate()
        sensor.communicate(timeout=15)
    assert proc.returncode == 0, proc.stderr
    # the site's camera reaches its vendor's cloud abroad: the timeline by country comes over /countries too
    assert served_countries and all(sum(n for _, n in points) > 0 for points in served_countries.values())
    assert "Bytes sent outside by destination country over time" in (tmp_path / "r.html").read_text()
    removal = read_csv(tmp_path / "removal.csv")
    assert removal[0]["ip"] == "10.20.0.14" and removal[0]["site"] == "site-b"
    assert removal[0]["vendor_cloud"] == "yes"   # from the alert log: /inventory carries no alerts
    assert "its /inventory carries no alerts" in (tmp_path / "r.html").read_text()


# ---- hostile strings -----------------------------------------------------------------------------------------
HOSTILE = ['<script>alert(1)</script>', '"><img src=x onerror=alert(2)>', "javascript:alert(3)",
           "</style><style>body{display:none}", "'--></svg><svg onload=alert(4)>", "=HYPERLINK(\"http://x\")",
           "+cmd|' /C calc'!A0", "-2+3", "@SUM(1)", "x" * 5000, "]]><!--", "\u202eevil"]


def hostile_state_db(path: Path) -> None:
    """Rows as the sensor stores them, every string field filled from the wire with hostile text."""
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    for n, text in enumerate(HOSTILE):
        ip = f"10.20.0.{n + 10}"
        doc = {"ip": ip, "mac": 0x1868CB000000 + n, "first_seen": 1_700_000_000.0 + n, "last_seen": 1_700_000_900.0,
               "packets_sent": 5, "bytes_sent": 900, "egress_bytes": {"public": 400, "camera": 500},
               "dns_queries": [text, f"{text}.example"], "external_peers": [["203.0.113.7", text, 400]],
               "identity": {"model": text, "firmware": text, "server": text}, "evidence": []}
        db.execute("INSERT INTO inventory VALUES (?, ?)", (ip, json.dumps(doc)))
        db.execute("INSERT INTO episode VALUES (?, ?, ?, ?, ?)",
                   (json.dumps(["vendor_cloud", ip, text, text]), 1_700_000_010.0, 1_700_000_500.0, 9, 400))
        db.execute("INSERT INTO episode VALUES (?, ?, ?, ?, ?)",
                   (json.dumps(["video_egress", ip, text]), 1_700_000_020.0, 1_700_000_400.0, 900, 10**6))
    db.commit()
    db.close()


def test_hostile_wire_strings_cannot_inject(tmp_path):
    db = tmp_path / "hostile.db"
    hostile_state_db(db)
    alerts = tmp_path / "alerts.jsonl"
    alerts.write_text("".join(json.dumps({
        "ts": 1_700_000_050.0, "sensor": "hostile", "detector": "vendor_cloud", "severity": "high",
        "device": {"ip": f"10.20.0.{n + 10}", "mac": None, "vendor": text},
        "destination": {"ip": "203.0.113.7", "port": 443, "proto": "tcp", "name": text, "scope": "public"},
        "score": 1, "summary": text, "service": text}) + "\n" for n, text in enumerate(HOSTILE)) + "{not json\n")
    out = tmp_path / "r.html"
    proc = report("--state", db, "--alerts", alerts, "--out", out, "--csv", tmp_path)
    assert proc.returncode == 0, proc.stderr
    html = out.read_text()
    assert_inert(html)
    for text in (HOSTILE[0], HOSTILE[1], HOSTILE[3], HOSTILE[4]):   # javascript: as plain text is harmless
        assert text not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;/style&gt;&lt;style&gt;" in html and html.count("<style>") == 1 and html.count("</svg>") == html.count(
        "<svg ")
    # every wire string reaches the page's text, cut to a bounded length
    text = "\n".join(parse(html).text)
    assert '"><img src=x onerror=alert(2)>' in text and "javascript:alert(3)" in text
    assert "x" * 512 in text and "x" * 513 not in text
    assert "\u202e" not in html and "\ufffdevil" in text   # no bidi override to make a name read backwards
    for name in ("removal.csv", "inventory.csv"):
        for row in csv.reader((tmp_path / name).open(newline="", encoding="utf-8")):
            for cell in row:
                assert not cell.startswith(("=", "+", "-", "@")), (name, cell)
    removal = read_csv(tmp_path / "removal.csv")
    assert len(removal) == len(HOSTILE) and all(r["video_egress"] == "yes" for r in removal)
    assert any(r["model"] == "'=HYPERLINK(\"http://x\")" for r in removal)


def test_csv_cells_that_would_be_formulas_are_neutralised():
    assert [safe_cell(v) for v in ("=1+1", "+1", "-1", "@A1", "\tx", "10.0.0.1", "", 5, -5)] == \
        ["'=1+1", "'+1", "'-1", "'@A1", "'\tx", "10.0.0.1", "", 5, -5]


def test_svg_labels_are_escaped():
    from sensor.report.charts import bar_chart, timeline
    for svg in (bar_chart([("<script>x</script>", 5)], "t<i>"),
                timeline([("\"/><script>", 1.0, 2.0, 3)], (0.0, 10.0), "t")):
        assert "<script>" not in svg and "<i>" not in svg
        assert_inert(str(svg), page=False)


# ---- errors --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    ([], "give capture files, --state DB or --url"),
    (["--state", "/nonexistent.db"], "/nonexistent.db: no such state database"),
    (["--state", str(SITE_PCAP)], "not a camwatch state database"),
    (["--url", "ftp://x"], "not an http:// or https:// URL"),
    (["--url", "http://127.0.0.1:9"], "cannot read the inventory from http://127.0.0.1:9/inventory"),
    (["/nonexistent.pcap"], "/nonexistent.pcap: no such file"),
    ([str(SITE_PCAP), "--alerts", "/nonexistent.jsonl"], "no such alert log"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    proc = report(*args, "--out", tmp_path / "r.html")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("sites, message", [
    ("[sites.a]\nsensitive = 1\nsubnets = [\"10.0.0.0/8\"]\n", "sites.a.sensitive must be true or false"),
    ("[sites.a]\nsensitive = true\nsubnets = [\"10.1.0.5/16\"]\n", "sites.a.subnets '10.1.0.5/16' has host bits"),
    ("[sites.a]\nsensitive = true\n", "sites.a needs subnets"),
    ("[sites.a]\nsubnets = []\n", "sites.a.subnets must be a non-empty array"),
    ("[sites.a]\nsensitve = true\nsubnets = [\"10.0.0.0/8\"]\n", "unknown key sites.a.sensitve"),
    ("[sites]\na = 1\n", "sites.a must be a table"),
    ("[bogus]\n", "bogus"),
    ("[sites.a\n", "not valid TOML"),
])
def test_bad_sites_config_is_one_line(tmp_path, sites, message):
    config = tmp_path / "c.toml"
    config.write_text(sites)
    proc = report(SITE_PCAP, "--config", config, "--out", tmp_path / "r.html")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "config error" in proc.stderr and message in proc.stderr, proc.stderr


@pytest.mark.parametrize("where, reason", [("nope/r.html", "No such file or directory"), (".", "Is a directory")])
def test_an_unwritable_output_is_refused_before_any_work_in_one_line(tmp_path, where, reason):
    # the same check and words as replay's --metrics-out (common.writable_target): refused before the captures
    # are read, not after
    out = tmp_path / where
    proc = report(SITE_PCAP, "--out", out)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"camwatch: error: {out}: cannot write the report: {reason}\n"


# ---- speed ---------------------------------------------------------------------------------------------------
def estate_db(path: Path, cameras: int = 100, hours: int = 24) -> None:
    """A sensor's state after a day of a 100-camera site: inventory rows, destinations and episodes."""
    t0 = 1_700_000_000.0
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    for n in range(cameras):
        ip = f"10.20.{n // 200}.{n % 200 + 10}"
        mac = (0x1868CB if n % 3 == 0 else 0xACCC8E) << 24 | n
        peers = [[f"203.0.{n % 250}.{k}", f"p{k}.cloud{n}.example", 1000 * k] for k in range(20)] if n % 2 else []
        doc = {"ip": ip, "mac": mac, "first_seen": t0, "last_seen": t0 + hours * 3600, "packets_sent": 10**7,
               "bytes_sent": 10**10, "egress_bytes": {"camera": 10**10, "public": sum(p[2] for p in peers)},
               "dns_queries": [p[1] for p in peers], "external_peers": peers,
               "identity": {"model": f"DS-{n}", "firmware": "V5.7",
                            "server": "Hikvision-Webs" if n % 3 == 0 else "AXIS"}, "evidence": [],
               "outbound": [[t0 + 300 * k, 1000 + k] for k in range(hours * 12)] if n % 2 else []}
        db.execute("INSERT INTO inventory VALUES (?, ?)", (ip, json.dumps(doc)))
        db.execute("INSERT INTO device VALUES (?, ?)", (ip, t0))
        for hour in range(hours):   # an episode an hour per camera: egress or cloud check-ins
            detector = ("egress_policy", "vendor_cloud", "beaconing")[hour % 3]
            db.execute("INSERT INTO episode VALUES (?, ?, ?, ?, ?)",
                       (json.dumps([detector, ip, f"203.0.{n % 250}.{hour}", hour]), t0 + hour * 3600,
                        t0 + hour * 3600 + 1800, 500, 50_000))
    db.commit()
    db.close()


def test_a_day_of_a_hundred_cameras_reports_in_under_ten_seconds(tmp_path):
    db = tmp_path / "estate.db"
    estate_db(db)
    started = time.monotonic()
    proc = report("--state", db, "--out", tmp_path / "r.html", "--csv", tmp_path)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 10, f"{elapsed:.1f} s"
    assert len(read_csv(tmp_path / "inventory.csv")) == 100
    assert len(read_csv(tmp_path / "removal.csv")) == 34
    print(f"100 cameras, 24 h state database: report in {elapsed:.2f} s (process start included)")


def test_outbound_series_draws_each_cards_activity_and_the_estates(tmp_path):
    """Bytes per sensor bucket land in the columns of their time; the estate chart splits covered from not."""
    t0 = 1_700_000_000.0
    hik = device("10.20.0.11", public=12_000, last_seen=t0 + 7200,
                 outbound_series={"bucket_seconds": 300, "points": [[t0, 5_000], [t0 + 3600, 7_000]]})
    axis = device("10.20.0.12", covered=False, public=900, mac="00:40:8c:00:00:01", last_seen=t0 + 7200,
                  outbound_series={"bucket_seconds": 300, "points": [[t0 + 600, 900]]})
    ctx = context(Estate([DeviceRecord("a", hik), DeviceRecord("a", axis)]), (), Config())
    card = next(c for c in ctx["cards"] if c["r"].ip == "10.20.0.11")
    svg = str(card["activity"])
    tips = [t for t in parse(svg).text if " from " in t]
    assert [t.split(":")[1].split(" from")[0].strip() for t in tips] == ["5.00 kB", "7.00 kB"], tips
    for tip, ts in zip(tips, (t0, t0 + 3600), strict=True):
        begin, end = (datetime.strptime(t, "%Y-%m-%d %H:%M:%SZ").replace(tzinfo=UTC).timestamp()
                      for t in tip.split(" from ")[1].split(" to "))
        assert begin <= ts < end and end - begin >= 300, tip   # never narrower than the bucket it shows
    estate_svg = str(ctx["summary"]["egress_over_time"])
    assert "covered: 5.00 kB" in estate_svg and "not covered: 900 B" in estate_svg
    assert "over time" in render_html(ctx)


def test_a_capture_shorter_than_a_bucket_draws_one_column_for_the_whole_bucket():
    """A 30-second capture's bytes are one sensor bucket's: one column, whose range is that bucket, not a sliver of
    it dated to the bucket's first seconds (a reviewer read "from 22:10:00 to 22:10:03" for a capture of 22:13)."""
    t0 = 1_700_000_100.0   # a bucket boundary
    cam = device("10.20.0.11", public=1_740, first_seen=t0 + 200, last_seen=t0 + 230,
                 outbound_series={"bucket_seconds": 300, "points": [[t0, 1_740]]})
    ctx = context(Estate([DeviceRecord("a", cam)]), (), Config())
    tips = [t for t in parse(str(ctx["cards"][0]["activity"])).text if " from " in t]
    assert len(tips) == 1
    begin, end = (datetime.strptime(t, "%Y-%m-%d %H:%M:%SZ").replace(tzinfo=UTC).timestamp()
                  for t in tips[0].split(" from ")[1].split(" to "))
    assert (begin, end) == (t0, t0 + 300), tips


@pytest.mark.parametrize("series", [
    {"points": [["x", 1], [float("nan"), 5], [-300, 5], [300, -1], [300, "9"], [600, True], {"a": 1}, [900]]},
    {"points": "many"}, [[0, 1]], None, {"points": [[0, 1]] * 100_000}])
def test_damaged_outbound_series_is_cleaned_not_trusted(series):
    doc = device("10.20.0.11", outbound_series=series)
    assert all(start >= 0 and count > 0 for start, count in doc["outbound"])
    assert len(doc["outbound"]) <= 576
    context(Estate([DeviceRecord("a", doc)]), (), Config())


def test_render_in_process_stays_small(tmp_path):
    estate = Estate(devices=[DeviceRecord("s", device(f"10.0.{n // 250}.{n % 250}", public=n)) for n in range(300)])
    ctx = context(estate, (), Config())
    html = render_html(ctx)
    assert_inert(html)
    assert len(html) < 3_000_000
    write_csv(ctx, tmp_path)
    assert len(read_csv(tmp_path / "removal.csv")) == 300


def test_report_of_the_labelled_scenarios_ranks_what_was_planted(tmp_path):
    """pcaps/scenarios.py's site: the detectors' own alerts on planted behaviour drive the ranking."""
    subprocess.run([sys.executable, str(REPO / "pcaps" / "scenarios.py"), str(tmp_path)], check=True, timeout=120)
    config = tmp_path / "report.toml"
    config.write_text((tmp_path / "site.toml").read_text()
                      + '\n[sites.hq-north]\nsensitive = true\nsubnets = ["172.16.30.0/28"]\n')
    proc = report(tmp_path / "baseline.pcap", tmp_path / "mixed.pcap", "--config", config,
                  "--out", tmp_path / "r.html", "--csv", tmp_path)
    assert proc.returncode == 0, proc.stderr
    labels = json.loads((tmp_path / "labels.json").read_text())
    removal = {r["ip"]: r for r in read_csv(tmp_path / "removal.csv")}
    order = list(removal)
    for planted in labels["behaviours"]:
        row = removal.get(planted["device"])
        if row is not None and planted["kind"] in ("video_egress", "vendor_cloud"):
            assert row[planted["kind"]] == "yes", (planted["id"], row)
    video = [ip for ip, r in removal.items() if r["video_egress"] == "yes"]
    assert video and order[:len(video)] == video
    acting = [ip for ip, r in removal.items() if "yes" in (r["video_egress"], r["vendor_cloud"], r["core_contact"],
                                                           r["internet"])]
    assert order[:len(acting)] == acting
    for ip in labels["benign_devices"]:
        if ip in removal:   # a benign covered camera does nothing: at the bottom
            assert ip not in acting and order.index(ip) >= len(acting)
    assert removal["172.16.30.14"]["sensitive_site"] == "yes"
    assert_inert((tmp_path / "r.html").read_text())


def test_a_relabelled_camera_shows_why_it_is_covered():
    """Issue 14's case in the report: an Axis MAC prefix, Hik-Connect traffic: covered by behaviour, with the
    finding and the weighted evidence on its card, and the other addresses of the box."""
    note = "MAC prefix Axis Communications AB, speaks Hik-Connect: likely a Hikvision OEM or relabelled unit"
    doc = device("10.20.0.11", basis="behaviour", public=5000, maker_note=note, addresses=["10.20.0.11", "fd00::11"],
                 former_addresses=["10.20.0.99"],
                 maker_evidence_items=[{"source": "service", "detail": "speaks Hik-Connect <b>", "maker": "Hikvision",
                                        "weight": 3},
                                       {"source": "oui", "detail": "MAC prefix Axis", "maker": "Axis", "weight": 3}])
    html = render_html(context(Estate([DeviceRecord("a", doc)]), (), Config()))
    assert_inert(html)
    assert note in html and "yes: Hikvision (behaviour)" in html
    assert "speaks Hik-Connect &lt;b&gt;" in html and "(service, weight 3: Hikvision)" in html
    assert "10.20.0.11, fd00::11 (formerly 10.20.0.99)" in html


def test_report_names_the_countries_a_real_camera_sends_to(tmp_path):
    """The Xiaobai camera (Imilab, prc-nil) talks to addresses registered in China: the country table, the card's
    destinations and the removal list's watched-jurisdiction finding say so; with the watch list off, it goes."""
    capture = REAL / "nku-lifecycle" / "xiaobai_Y2camera_setup.pcap"
    out = tmp_path / "x.html"
    proc = report(capture, "--out", out, "--csv", tmp_path)
    assert proc.returncode == 0, proc.stderr
    html = out.read_text()
    assert_inert(html)
    assert "<tr><td>CN</td>" in html and "Watched jurisdictions: CN, HK, MO." in html
    over_time = html[html.index("by destination country over time"):]
    assert "CN: " in over_time[:over_time.index("</svg>")]   # a column of bytes to China, with its time
    assert "<td>120.92.65.240</td><td>public</td>" in html and "<td>CN</td>" in html
    [row] = read_csv(tmp_path / "removal.csv")
    assert row["watched"] == "yes" and "registered or located in CN" in row["evidence"]
    camera = next(r for r in read_csv(tmp_path / "inventory.csv") if r["ip"] == "192.168.1.165")
    assert camera["destination_countries"].startswith("CN:")
    off = tmp_path / "off.toml"
    off.write_text("[policy]\nwatch_countries = []\n")
    proc = report(capture, "--config", off, "--out", tmp_path / "off.html", "--csv", tmp_path / "off")
    assert proc.returncode == 0, proc.stderr
    assert read_csv(tmp_path / "off" / "removal.csv")[0]["watched"] == "no"


def test_the_report_never_writes_over_what_it_reads(tmp_path):
    """--out or a --csv file naming a capture, an alert log or the config would destroy it: refused, exit 2,
    before anything is read."""
    import shutil
    capture, alerts, config = tmp_path / "site.pcap", tmp_path / "csv" / "removal.csv", tmp_path / "c.toml"
    shutil.copy(SYNTHETIC / "camera_site.pcap", capture)
    alerts.parent.mkdir()
    alerts.write_text("")
    config.write_text("")
    before = capture.read_bytes()
    for extra, message in (
            (["--out", capture], f"--out names {capture}, a capture it reads"),
            (["--out", config, "--config", config], f"--out names {config}, its config"),
            (["--out", tmp_path / "r.html", "--alerts", alerts, "--csv", alerts.parent],
             f"--csv names {alerts}, an alert log it reads")):
        proc = camwatch("report", capture, *extra)
        assert proc.returncode == 2
        assert proc.stderr == f"camwatch: error: {message}: the output would destroy it\n"
    assert capture.read_bytes() == before and alerts.read_text() == "" and config.read_text() == ""
    assert not (tmp_path / "r.html").exists()
