#!/usr/bin/env bash
# Installs the test stack, checks lint (ruff) and types (mypy), and runs the whole suite. pytest's exit 5 (nothing
# collected) is a failure: a run that tested nothing must not pass.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --test || exit 1
# Lint and types before the tests (their settings are in pyproject.toml): either one not clean fails the run.
if ! .venv/bin/python -m ruff check .; then
    echo "test.sh: ruff found lint problems (listed above); many are fixed by .venv/bin/python -m ruff check --fix" >&2
    exit 1
fi
if ! .venv/bin/python -m mypy; then
    echo "test.sh: mypy found type errors in sensor/ (listed above)" >&2
    exit 1
fi
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" = 5 ]; then
    echo "test.sh: pytest collected no tests" >&2
fi
exit "$rc"
