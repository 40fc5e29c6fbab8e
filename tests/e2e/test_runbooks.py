"""Every `jq` query the runbooks give an analyst runs, as written, against a real alert log: the demo site, the
segmentation site and the labelled scenarios, and the ones that name a detector find its incidents there."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import PCAPS, REPO, SYNTHETIC, alerts_of, camwatch

RUNBOOKS = REPO / "docs" / "runbooks"
QUERY = re.compile(r"jq -c '([^']+)' /var/lib/camwatch/alerts\.jsonl")
QUERIES = sorted({(path.name, q) for path in RUNBOOKS.glob("*.md") for q in QUERY.findall(path.read_text())})


@pytest.fixture(scope="module")
def alert_log(tmp_path_factory):
    out = tmp_path_factory.mktemp("runbook-log")
    subprocess.run([sys.executable, str(PCAPS / "scenarios.py"), str(out)], check=True)
    text = ""
    for args in ((SYNTHETIC / "camera_site.pcap", "--config", SYNTHETIC / "camera_site.toml"),
                 (SYNTHETIC / "segmentation.pcap", "--config", SYNTHETIC / "segmentation.toml"),
                 (out / "baseline.pcap", out / "mixed.pcap", "--config", out / "site.toml")):
        proc = camwatch("replay", *args)
        assert proc.returncode == 0, proc.stderr
        text += proc.stdout
    log = out / "alerts.jsonl"
    log.write_text(text)
    return log, alerts_of(text)


def test_the_runbooks_have_queries():
    assert len(QUERIES) >= 8


@pytest.mark.parametrize(("page", "query"), QUERIES, ids=[f"{p}:{i}" for i, (p, _) in enumerate(QUERIES)])
def test_runbook_query_runs_and_finds_what_it_is_for(alert_log, page, query):
    log, lines = alert_log
    example = lines[0]
    filled = (query.replace("<device>", example["device"]["ip"]).replace("<incident>", example["incident"])
              .replace("<detector>", "egress_policy"))
    proc = subprocess.run(["jq", "-c", filled, str(log)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), f"{page}: {filled} selects nothing from a log that has what it looks for"
