"""Alerting rules, their promtool unit tests, runbooks, and the example Prometheus / Alertmanager / multi-site /
docker-compose configurations, checked with the real promtool and amtool.
"""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from .promstack import AMTOOL, PROMTOOL, REPO, RULE_FILES, RULE_TESTS, RUNBOOKS, alert_rules, load_rules

SEVERITIES = {"critical", "high", "medium", "low", "info"}
CONFIGS = [REPO / "prometheus" / "prometheus.yml",
           REPO / "prometheus" / "multi-site" / "site" / "prometheus.yml",
           REPO / "prometheus" / "multi-site" / "central" / "prometheus.yml",
           REPO / "prometheus" / "multi-site" / "central" / "prometheus-federation.yml"]
# The alerts the rules must define, by the metric each must watch.
REQUIRED = {
    "CamwatchCoveredCameraVendorCloud": 'detector="vendor_cloud"',
    "CamwatchVideoEgress": 'detector="video_egress"',
    "CamwatchNewExternalDestination": 'detector="new_destination"',
    "CamwatchBeaconing": 'detector="beaconing"',
    "CamwatchCameraReachingCore": 'direction="camera_to_core"',
    "CamwatchHighSeverityAlert": 'severity=~"high|critical"',
    "CamwatchSensorDown": 'up{job="camwatch"}',
    "CamwatchCaptureDroppingPackets": "rate(camwatch_capture_dropped_packets_total",
    "CamwatchCaptureFallingShort": "rate(camwatch_capture_interface_received_packets_total",
    "CamwatchDecodeErrorsSurge": "camwatch_decode_errors_total",
    "CamwatchFlowTableEvictions": 'reason="evicted"',
    "CamwatchCaptureStalled": "camwatch_processing_lag_seconds",
    "CamwatchModelStale": "time() - camwatch_model_trained_timestamp_seconds > 30 * 86400",
}

needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed "
                                    "(scripts/bootstrap.sh --test installs Debian's prometheus)")


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=120)


@needs_promtool
def test_promtool_check_rules():
    r = run(PROMTOOL, "check", "rules", *map(str, RULE_FILES))
    assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_promtool_unit_tests_pass():
    r = run(PROMTOOL, "test", "rules", *map(str, RULE_TESTS))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("SUCCESS") == len(RULE_TESTS)


@needs_promtool
def test_promtool_unit_tests_can_fail(tmp_path):
    """The unit tests see a broken rule: loosen the decode-error threshold and exclude nothing from the
    generic high-severity rule, and promtool must report both."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    rules = RULE_FILES[0].read_text()
    broken = rules.replace("> 0.01", "> 0.5").replace('detector!~"vendor_cloud|', 'detector!~"')
    assert broken != rules
    (tmp_path / "rules" / "camwatch.rules.yml").write_text(broken)
    for t in RULE_TESTS:
        (tmp_path / "tests" / t.name).write_text(t.read_text())
    r = run(PROMTOOL, "test", "rules", *[str(tmp_path / "tests" / t.name) for t in RULE_TESTS
                                         if "../rules/" in t.read_text()])
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "CamwatchDecodeErrorsSurge" in out and "CamwatchHighSeverityAlert" in out


def test_required_alerts_exist():
    by_name = {r["alert"]: r for r in alert_rules()}
    for name, needle in REQUIRED.items():
        assert name in by_name, f"missing alert {name}"
        assert needle in " ".join(by_name[name]["expr"].split()), f"{name} does not watch {needle}"


def test_alert_names_unique():
    names = [r["alert"] for r in alert_rules()]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_shape(rule):
    assert "for" in rule, "every alert states its for: (0s where the sensor already debounces)"
    sev = rule["labels"]["severity"]
    assert sev in SEVERITIES or sev == "{{ $labels.camwatch_severity }}", sev
    ann = rule["annotations"]
    assert set(ann) >= {"summary", "description", "runbook_url"}
    assert ann["runbook_url"] == f"docs/runbooks/{rule['alert']}.md"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_runbook(rule):
    path = RUNBOOKS / f"{rule['alert']}.md"
    assert path.is_file(), f"no runbook {path.relative_to(REPO)}"
    text = path.read_text()
    assert text.startswith(f"# {rule['alert']}\n")
    for section in ("## What it means", "## Investigate", "## What to do"):
        assert section in text, f"{path.name}: no {section!r}"


def _unit_cases() -> dict[str, dict[str, int]]:
    cases: dict[str, dict[str, int]] = {}
    for path in RULE_TESTS:
        doc = yaml.safe_load(path.read_text())
        assert "evaluation_interval" in doc, path.name
        for group in doc["tests"]:
            assert "interval" in group, f"{path.name}: {group['name']} needs its own interval (promtool 2.42)"
            for case in group.get("alert_rule_test", []):
                kind = "fires" if case.get("exp_alerts") else "quiet"
                cases.setdefault(case["alertname"], {"fires": 0, "quiet": 0})[kind] += 1
                for exp in case.get("exp_alerts") or []:
                    assert set(exp.get("exp_annotations", {})) >= {"summary", "description", "runbook_url"}
    return cases


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    cases = _unit_cases()
    missing = [f"{r['alert']}: {cases.get(r['alert'])}" for r in alert_rules()
               if not cases.get(r["alert"], {}).get("fires") or not cases.get(r["alert"], {}).get("quiet")]
    assert not missing, "alerts without both a firing and a not-firing unit test:\n" + "\n".join(missing)
    unknown = set(cases) - {r["alert"] for r in alert_rules()}
    assert not unknown, f"unit tests for alerts that do not exist: {unknown}"


def test_rule_files_hold_only_what_is_tested():
    for f in RULE_FILES:
        for r in load_rules(f):
            assert "alert" in r, f"{f.name}: recording rule {r.get('record')} has no unit test"


# ---- configurations ----------------------------------------------------------------------------------------------
@needs_promtool
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "prometheus")))
def test_promtool_check_config(config):
    r = run(PROMTOOL, "check", "config", str(config))
    assert r.returncode == 0, r.stdout + r.stderr


def test_example_config_matches_rules_and_dashboards():
    doc = yaml.safe_load((REPO / "prometheus/prometheus.yml").read_text())
    assert [j for j in doc["scrape_configs"] if j["job_name"] == "camwatch"]
    assert (REPO / "prometheus" / doc["rule_files"][0]).resolve() == RULE_FILES[0]


def test_multi_site_layouts_load_the_same_rules():
    for name in ("prometheus.yml", "prometheus-federation.yml"):
        doc = yaml.safe_load((REPO / "prometheus/multi-site/central" / name).read_text())
        resolved = {(REPO / "prometheus/multi-site/central" / f).resolve() for f in doc["rule_files"]}
        assert resolved == {p.resolve() for p in RULE_FILES}, name
    site = yaml.safe_load((REPO / "prometheus/multi-site/site/prometheus.yml").read_text())
    assert site["global"]["external_labels"]["site"]
    assert site["remote_write"] and not site.get("rule_files"), "alerts are evaluated centrally, once"
    fed = yaml.safe_load((REPO / "prometheus/multi-site/central/prometheus-federation.yml").read_text())
    (job,) = [j for j in fed["scrape_configs"] if j.get("metrics_path") == "/federate"]
    assert job["honor_labels"] is True and job["params"]["match[]"] == ['{job="camwatch"}']


@pytest.mark.skipif(AMTOOL is None, reason="amtool not installed (comes with Debian's prometheus-alertmanager)")
def test_alertmanager_example_config():
    r = run(AMTOOL, "check-config", str(REPO / "prometheus/alertmanager.yml"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_alertmanager_routes_every_severity():
    doc = yaml.safe_load((REPO / "prometheus/alertmanager.yml").read_text())
    routed = " ".join(m for route in doc["route"]["routes"] for m in route["matchers"])
    for sev in ("critical", "high", "info"):
        assert sev in routed
    severities = {r["labels"]["severity"] for r in alert_rules()}
    assert severities <= SEVERITIES | {"{{ $labels.camwatch_severity }}"}


def test_docker_compose_references_existing_files():
    deploy = REPO / "deploy"
    compose = yaml.safe_load((deploy / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"camwatch", "prometheus", "grafana"} <= set(services)
    for name, svc in services.items():
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (deploy / source).exists(), f"{name}: {source} does not exist"
    assert (deploy / services["camwatch"]["build"]["context"] / services["camwatch"]["build"]["dockerfile"]).is_file()
    # the camwatch command must be one the CLI accepts, on files that exist
    cmd = services["camwatch"]["command"]
    assert cmd[0] == "replay" and (REPO / cmd[1]).is_file() and (REPO / cmd[cmd.index("--config") + 1]).is_file()
    from sensor.cli import build_parser
    build_parser().parse_args(cmd)
    prom_cmd = " ".join(services["prometheus"]["command"])
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom_cmd
    assert "../prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    # every listener stays on loopback
    for svc in ("prometheus", "alertmanager"):
        assert re.search(r"--web.listen-address=127\.0\.0\.1:", " ".join(services[svc]["command"]))
    assert services["grafana"]["environment"]["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"
    assert "--serve" in cmd and cmd[cmd.index("--serve") + 1].startswith("127.0.0.1:")
