"""`camwatch eval`: detector precision, recall and time-to-detect on labelled captures, and what the incidents cost
an analyst (lines per planted behaviour, lines per benign camera-hour).

Labels (JSON) list planted behaviours: {id, kind (the detector that should catch it), device, destination, start,
end, also (other detectors that rightly fire on it), period (beacons)} plus `benign_devices` and the labelled span.
A detector's alert is the first line of an incident that names it among the incident's detectors; it is true when a
behaviour on the same device, whose kind or `also` names that detector, is under way (from its start to GRACE
seconds after its end). Everything else is a false alert.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean
from typing import Any

from sensor.errors import CamwatchError

GRACE = 60.0
SERIOUS = ("medium", "high", "critical")


def load_labels(path: str | Path) -> dict:
    try:
        labels = json.loads(Path(path).read_text(encoding="utf-8"))
        for b in labels["behaviours"]:
            for key in ("id", "kind", "device", "start", "end"):
                if key not in b:
                    raise KeyError(f"behaviour {b.get('id', '?')} lacks {key}")
        labels.setdefault("benign_devices", [])
        return labels
    except FileNotFoundError:
        raise CamwatchError(f"{path}: no such labels file") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CamwatchError(f"{path}: invalid labels file: {exc}") from None


def _detectors(line: dict) -> list[str]:
    """The detectors behind a line: an incident line lists them all; a line of contract 1 names one."""
    found = line.get("detectors")
    return list(found) if isinstance(found, list) else [line["detector"]]


def _explains(b: dict, alert: dict, detector: str | None = None) -> bool:
    """Whether behaviour b accounts for the line (as far as `detector` goes, when given)."""
    wanted = (b["kind"], *b.get("also", ()))
    named = [detector] if detector is not None else _detectors(alert)
    return (alert["device"]["ip"] == b["device"] and any(d in wanted for d in named)
            and b["start"] - 1.0 <= alert["ts"] <= b["end"] + GRACE)


def detections(lines: list[dict]) -> list[tuple[str, dict]]:
    """(detector, line) for each line on which a detector first shows in its incident: what the log told an
    analyst, per detector. Close lines tell nothing new; flood summaries stand for their first held-back alert."""
    seen: set[tuple[str, str]] = set()
    out = []
    for line in lines:
        if line.get("event") == "close":
            continue
        incident = line.get("incident") or f"line-{id(line)}"
        for det in _detectors(line):
            if (incident, det) not in seen:
                seen.add((incident, det))
                out.append((det, line))
    return out


def evaluate(alerts: list[dict], labels: dict) -> dict:
    behaviours = labels["behaviours"]
    found = detections(alerts)
    detectors = sorted({d for d, _ in found} | {b["kind"] for b in behaviours})
    per_detector = {det: _detector_report(det, [a for d, a in found if d == det], behaviours) for det in detectors}
    missed = [b["id"] for b in behaviours if _first_hit(b, found) is None]
    beacons = [{"id": b["id"], "periods_to_detect": round((_first_hit(b, found) or 0.0) / b["period"], 2)}
               for b in behaviours if b.get("period") and b["id"] not in missed]
    benign = set(labels["benign_devices"])
    hours = max((labels.get("end", 0) - labels.get("start", 0)) / 3600, 1e-9)
    benign_alerts = [a for a in alerts if a["device"]["ip"] in benign and a.get("event") != "close"]
    serious = [a for a in benign_alerts if a["severity"] in SERIOUS]
    return {
        "detectors": per_detector,
        "incidents": _incident_report(alerts, behaviours, benign, hours),
        "missed": missed,
        "beacons": beacons,
        "benign_devices": len(benign),
        "benign_hours": round(hours, 3),
        "false_alerts_on_benign": len(benign_alerts),
        "false_alerts_per_benign_camera_hour": len(benign_alerts) / (len(benign) * hours) if benign else None,
        "serious_false_alerts_on_benign": len(serious),
        "false_alerts_total": sum(d["alerts"] - d["true_alerts"] for d in per_detector.values()),
    }


def _first_hit(b: dict, found: list[tuple[str, dict]]) -> float | None:
    """Seconds from the behaviour's start to the first line on which its own detector names it."""
    hits = [a["ts"] for d, a in found if d == b["kind"] and _explains(b, a, d)]
    return min(hits) - b["start"] if hits else None


def _detector_report(det: str, mine: list[dict], behaviours: list[dict]) -> dict[str, Any]:
    true = [a for a in mine if any(_explains(b, a, det) for b in behaviours)]
    planted = [b for b in behaviours if b["kind"] == det]
    ttd = [t for b in planted if (t := _first_hit(b, [(det, a) for a in mine])) is not None]
    return {
        "alerts": len(mine), "true_alerts": len(true),
        "precision": len(true) / len(mine) if mine else None,
        "planted": len(planted), "detected": len(ttd),
        "recall": len(ttd) / len(planted) if planted else None,
        "ttd_mean_s": mean(ttd) if ttd else None, "ttd_max_s": max(ttd) if ttd else None,
    }


def _reaches(b: dict, lines: list[dict]) -> bool:
    """Whether an incident's lines name the behaviour's destination (any, when the label names none): two plants
    on one camera a minute apart are two behaviours, and each has its own incidents."""
    if not b.get("destination"):
        return True
    seen = {a["destination"]["ip"] for a in lines} | {ip for a in lines for ip in a.get("totals", {}).get(
        "addresses", ())}
    return b["destination"] in seen


def _incident_report(lines: list[dict], behaviours: list[dict], benign: set[str], hours: float) -> dict:
    """Per planted behaviour: the incidents that told of it, every line they wrote (open, update, close), and the
    time to the first; and how many lines benign cameras cost an analyst per hour."""
    by_incident: dict[str, list[dict]] = {}
    for line in lines:
        by_incident.setdefault(line.get("incident") or f"line-{id(line)}", []).append(line)
    rows = []
    for b in behaviours:
        told = [inc for inc, ls in by_incident.items() if _reaches(b, ls)
                and any(_explains(b, a) for a in ls if a.get("event") != "close")]
        first = [a["ts"] for inc in told for a in by_incident[inc] if a.get("event") != "close"]
        rows.append({"id": b["id"], "incidents": len(told), "opens": sum(
                         1 for inc in told for a in by_incident[inc] if a.get("event", "open") == "open"),
                     "lines": sum(len(by_incident[inc]) for inc in told),
                     "ttd_s": round(min(first) - b["start"], 3) if first else None})
    benign_lines = sum(1 for a in lines if a["device"]["ip"] in benign)
    return {
        "behaviours": rows,
        "lines_per_behaviour": mean(r["lines"] for r in rows) if rows else None,
        "max_opens_per_behaviour": max((r["opens"] for r in rows), default=0),
        "lines_on_benign": benign_lines,
        "lines_per_benign_camera_hour": benign_lines / (len(benign) * hours) if benign else None,
    }


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _format_incidents(report: dict) -> list[str]:
    inc = report["incidents"]
    lines = ["", f"{'behaviour':<20}{'incidents':>10}{'opens':>7}{'lines':>7}{'ttd s':>8}"]
    for r in inc["behaviours"]:
        ttd = _fmt(r["ttd_s"], ".1f")
        lines.append(f"{r['id'][:19]:<20}{r['incidents']:>10}{r['opens']:>7}{r['lines']:>7}{ttd:>8}")
    lines.append(f"lines per planted behaviour: {_fmt(inc['lines_per_behaviour'], '.2f')}; lines on benign cameras: "
                 f"{inc['lines_on_benign']} ({_fmt(inc['lines_per_benign_camera_hour'], '.2f')} per camera-hour)")
    return lines


def format_report(report: dict) -> str:
    head = f"{'detector':<17}{'alerts':>7}{'true':>6}{'precision':>10}{'planted':>8}{'found':>6}{'recall':>7}" \
           f"{'ttd mean s':>11}{'ttd max s':>10}"
    lines = [head, "-" * len(head)]
    for det, d in report["detectors"].items():
        lines.append(f"{det:<17}{d['alerts']:>7}{d['true_alerts']:>6}{_fmt(d['precision'], '.2f'):>10}"
                     f"{d['planted']:>8}{d['detected']:>6}{_fmt(d['recall'], '.2f'):>7}"
                     f"{_fmt(d['ttd_mean_s'], '.1f'):>11}{_fmt(d['ttd_max_s'], '.1f'):>10}")
    lines.append("")
    lines.append(f"missed behaviours: {', '.join(report['missed']) or 'none'}")
    for b in report["beacons"]:
        lines.append(f"beacon {b['id']}: detected after {b['periods_to_detect']} periods")
    per_hour = report["false_alerts_per_benign_camera_hour"]
    lines.append(f"benign cameras: {report['benign_devices']} over {report['benign_hours']} h; false alerts on them: "
                 f"{report['false_alerts_on_benign']} ({_fmt(per_hour, '.2f')} per camera-hour), "
                 f"medium or higher: {report['serious_false_alerts_on_benign']}")
    lines.append(f"false alerts in total: {report['false_alerts_total']}")
    lines.extend(_format_incidents(report))
    return "\n".join(lines) + "\n"
