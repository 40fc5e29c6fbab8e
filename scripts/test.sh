#!/usr/bin/env bash
# Installs the test stack and runs the whole suite. pytest's exit 5 (nothing collected) is a failure: a run that
# tested nothing must not pass.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --test || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" = 5 ]; then
    echo "test.sh: pytest collected no tests" >&2
fi
exit "$rc"
