#!/usr/bin/env bash
# The main job on the bundled capture: replay the demo camera site at 10x speed, print alerts as JSON lines,
# and keep serving the metrics at http://127.0.0.1:9847/metrics until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/camwatch replay pcaps/synthetic/camera_site.pcap --config pcaps/synthetic/camera_site.toml \
    --pace 10x --serve "${CAMWATCH_LISTEN:-127.0.0.1:9847}" "$@"
