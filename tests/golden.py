"""Golden outputs: the alerts, the metrics exposition and the inventory of every fixture and scenario, recorded so
that a change which should not alter behaviour (a refactor, a speed-up) is held to exactly the same outputs, and a
change which should is seen, reviewed and recorded on purpose.

    python tests/golden.py            # compare, print what differs, exit 1 if anything does
    python tests/golden.py --update   # record the current outputs (commit them with the reason)

tests/e2e/test_golden.py runs the comparison in the suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PCAPS = REPO / "pcaps"
GOLDEN = Path(__file__).resolve().parent / "golden"
MODEL = REPO / "models" / "baseline.json"
sys.path.insert(0, str(REPO))

# Lines of the exposition that describe the process or the build, not what camwatch saw.
VOLATILE_METRICS = ("process_", "python_", "camwatch_build_info", "# HELP process_", "# TYPE process_",
                    "# HELP python_", "# TYPE python_", "# HELP camwatch_build", "# TYPE camwatch_build")


@dataclass(frozen=True)
class Case:
    name: str
    pcaps: tuple[Path, ...]
    config: Path | None = None
    model: Path | None = None


def fixture_cases() -> list[Case]:
    cases = []
    for path in sorted(p for p in PCAPS.rglob("*") if p.suffix in (".pcap", ".pcapng")):
        config = path.with_suffix(".toml")
        cases.append(Case(str(path.relative_to(PCAPS)), (path,), config if config.exists() else None))
    return cases


def scenario_cases(outdir: Path) -> list[Case]:
    subprocess.run([sys.executable, str(PCAPS / "scenarios.py"), str(outdir)], check=True)
    site = outdir / "site.toml"
    return [Case("scenarios/baseline.pcap", (outdir / "baseline.pcap",), site),
            Case("scenarios/mixed.pcap", (outdir / "mixed.pcap",), site),
            Case("scenarios/mixed.pcap+model", (outdir / "mixed.pcap",), site, MODEL)]


def outputs(case: Case) -> dict:
    """What camwatch replay would write for this case: alert lines, the metrics exposition, the inventory."""
    from prometheus_client import generate_latest

    from sensor.cli.loop import replay_into
    from sensor.config import load_config
    from sensor.export import build_registry
    from sensor.model import AnomalyModel
    from sensor.pipeline import Sensor

    alerts: list[dict] = []
    model = AnomalyModel.load(case.model) if case.model else None
    sensor = Sensor(load_config(case.config), on_alert=lambda a: alerts.append(a.as_dict()), model=model)
    failures = replay_into(sensor, [str(p) for p in case.pcaps])
    metrics = generate_latest(build_registry(sensor)).decode()
    same_exposition(build_registry(sensor, process=False))
    kept = [line for line in metrics.splitlines() if not line.startswith(VOLATILE_METRICS)]
    inventory = sorted(sensor.inventory_snapshot(), key=lambda d: d["ip"])
    return {"failures": failures, "alerts": alerts, "metrics": kept, "inventory": inventory}


def same_exposition(registry) -> None:
    """camwatch's /metrics writers (sensor/export/exposition.py) write what prometheus_client's would, in both
    formats, on this case's sensor."""
    from prometheus_client import generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as library_openmetrics

    from sensor.export.exposition import render_openmetrics, render_text
    for ours, theirs in ((render_text, generate_latest), (render_openmetrics, library_openmetrics)):
        if ours(registry) != theirs(registry):
            raise AssertionError(f"{ours.__name__} differs from prometheus_client's {theirs.__module__}")


def golden_path(case: Case) -> Path:
    return GOLDEN / (case.name.replace("/", "__") + ".json")


def load(case: Case) -> dict | None:
    path = golden_path(case)
    return json.loads(path.read_text()) if path.exists() else None


def record(case: Case, produced: dict) -> None:
    GOLDEN.mkdir(exist_ok=True)
    golden_path(case).write_text(json.dumps(produced, indent=1, sort_keys=True) + "\n")


def differences(expected: dict, produced: dict, limit: int = 12) -> list[str]:
    """Readable differences, first `limit` of them."""
    out = []
    for key in ("failures", "alerts", "metrics", "inventory"):
        want, got = expected.get(key), json.loads(json.dumps(produced[key]))
        if want == got:
            continue
        if isinstance(want, list) and isinstance(got, list):
            if len(want) != len(got):
                out.append(f"{key}: {len(want)} expected, {len(got)} produced")
            for i, (w, g) in enumerate(zip(want, got, strict=False)):
                if w != g:
                    out.append(f"{key}[{i}]:\n  expected {json.dumps(w)[:400]}\n  produced {json.dumps(g)[:400]}")
                if len(out) >= limit:
                    return out
        else:
            out.append(f"{key} differs")
    return out


def main(argv: list[str]) -> int:
    update = "--update" in argv
    with tempfile.TemporaryDirectory() as tmp:
        cases = fixture_cases() + scenario_cases(Path(tmp))
        wanted = {golden_path(c) for c in cases}
        changed = 0
        for case in cases:
            produced = outputs(case)
            expected = load(case)
            if update:
                record(case, produced)
                continue
            diff = ["no golden file"] if expected is None else differences(expected, produced)
            if diff:
                changed += 1
                print(f"{case.name}:\n  " + "\n  ".join(diff))
        if update:
            for stale in set(GOLDEN.glob("*.json")) - wanted:
                stale.unlink()
            print(f"recorded {len(cases)} cases in {GOLDEN.relative_to(REPO)}")
            return 0
    print(f"{changed} of {len(cases)} cases differ from their golden outputs" if changed else
          f"all {len(cases)} cases match their golden outputs")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
