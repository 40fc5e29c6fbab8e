"""`camwatch eval`: detector precision, recall and time-to-detect on labelled captures.

Labels (JSON) list planted behaviours: {id, kind (the detector that should catch it), device, destination, start,
end, also (other detectors that rightly fire on it), period (beacons)} plus `benign_devices` and the labelled span.
An alert is true when a behaviour on the same device, whose kind or `also` names the alert's detector, is under way
(from its start to GRACE seconds after its end). Everything else is a false alert.
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


def _explains(b: dict, alert: dict) -> bool:
    return (alert["device"]["ip"] == b["device"] and alert["detector"] in (b["kind"], *b.get("also", ()))
            and b["start"] - 1.0 <= alert["ts"] <= b["end"] + GRACE)


def evaluate(alerts: list[dict], labels: dict) -> dict:
    behaviours = labels["behaviours"]
    detectors = sorted({a["detector"] for a in alerts} | {b["kind"] for b in behaviours})
    per_detector: dict[str, dict[str, Any]] = {}
    for det in detectors:
        mine = [a for a in alerts if a["detector"] == det]
        true = [a for a in mine if any(_explains(b, a) for b in behaviours)]
        planted = [b for b in behaviours if b["kind"] == det]
        ttd = []
        for b in planted:
            hits = [a["ts"] for a in mine if _explains(b, a) and a["detector"] == b["kind"]]
            if hits:
                ttd.append(min(hits) - b["start"])
        per_detector[det] = {
            "alerts": len(mine), "true_alerts": len(true),
            "precision": len(true) / len(mine) if mine else None,
            "planted": len(planted), "detected": len(ttd),
            "recall": len(ttd) / len(planted) if planted else None,
            "ttd_mean_s": mean(ttd) if ttd else None, "ttd_max_s": max(ttd) if ttd else None,
        }
    missed = [b["id"] for b in behaviours
              if not any(_explains(b, a) and a["detector"] == b["kind"] for a in alerts)]
    beacons = [{"id": b["id"], "periods_to_detect": round((min(
        a["ts"] for a in alerts if _explains(b, a) and a["detector"] == b["kind"]) - b["start"]) / b["period"], 2)}
        for b in behaviours if b.get("period") and b["id"] not in missed]
    benign = set(labels["benign_devices"])
    hours = max((labels.get("end", 0) - labels.get("start", 0)) / 3600, 1e-9)
    benign_alerts = [a for a in alerts if a["device"]["ip"] in benign]
    serious = [a for a in benign_alerts if a["severity"] in SERIOUS]
    return {
        "detectors": per_detector,
        "missed": missed,
        "beacons": beacons,
        "benign_devices": len(benign),
        "benign_hours": round(hours, 3),
        "false_alerts_on_benign": len(benign_alerts),
        "false_alerts_per_benign_camera_hour": len(benign_alerts) / (len(benign) * hours) if benign else None,
        "serious_false_alerts_on_benign": len(serious),
        "false_alerts_total": sum(d["alerts"] - d["true_alerts"] for d in per_detector.values()),
    }


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


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
    return "\n".join(lines) + "\n"
