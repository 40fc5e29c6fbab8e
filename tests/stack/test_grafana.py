"""The Grafana dashboards and provisioning, linted the way grafana/dashboard-linter does (panel titles,
descriptions and units; counters only in rate/irate/increase; $__rate_interval in rate; the datasource as a
template variable; job/sensor variables), plus layout sanity, and every query parsed by a real Prometheus
(promtool has no query checker).

Nothing here needs a Grafana server: there is none on the CI machine.
"""

from __future__ import annotations

import re

import pytest
import yaml

from .promstack import (
    DASHBOARDS,
    PROMETHEUS,
    REPO,
    api,
    lint_expr,
    load_dashboard,
    panels,
    queries,
    selectors,
    start_prometheus,
    substitute,
    variable_queries,
)

DS_REF = {"type": "prometheus", "uid": "${datasource}"}
# Units the dashboard linter accepts (a subset: the ones a camwatch panel could sensibly use).
VALID_UNITS = {"none", "short", "percent", "percentunit", "bytes", "decbytes", "bits", "Bps", "binBps", "bps",
               "pps", "cps", "ops", "s", "ms", "dtdurations", "dateTimeAsIso", "dateTimeFromNow", "bool"}
PANEL_TYPES_WITH_QUERIES = {"stat", "timeseries", "table", "bargauge", "gauge", "piechart", "barchart",
                            "state-timeline", "heatmap"}
# Values for a parse check: what Grafana would substitute for a multi-site selection.
PARSE_VALUES = {"sensor": "site-a|site-b", "device": "10.20.0.14", "__rate_interval": "1m", "__interval": "1m",
                "__range": "6h", "datasource": "camwatch-prometheus"}

ids = [p.stem for p in DASHBOARDS]


@pytest.fixture(params=DASHBOARDS, ids=ids)
def dashboard(request) -> dict:
    return load_dashboard(request.param)


def test_the_three_dashboards_exist():
    assert {p.stem for p in DASHBOARDS} >= {"camwatch-overview", "camwatch-device", "camwatch-health"}


def test_dashboard_identity(dashboard):
    assert "__inputs" not in dashboard, "datasource must come from the `datasource` variable, not __inputs"
    assert dashboard.get("uid") and dashboard.get("title") and dashboard.get("description")
    assert "camwatch" in dashboard.get("tags", [])


def test_uids_unique():
    uids = [load_dashboard(p)["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids))


def test_panels_have_title_description_and_unit(dashboard):
    problems = []
    for p in panels(dashboard):
        if p["type"] == "row":
            continue
        if not p.get("title", "").strip():
            problems.append(f"panel {p['id']}: no title")
        if not p.get("description", "").strip():
            problems.append(f"panel {p['id']} {p.get('title')!r}: no description")
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit")
        if unit not in VALID_UNITS:
            problems.append(f"panel {p['id']} {p.get('title')!r}: unit {unit!r} is missing or not a Grafana unit")
        if p["type"] in PANEL_TYPES_WITH_QUERIES and not p.get("targets"):
            problems.append(f"panel {p['id']} {p.get('title')!r}: no queries")
    assert not problems, "\n".join(problems)


def test_panel_ids_unique(dashboard):
    seen = [p["id"] for p in panels(dashboard)]
    assert all(isinstance(i, int) for i in seen)
    assert len(seen) == len(set(seen)), f"duplicate panel ids: {sorted(seen)}"


def test_grid_fits_24_columns_without_overlap(dashboard):
    boxes = []
    for p in panels(dashboard):
        g = p["gridPos"]
        assert g["x"] >= 0 and g["y"] >= 0 and g["w"] > 0 and g["h"] > 0, p["title"]
        assert g["x"] + g["w"] <= 24, f"{p['title']!r} ends at column {g['x'] + g['w']}"
        boxes.append((p["title"], g))
    for i, (ta, a) in enumerate(boxes):
        for tb, b in boxes[i + 1:]:
            overlap = (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
                       and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])
            assert not overlap, f"{ta!r} and {tb!r} overlap"


def test_datasource_is_the_variable_everywhere(dashboard):
    problems = []
    for p in panels(dashboard):
        if p.get("datasource") != DS_REF:
            problems.append(f"panel {p['title']!r}: datasource {p.get('datasource')!r}")
        for t in p.get("targets", []):
            if t.get("datasource", DS_REF) != DS_REF:
                problems.append(f"panel {p['title']!r} target {t['refId']}: datasource {t['datasource']!r}")
    for a in dashboard["annotations"]["list"]:
        if not a.get("builtIn") and a.get("datasource") != DS_REF:
            problems.append(f"annotation {a['name']!r}: datasource {a.get('datasource')!r}")
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query" and v.get("datasource") != DS_REF:
            problems.append(f"variable {v['name']}: datasource {v.get('datasource')!r}")
    assert not problems, "\n".join(problems)


def test_templating_has_datasource_and_sensor_variables(dashboard):
    by_name = {v["name"]: v for v in dashboard["templating"]["list"]}
    ds = by_name.get("datasource")
    assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus"
    # the linter's naming: a single datasource variable is `datasource`, labelled "Data source"
    assert ds.get("label") == "Data source"
    sensor = by_name.get("sensor")
    assert sensor and sensor["type"] == "query"
    assert sensor["query"] == "label_values(camwatch_build_info, sensor)"
    # the linter's template-on-time-change-reload rule: sensors come and go
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            assert v.get("refresh") == 2, f"variable {v['name']} should refresh on time range change"


def test_device_dashboard_has_device_variable():
    d = load_dashboard(REPO / "grafana" / "dashboards" / "camwatch-device.json")
    device = {v["name"]: v for v in d["templating"]["list"]}["device"]
    assert re.fullmatch(r'label_values\(camwatch_device_info(\{sensor=~"\$sensor"\})?, device\)', device["query"])
    for q in queries(d):
        assert "$device" in q.expr, f"{q.where} ignores the device variable: {q.expr}"


def test_every_query_selects_on_sensor(dashboard):
    """Multi-site: with several sensors in one Prometheus, every query must honour the sensor selection."""
    for q in queries(dashboard) + [v for v in variable_queries(dashboard) if v.where != "variable sensor"]:
        assert '{' in q.expr and 'sensor=~"$sensor"' in q.expr, f"{q.dashboard}: {q.where} ignores $sensor: {q.expr}"


def test_counters_only_in_rate_or_increase_and_rate_uses_rate_interval(dashboard):
    problems = []
    for q in queries(dashboard):
        problems += [f"{q.where}: {msg}" for msg in lint_expr(q.expr)]
    assert not problems, "\n".join(problems)


def test_lint_catches_what_it_should():
    # The lint above must be able to fail: the linter's own examples of bad queries.
    assert lint_expr("sum(camwatch_packets_total)")
    assert lint_expr('sum by (scope) (camwatch_device_egress_bytes_total{sensor=~"$sensor"})')
    assert lint_expr("rate(camwatch_packets_total[5m])")
    assert lint_expr("delta(camwatch_packets_total[$__rate_interval])")
    assert lint_expr('camwatch_alerts_total{severity="high"} > 0')
    assert not lint_expr("sum by (detector) (increase(camwatch_alerts_total[$__interval]))")
    assert not lint_expr("rate(process_cpu_seconds_total[$__rate_interval]) * on (job) group_left (sensor) x")
    assert not lint_expr("max(time() - camwatch_model_trained_timestamp_seconds)")
    sel = selectors('topk by (job, instance) (1, last_over_time(camwatch_build_info{sensor=~"a"}[1d]))')
    assert [(s.metric, s.call, s.range) for s in sel] == [("camwatch_build_info", "last_over_time", "1d")]


def test_table_links_open_the_device_dashboard():
    """Drill-down: rows naming a device link to camwatch-device with the row's sensor and device."""
    d = load_dashboard(REPO / "grafana" / "dashboards" / "camwatch-overview.json")
    device_uid = load_dashboard(REPO / "grafana" / "dashboards" / "camwatch-device.json")["uid"]
    linked = [p for p in panels(d) if p["fieldConfig"]["defaults"].get("links")]
    assert linked
    for p in linked:
        url = p["fieldConfig"]["defaults"]["links"][0]["url"]
        assert f"/d/{device_uid}/" in url and "var-device=${__data.fields.device}" in url
        assert "var-sensor=${__data.fields.sensor}" in url
        assert any("device" in t["expr"] and "sensor" in t["expr"] for t in p["targets"])


def test_overview_covers_the_analyst_questions():
    d = load_dashboard(REPO / "grafana" / "dashboards" / "camwatch-overview.json")
    exprs = " ".join(q.expr for q in queries(d))
    for needed in ("camwatch_devices{", "covered", "camwatch_device_egress_bytes_total", "by (scope)",
                   "camwatch_alerts_total", "by (detector)", "camwatch_top_destination_bytes",
                   "camwatch_segmentation_violations_total", "camwatch_egress_country_bytes_total",
                   "by (country, owner)"):
        assert needed in exprs, needed


def test_overview_maps_where_the_data_goes_by_country_code():
    """A Grafana geomap whose layer places each row by its ISO country code (the gazetteer lookup), fed by the
    bounded per-country egress counter; the table beside it by country and owner."""
    d = load_dashboard(REPO / "grafana" / "dashboards" / "camwatch-overview.json")
    (geomap,) = [p for p in panels(d) if p["type"] == "geomap"]
    (layer,) = geomap["options"]["layers"]
    assert layer["location"] == {"mode": "lookup", "lookup": "country", "gazetteer": "public/gazetteer/countries.json"}
    (target,) = geomap["targets"]
    assert target["expr"].startswith("sum by (country) (increase(camwatch_egress_country_bytes_total{")
    assert target["format"] == "table" and target["instant"]
    table = next(p for p in panels(d) if p["type"] == "table" and "by (country, owner)" in p["targets"][0]["expr"])
    assert table["gridPos"]["y"] == geomap["gridPos"]["y"]


# ---- provisioning ---------------------------------------------------------------------------------------------
def test_datasource_provisioning():
    doc = yaml.safe_load((REPO / "grafana/provisioning/datasources/camwatch.yml").read_text())
    assert doc["apiVersion"] == 1
    (ds,) = doc["datasources"]
    assert ds["type"] == "prometheus" and ds["url"].startswith("http")
    # $__rate_interval is derived from this; it must equal the example scrape interval
    prom = yaml.safe_load((REPO / "prometheus/prometheus.yml").read_text())
    assert ds["jsonData"]["timeInterval"] == prom["global"]["scrape_interval"]


def test_dashboard_provisioning_points_at_the_mounted_dashboards():
    doc = yaml.safe_load((REPO / "grafana/provisioning/dashboards/camwatch.yml").read_text())
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    compose = yaml.safe_load((REPO / "deploy/docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    sources = {m.split(":")[1]: m.split(":")[0] for m in mounts}
    assert path in sources, f"{path} is not mounted into the grafana container"
    assert (REPO / "deploy" / sources[path]).resolve() == (REPO / "grafana" / "dashboards").resolve()


# ---- every query parses, checked by Prometheus itself -----------------------------------------------------------
@pytest.fixture(scope="module")
def bare_prometheus(tmp_path_factory, request):
    if PROMETHEUS is None:
        pytest.skip("prometheus binary not installed (scripts/bootstrap.sh --test installs it)")
    workdir = tmp_path_factory.mktemp("prom-parse")
    return start_prometheus(workdir, {"global": {"scrape_interval": "1m"}}, request)


@pytest.mark.stack
def test_every_query_parses(bare_prometheus):
    problems = []
    exprs = [q for path in DASHBOARDS for q in queries(load_dashboard(path))]
    assert len(exprs) > 30
    for q in exprs:
        expr = substitute(q.expr, PARSE_VALUES)
        body = api(bare_prometheus, "/api/v1/query", query=expr)
        if body.get("status") != "success":
            problems.append(f"{q.dashboard} {q.where}: {body.get('error')}\n    {expr}")
    # and the check itself rejects a broken query
    assert api(bare_prometheus, "/api/v1/query", query="sum by (scope (x)")["status"] == "error"
    assert not problems, "\n".join(problems)


@pytest.mark.stack
def test_variable_queries_select_valid_series(bare_prometheus):
    for path in DASHBOARDS:
        for q in variable_queries(load_dashboard(path)):
            m = re.fullmatch(r"label_values\((.+), (\w+)\)", q.expr)
            assert m, f"{q.where}: {q.expr}"
            selector = substitute(m.group(1), PARSE_VALUES)
            body = api(bare_prometheus, f"/api/v1/label/{m.group(2)}/values", **{"match[]": selector})
            assert body["status"] == "success", f"{q.where}: {body.get('error')}"

