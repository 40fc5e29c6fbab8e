"""Where the data goes, end to end: a real capture of a covered camera talking to CN-registered addresses
(pcaps/real/nku-lifecycle, Xiaomi ecosystem / Imilab), replayed with an ASN database the test writes itself. The
alert lines name country and owner, the jurisdiction detector adds its evidence, the country metric adds up to
the public egress, the inventory sums bytes by country and owner, promtool accepts the exposition, and a bad
[geo] database is one line and exit 2 before anything is written."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from conftest import REAL, alerts_of, camwatch, metric_values, value
from mmdbs import write_asn

XIAOBAI = REAL / "nku-lifecycle"
SETUP = XIAOBAI / "xiaobai_Y2camera_setup.pcap"
SPEAK = XIAOBAI / "xiaobai_Y2camera_speak_local.pcap"
CAMERA = "192.168.1.165"
UNICOM = "China Unicom Beijing Province Network"


@pytest.fixture(scope="module")
def geo_config(tmp_path_factory):
    where = tmp_path_factory.mktemp("geo")
    asn = write_asn(where / "asn.mmdb")
    config = where / "camwatch.toml"
    config.write_text(f'[geo]\nasn_database = "{asn}"\n')
    return config


@pytest.fixture(scope="module")
def replayed(geo_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    proc = camwatch("replay", SETUP, SPEAK, "--config", geo_config, "--metrics-out", out / "metrics.prom")
    assert proc.returncode == 0, proc.stderr
    return alerts_of(proc.stdout), (out / "metrics.prom").read_text()


def test_alert_lines_name_the_destination_s_country_and_owner(replayed):
    lines, _ = replayed
    opened = [a for a in lines if a["event"] == "open"]
    assert opened and all(a["device"]["ip"] == CAMERA for a in opened)
    unicom = [a for a in opened if a["destination"]["asn"] == 4808]
    assert unicom, "no incident on the camera's China Unicom addresses"
    for line in unicom:
        dst = line["destination"]
        assert (dst["country"], dst["org"]) == ("CN", UNICOM)
        assert f"{dst['ip']}, CN, {UNICOM})" in line["summary"] or f"{dst['ip']} (CN, {UNICOM})" in line["summary"]
    # every line carries the three keys, null where nothing is known (contract 2, additive)
    assert all({"country", "asn", "org"} <= set(a["destination"]) for a in lines if a["event"] != "flood")
    # the registry country of every public destination, with or without an owner
    assert {a["destination"]["country"] for a in opened if a["destination"]["scope"] == "public"} <= {"CN", "US"}


def test_jurisdiction_is_evidence_and_the_video_to_cn_is_critical(replayed):
    lines, _ = replayed
    jurisdiction = [e for a in lines for e in a["evidence"] if e["detector"] == "jurisdiction"]
    assert jurisdiction and all(e["severity"] == "high" for e in jurisdiction)   # Imilab is a covered maker
    assert all("registered in CN" in e["text"] for e in jurisdiction)
    # the talk-back session streams to a CN relay: a covered maker's video into a watched jurisdiction
    video = [a for a in lines if a["detector"] == "video_egress" and a["event"] in ("open", "update")]
    assert video and all(a["severity"] == "critical" and a["destination"]["country"] == "CN" for a in video)
    assert all("a watched jurisdiction" in a["summary"] for a in video)
    # the 8.8.8.8 pings are US: no jurisdiction evidence on them
    google = [a for a in lines if a["destination"]["ip"] == "8.8.8.8"]
    assert google and all("jurisdiction" not in a["detectors"] for a in google)
    assert all(a["destination"]["org"] == "GOOGLE" for a in google)


def test_egress_by_country_adds_up_to_the_public_egress(replayed):
    _, text = replayed
    m = metric_values(text)
    by_country = {dict(ls)["country"]: v for (n, ls), v in m.items() if n == "camwatch_egress_country_bytes_total"}
    assert set(by_country) == {"CN", "US"} and by_country["CN"] > 100_000
    assert all(dict(ls)["covered"] == "true" for (n, ls), _ in m.items() if n == "camwatch_egress_country_bytes_total")
    assert sum(by_country.values()) == value(m, "camwatch_device_egress_bytes_total", scope="public")
    top = {dict(ls)["destination"]: dict(ls) for (n, ls), _ in m.items() if n == "camwatch_top_destination_bytes"}
    assert top and all(labels["country"] == "CN" for labels in top.values())
    assert {labels["owner"] for labels in top.values()} >= {UNICOM}


def test_the_exposition_passes_promtool(replayed):
    _, text = replayed
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (scripts/test.sh installs it)")
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_inventory_sums_bytes_by_country_and_owner(geo_config, replayed):
    _, text = replayed
    proc = camwatch("inventory", SETUP, SPEAK, "--config", geo_config, "--json")
    assert proc.returncode == 0, proc.stderr
    cam = next(d for d in json.loads(proc.stdout) if d["ip"] == CAMERA)
    countries = {c["country"]: c for c in cam["destination_countries"]}
    assert set(countries) == {"CN", "US"}
    # the same bytes the country metric counted, device by device
    m = metric_values(text)
    assert countries["CN"]["bytes"] == value(m, "camwatch_egress_country_bytes_total", country="CN")
    assert countries["CN"]["destinations"] == len({d["ip"] for d in cam["external_destinations"]} - {"8.8.8.8"})
    owners = {o["org"]: o for o in cam["destination_owners"]}
    assert owners[UNICOM]["asn"] == 4808 and owners[UNICOM]["country"] == "CN"
    assert owners["GOOGLE"]["bytes"] == countries["US"]["bytes"]
    table = camwatch("inventory", SETUP, "--config", geo_config)
    row = next(line for line in table.stdout.splitlines() if line.startswith(CAMERA))
    assert "COUNTRIES" in table.stdout.splitlines()[0] and " CN " in row


def test_watch_countries_empty_switches_the_jurisdiction_off(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[policy]\nwatch_countries = []\n")
    proc = camwatch("replay", SPEAK, "--config", config)
    assert proc.returncode == 0, proc.stderr
    lines = alerts_of(proc.stdout)
    assert lines and not any("jurisdiction" in a["detectors"] for a in lines)
    # the registry country is still there, and the video is critical as for any covered maker's stream
    assert {a["destination"]["country"] for a in lines if a["destination"]["scope"] == "public"} >= {"CN"}


def _bad(tmp_path, geo: str) -> subprocess.CompletedProcess:
    config = tmp_path / "bad.toml"
    config.write_text(geo)
    alerts = tmp_path / "alerts.jsonl"
    proc = camwatch("replay", SETUP, "--config", config, "--alerts", alerts)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not alerts.exists()   # checked before any output is created
    return proc


def test_a_missing_database_is_exit_2_with_one_line(tmp_path):
    proc = _bad(tmp_path, f'[geo]\nasn_database = "{tmp_path / "GeoLite2-ASN.mmdb"}"\n')
    assert proc.stderr == (f"camwatch: config error: geo.asn_database: {tmp_path / 'GeoLite2-ASN.mmdb'}: "
                           "no such file\n")


def test_a_corrupt_database_is_exit_2_with_one_line(tmp_path):
    junk = tmp_path / "asn.mmdb"
    junk.write_bytes(write_asn(tmp_path / "good.mmdb").read_bytes()[:200])
    proc = _bad(tmp_path, f'[geo]\nasn_database = "{junk}"\n')
    assert "not a MaxMind (.mmdb) database" in proc.stderr


def test_the_wrong_kind_of_database_is_exit_2_with_one_line(tmp_path):
    asn = write_asn(tmp_path / "asn.mmdb")
    proc = _bad(tmp_path, f'[geo]\ncountry_database = "{asn}"\n')
    assert "geo.country_database" in proc.stderr and "not a country database" in proc.stderr


def test_a_watch_list_typo_is_exit_2_with_one_line(tmp_path):
    proc = _bad(tmp_path, '[policy]\nwatch_countries = ["CHN"]\n')
    assert "policy.watch_countries: 'CHN' is not an ISO 3166-1 alpha-2 country code" in proc.stderr
