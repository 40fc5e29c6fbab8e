"""Shared by test_grafana.py, test_prometheus.py and test_stack.py: the dashboards and rules as data, a small
PromQL lexer for the dashboard lint, and starting the real Prometheus / Alertmanager binaries on loopback.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))
RULE_FILES = [REPO / "prometheus" / "rules" / "camwatch.rules.yml",
              REPO / "prometheus" / "multi-site" / "central" / "site.rules.yml"]
RULE_TESTS = sorted((REPO / "prometheus" / "tests").glob("*.yml"))
RUNBOOKS = REPO / "docs" / "runbooks"

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
AMTOOL = shutil.which("amtool")


# ---- dashboards ---------------------------------------------------------------------------------------------
def load_dashboard(path: Path) -> dict:
    return json.loads(path.read_text())


def panels(dashboard: dict) -> list[dict]:
    """Every panel, including those nested in collapsed rows."""
    found = []
    for p in dashboard.get("panels", []):
        found.append(p)
        found.extend(p.get("panels", []))
    return found


@dataclass
class Query:
    dashboard: str
    where: str          # panel title, annotation name or variable name
    expr: str


def queries(dashboard: dict) -> list[Query]:
    """Every PromQL expression the dashboard sends: panel targets and annotation queries."""
    title = dashboard["title"]
    found = []
    for p in panels(dashboard):
        for t in p.get("targets", []):
            found.append(Query(title, f"panel {p['id']} {p.get('title')!r}", t.get("expr", "")))
    for a in dashboard.get("annotations", {}).get("list", []):
        if not a.get("builtIn"):
            found.append(Query(title, f"annotation {a.get('name')!r}", a.get("expr", "")))
    return found


def variable_queries(dashboard: dict) -> list[Query]:
    found = []
    for v in dashboard.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            found.append(Query(dashboard["title"], f"variable {v['name']}", q if isinstance(q, str) else q["query"]))
    return found


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's variable interpolation for $name and ${name} (the forms these dashboards use)."""
    def repl(m):
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"no value for ${name} in {expr!r}")
        return values[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, expr)


# ---- a PromQL lexer, enough for the dashboard linter's rules ------------------------------------------------
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<var>\$\{\w+\}|\$\w+)
  | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?[smhdwy]*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>==|!=|=~|!~|>=|<=|[-+*/%^<>=(){}\[\],@])
""", re.VERBOSE)
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
             "offset", "atan2", "inf", "nan"}
_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
COUNTER_FUNCTIONS = {"rate", "irate", "increase"}
RATE_FUNCTIONS = {"rate", "irate"}


def tokenize(expr: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot lex {expr[pos:pos + 20]!r} in {expr!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            tokens.append((m.lastgroup, m.group()))
    return tokens


@dataclass
class Selector:
    metric: str
    call: str | None        # the function whose direct argument this selector is, if any
    range: str | None       # the range in [...] right after the selector, if any


def selectors(expr: str) -> list[Selector]:
    """Metric selectors with the function call directly around them (what the linter's AST walk looks at)."""
    toks = tokenize(expr)
    found: list[Selector] = []
    stack: list[str | None] = []   # per open paren: function/aggregation name, "#group" for label lists, or None
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else None
        if text == "(":
            prev_kind, prev = toks[i - 1] if i else ("", "")
            if prev_kind == "ident" and prev in _GROUPING:
                stack.append("#group")
            elif prev_kind == "ident" and prev not in _KEYWORDS:
                stack.append(prev)
            else:
                stack.append(None)
        elif text == ")":
            stack.pop()
        elif text == "{":
            i = _skip(toks, i, "{", "}")
            continue
        elif kind == "ident" and text not in _KEYWORDS and nxt != "(" and (not stack or stack[-1] != "#group"):
            # "sum by (x) (...)": an aggregation name followed by a grouping clause is not a metric either
            if nxt in _GROUPING:
                i += 1
                continue
            j = i + 1
            if j < len(toks) and toks[j][1] == "{":
                j = _skip(toks, j, "{", "}")
            rng = None
            if j < len(toks) and toks[j][1] == "[":
                end = _skip(toks, j, "[", "]")
                rng = "".join(t for _, t in toks[j + 1:end - 1])
                j = end
            closes_call = j < len(toks) and toks[j][1] in (")", ",")
            call = stack[-1] if stack and closes_call and stack[-1] not in (None, "#group") else None
            found.append(Selector(text, call, rng))
            i = j
            continue
        i += 1
    if stack:
        raise ValueError(f"unbalanced parentheses in {expr!r}")
    return found


def _skip(toks, i, open_, close) -> int:
    """Index just past the bracket group starting at toks[i]."""
    depth = 0
    while i < len(toks):
        if toks[i][1] == open_:
            depth += 1
        elif toks[i][1] == close:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError(f"unbalanced {open_}{close}")


def lint_expr(expr: str) -> list[str]:
    """The dashboard linter's target-counter-agg and target-rate-interval rules."""
    problems = []
    for sel in selectors(expr):
        if sel.metric.endswith("_total") and not (sel.range is not None and sel.call in COUNTER_FUNCTIONS):
            problems.append(f"counter {sel.metric} is not inside rate(), irate() or increase()")
        if sel.call in RATE_FUNCTIONS and sel.range != "$__rate_interval":
            problems.append(f"{sel.call}({sel.metric}[{sel.range}]) should use $__rate_interval")
    return problems


# ---- rules --------------------------------------------------------------------------------------------------
def load_rules(path: Path) -> list[dict]:
    return [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]


def alert_rules() -> list[dict]:
    return [r for f in RULE_FILES for r in load_rules(f) if "alert" in r]


# ---- processes and HTTP -------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def api(base: str, path: str, **params) -> dict:
    """GET a Prometheus-style JSON API; returns the whole body (status, data or error)."""
    query = urllib.parse.urlencode(params, doseq=True)
    status, body = http_get(f"{base}{path}?{query}" if query else f"{base}{path}", timeout=10)
    try:
        return json.loads(body)
    except ValueError:
        return {"status": "error", "error": f"HTTP {status}: {body[:200]!r}"}


def wait_until(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


class Proc:
    """A child process whose output goes to a file, for the failure message."""

    def __init__(self, name: str, argv: list[str], workdir: Path, **kw):
        self.name = name
        self.log = workdir / f"{name}.log"
        self._fh = open(self.log, "wb")
        self.p = subprocess.Popen(argv, stdout=self._fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw)

    def output(self, tail: int = 3000) -> str:
        self._fh.flush()
        return self.log.read_text(errors="replace")[-tail:]

    def check_alive(self) -> None:
        if self.p.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.p.returncode}:\n{self.output()}")

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=10)
        self._fh.close()


def start_prometheus(workdir: Path, config: dict, request) -> str:
    """Start prometheus on a free loopback port with a temporary TSDB; stopped by the test's finalizer."""
    port = free_port()
    cfg = workdir / "prometheus.yml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    return _start_until_ready("prometheus", [PROMETHEUS, f"--config.file={cfg}",
                                             f"--storage.tsdb.path={workdir / 'tsdb'}",
                                             f"--web.listen-address=127.0.0.1:{port}"], port, workdir, request)


def _start_until_ready(name: str, cmd: list[str], port: int, workdir: Path, request) -> str:
    """Start a Prometheus-family server and wait for its /-/ready; returns its base URL."""
    proc = Proc(name, cmd, workdir)
    request.addfinalizer(proc.stop)
    base = f"http://127.0.0.1:{port}"

    def ready():
        proc.check_alive()
        try:
            return http_get(f"{base}/-/ready", timeout=1)[0] == 200
        except OSError:
            return False
    wait_until(ready, 30, f"{name} to be ready")
    return base


def start_alertmanager(workdir: Path, config: dict, request) -> str:
    port = free_port()
    cfg = workdir / "alertmanager.yml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    return _start_until_ready("alertmanager", [ALERTMANAGER, f"--config.file={cfg}", f"--storage.path={workdir / 'am'}",
                                               f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                              port, workdir, request)
