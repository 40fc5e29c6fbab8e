"""camwatch's /metrics writers against prometheus_client's own: the same bytes, in both formats, whatever the label
values hold; families the fast writers do not handle go through the library."""

from __future__ import annotations

import gzip
import io

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

from sensor.export.exposition import encoder, metrics_app, render_openmetrics, render_text

HOSTILE = ["", "plain", 'quo"te', "back\\slash", "new\nline", 'all\\"\n\\n', "ünïcødé ✓", "\x00nul", "tab\t", "}{=,"]


class Families(Collector):
    def __init__(self, families):
        self.families = families

    def collect(self):
        return list(self.families)


def hostile_families():
    counter = CounterMetricFamily("camwatch_things", 'Things "counted" \\ with\nnewlines.', labels=["device", "kind"])
    gauge = GaugeMetricFamily("camwatch_level", "A level.", labels=["b_label", "a_label"])
    for i, value in enumerate(HOSTILE):
        counter.add_metric([value, f"k{i}"], i * 1.5)
        gauge.add_metric([value, value[::-1]], -i / 3)
    info = InfoMetricFamily("camwatch_build", "Build.", value={"version": 'v"1\\', "commit": "abc\n"})
    plain = CounterMetricFamily("camwatch_plain", "No labels.", value=3)
    odd_values = GaugeMetricFamily("camwatch_odd", "Odd values.", labels=["x"])
    for x, v in (("inf", float("inf")), ("-inf", float("-inf")), ("nan", float("nan")), ("big", 1e22),
                 ("small", 1e-9), ("int", 12345678901234567890)):
        odd_values.add_metric([x], v)
    unit = GaugeMetricFamily("camwatch_lag_seconds", "Lag.", value=0.25, unit="seconds")
    return [counter, gauge, info, plain, odd_values, unit]


def library_only_families():
    """What the fast writers hand to the library: a timestamp, a histogram, a created sample, odd names."""
    stamped = GaugeMetricFamily("camwatch_stamped", "Stamped.", labels=["a"])
    stamped.add_metric(["x"], 1, timestamp=1700000000.5)
    histogram = HistogramMetricFamily("camwatch_sizes", "Sizes.", buckets=[("1", 2), ("+Inf", 5)], sum_value=7)
    created = CounterMetricFamily("camwatch_created", "With a created time.", value=2, created=1700000000.0)
    colon = GaugeMetricFamily("camwatch:recorded", "A recording rule's name.", value=1)
    label = GaugeMetricFamily("camwatch_label", "A label named with a dot.", labels=["a.b"])
    label.add_metric(["v"], 1)
    return [stamped, histogram, created, colon, label]


@pytest.mark.parametrize("families", [hostile_families, library_only_families,
                                      lambda: hostile_families() + library_only_families()])
@pytest.mark.parametrize("escaping", [openmetrics.UNDERSCORES, openmetrics.ALLOWUTF8, openmetrics.DOTS,
                                      openmetrics.VALUES])
def test_both_formats_are_the_library_s_bytes(families, escaping):
    source = Families(families())
    assert render_text(source, escaping) == generate_latest(source, escaping)
    for version in ("1.0.0", "2.0.0"):
        assert render_openmetrics(source, escaping, version) == openmetrics.generate_latest(source, escaping, version)


@pytest.mark.parametrize("accept", [
    None, "", "text/plain", "text/plain;version=0.0.4", "text/plain;version=1.0.0;escaping=allow-utf-8",
    # what Prometheus 2.42 sends
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "application/openmetrics-text", "application/openmetrics-text;version=1.0.0;escaping=underscores",
    "application/openmetrics-text;version=1.0.0;escaping=dots", "application/json"])
def test_the_format_is_the_one_the_library_chooses(accept):
    source = Families(hostile_families())
    ours, content_type = encoder(accept)
    theirs, expected_type = choose_encoder(accept or "")
    assert content_type == expected_type
    assert ours(source) == theirs(source)


def call(app, method="GET", query="", accept=None, encoding=None):
    environ = {"REQUEST_METHOD": method, "QUERY_STRING": query, "PATH_INFO": "/metrics", "wsgi.input": io.BytesIO()}
    if accept:
        environ["HTTP_ACCEPT"] = accept
    if encoding:
        environ["HTTP_ACCEPT_ENCODING"] = encoding
    seen = {}

    def start_response(status, headers):
        seen.update(status=status, headers=dict(headers))
    body = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], body


def test_the_app_serves_what_the_library_would():
    registry = CollectorRegistry(auto_describe=True)   # so that name[] can find the families
    registry.register(Families(hostile_families()))
    app = metrics_app(registry)
    status, headers, body = call(app)
    assert status == "200 OK" and body == generate_latest(registry)
    assert headers["Content-Type"] == choose_encoder("")[1]
    status, headers, body = call(app, accept="application/openmetrics-text", encoding="gzip, deflate")
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == openmetrics.generate_latest(registry)
    _, _, body = call(app, query="name[]=camwatch_level&name[]=camwatch_build_info")
    assert body == generate_latest(registry.restricted_registry(["camwatch_level", "camwatch_build_info"]))
    assert b"camwatch_things" not in body and b"camwatch_level{" in body
    assert call(app, method="POST")[0] == "405 Method Not Allowed"
    assert call(app, method="OPTIONS")[:2] == ("200 OK", {"Allow": "OPTIONS,GET"})


def test_camwatch_s_families_take_the_fast_way(monkeypatch):
    import sensor.export.exposition as exposition

    def refuse(*_args, **_kwargs):
        raise AssertionError("written by the library")
    monkeypatch.setattr(exposition, "library_text", refuse)
    monkeypatch.setattr(exposition.openmetrics, "generate_latest", refuse)
    source = Families(hostile_families())
    assert render_text(source).count(b"# TYPE ") == render_openmetrics(source).count(b"# TYPE ") == 6
    with pytest.raises(AssertionError, match="library"):
        render_text(Families(library_only_families()[:1]))


def test_a_sensor_s_families_can_be_asked_for_by_name():
    from sensor.config import Config
    from sensor.export import build_registry
    from sensor.pipeline import Sensor
    app = metrics_app(build_registry(Sensor(Config())))
    _, _, body = call(app, query="name[]=camwatch_devices_evicted_total&name[]=camwatch_packets_total")
    families = sorted(line.split()[2] for line in body.decode().splitlines() if line.startswith("# TYPE"))
    assert families == ["camwatch_devices_evicted_total", "camwatch_packets_total"]
