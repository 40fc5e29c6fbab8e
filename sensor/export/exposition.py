"""The /metrics text, in both of prometheus_client's formats, byte for byte as the library writes it but without
its per-sample work: the library checks and escapes every label name of every sample (~15 µs a sample), and at
10,000 devices a scrape is ~30,000 samples, 0.4-0.6 s of CPU in the request thread beside the packet path (up to
8 s of wall time on a loaded sensor, near Prometheus's 10 s timeout: docs/reliability.md). Here a family's names are
checked once, label values escaped only when they hold something to escape.

Only what camwatch's collectors make takes the fast way (counters, gauges and infos; legacy names; no timestamps,
exemplars or native histograms; the escapings that leave such names alone). Any other family, or another escaping,
is written by the library itself, so the output is always the library's (tests/unit/test_export_exposition.py, and
tests/golden.py on every case).
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest as library_text
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from prometheus_client import Metric

_LEGACY_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# Legacy names pass through these escapings unchanged; DOTS and VALUES rewrite them, so they are the library's.
_NAME_PRESERVING = (openmetrics.UNDERSCORES, openmetrics.ALLOWUTF8)
_TEXT_TYPES = {"counter": "counter", "gauge": "gauge", "info": "gauge"}
_OM_TYPES = frozenset({"counter", "gauge", "info"})


def _value_text(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def _plain(metric: Metric, types: Iterable[str]) -> bool:
    """Whether the fast writer may write this family: its type, every name legacy, nothing but names, labels and
    values in its samples. Label names are checked once per distinct set of them."""
    if metric.type not in types or not _LEGACY_NAME.fullmatch(metric.name):
        return False
    prefix, seen = metric.name, set()
    for s in metric.samples:
        if s.timestamp is not None or s.exemplar is not None or s.native_histogram is not None or s.value is None:
            return False
        if not s.name.startswith(prefix) or s.name.endswith(("_created", "_gsum", "_gcount")):
            return False
        keys = tuple(s.labels)
        if keys not in seen:
            if not all(_LEGACY_NAME.fullmatch(k) for k in keys) or not _LEGACY_NAME.fullmatch(s.name):
                return False
            seen.add(keys)
    return True


def _samples(metric: Metric, out: list[str]) -> None:
    for s in metric.samples:
        labels = s.labels
        if labels:
            inner = ",".join([f'{k}="{_value_text(v)}"' for k, v in sorted(labels.items())])
            out.append(f"{s.name}{{{inner}}} {floatToGoString(s.value)}\n")
        else:
            out.append(f"{s.name} {floatToGoString(s.value)}\n")


class _One(Collector):
    """One family as a registry, for the library's own writer."""

    def __init__(self, metric: Metric):
        self.metric = metric

    def collect(self) -> Iterable[Metric]:
        return [self.metric]


def render_text(registry: Collector, escaping: str = openmetrics.UNDERSCORES) -> bytes:
    """prometheus_client.generate_latest(registry, escaping)."""
    if escaping not in _NAME_PRESERVING:
        return library_text(registry, escaping)
    out: list[str] = []
    for metric in registry.collect():
        if not _plain(metric, _TEXT_TYPES):
            out.append(library_text(_One(metric), escaping).decode())
            continue
        name = metric.name + ("_total" if metric.type == "counter" else "_info" if metric.type == "info" else "")
        doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {_TEXT_TYPES[metric.type]}\n")
        _samples(metric, out)
    return "".join(out).encode()


def render_openmetrics(registry: Collector, escaping: str = openmetrics.UNDERSCORES,
                       version: str = "1.0.0") -> bytes:
    """prometheus_client.openmetrics.exposition.generate_latest(registry, escaping, version)."""
    if escaping not in _NAME_PRESERVING:
        return openmetrics.generate_latest(registry, escaping, version)
    out: list[str] = []
    for metric in registry.collect():
        if not _plain(metric, _OM_TYPES):
            text = openmetrics.generate_latest(_One(metric), escaping, version).decode()
            out.append(text[:-len("# EOF\n")])
            continue
        name = metric.name
        out.append(f"# HELP {name} {_value_text(metric.documentation)}\n# TYPE {name} {metric.type}\n")
        if metric.unit:
            out.append(f"# UNIT {name} {metric.unit}\n")
        _samples(metric, out)
    out.append("# EOF\n")
    return "".join(out).encode()


def encoder(accept_header: str | None) -> tuple[Callable[[Collector], bytes], str]:
    """The writer and content type prometheus_client would choose for this Accept header, with the fast writers in
    place of its own."""
    chosen, content_type = choose_encoder(accept_header or "")
    func, options = getattr(chosen, "func", chosen), getattr(chosen, "keywords", {})
    if func is openmetrics.generate_latest:
        return partial(render_openmetrics, **options), content_type
    if func is library_text:
        return partial(render_text, **options), content_type
    return chosen, content_type


def metrics_app(registry: CollectorRegistry) -> WSGIApplication:
    """prometheus_client.make_wsgi_app(registry) with the fast writers: GET (and OPTIONS), content negotiation,
    gzip when accepted, `name[]` selecting families."""
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        if method == "OPTIONS":
            start_response("200 OK", [("Allow", "OPTIONS,GET")])
            return [b""]
        if method != "GET":
            start_response("405 Method Not Allowed", [("Allow", "OPTIONS,GET")])
            return [f"# HTTP 405 Method Not Allowed: {method}; use OPTIONS or GET\n".encode()]
        write, content_type = encoder(environ.get("HTTP_ACCEPT"))
        params = parse_qs(environ.get("QUERY_STRING", ""))
        source: Collector = registry.restricted_registry(params["name[]"]) if "name[]" in params else registry
        output = write(source)
        headers = [("Content-Type", content_type)]
        if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING") or ""):
            output = gzip.compress(output)
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [output]

    return app
