#!/usr/bin/env bash
# Mutation testing (issue 18; docs/testing.md, "Mutation testing"): mutmut makes one small change at a time in a
# core module (a flipped comparison, an off-by-one constant, a dropped argument...) and runs the fast unit tests
# against each such mutant; a mutant that no test fails on has "survived".
#
#   scripts/mutation.sh                   the modules listed in [tool.mutmut] only_mutate (pyproject.toml)
#   scripts/mutation.sh decode flows      only these: sensor/decode.py, sensor/flows.py (sensor/NAME.py also works;
#                                         a package, e.g. detect, is every file of sensor/detect/)
#   options: --jobs N   worker processes (default 2)
#            --keep     leave the scratch copy, to look at mutants with `mutmut show NAME` or `mutmut browse` there
#
# Installs what it needs (scripts/bootstrap.sh --test, then the pinned, hash-checked requirements/mutation.txt into
# .venv) and runs in a scratch copy under ${TMPDIR:-/tmp}, so the work tree never gets mutants/ or a cache. Prints
# the score per module and every surviving mutant with its diff, marked when docs/testing.md explains it. Exit 0
# when every module scores at least MUTATION_TARGET percent (default 90), 1 when one does not, 2 when the run
# itself failed. Not part of CI: it takes minutes (docs/testing.md has the last run's time).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
say() { printf 'mutation.sh: %s\n' "$*" >&2; }

jobs=2
keep=0
modules=()
while [ $# -gt 0 ]; do
    case "$1" in
        --jobs) jobs=${2:?--jobs needs a number}; shift 2 ;;
        --jobs=*) jobs=${1#*=}; shift ;;
        --keep) keep=1; shift ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) say "unknown option $1 (see --help)"; exit 2 ;;
        *) modules+=("$1"); shift ;;
    esac
done
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { say "--jobs wants a positive number, not '$jobs'"; exit 2; }

bash scripts/bootstrap.sh --test || exit 2
want=$(sed -n 's/^mutmut==\([^ ]*\) .*/\1/p' requirements/mutation.txt)
have=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("mutmut"))' 2>/dev/null || true)
if [ "$have" != "$want" ]; then
    say "installing mutmut $want into .venv (requirements/mutation.txt)"
    if ! .venv/bin/python -m pip install --disable-pip-version-check --require-hashes -r requirements/mutation.txt \
            >.venv/mutation-install.log 2>&1; then
        tail -n 20 .venv/mutation-install.log >&2
        say "pip install failed (full log: .venv/mutation-install.log)"; exit 2
    fi
fi

# module names -> sensor/NAME.py, or sensor/NAME/* for a package (as only_mutate spells it); none given: the
# configured list
paths=()
for m in "${modules[@]}"; do
    m=${m#sensor/}
    m=${m%.py}
    m=${m%/\*}
    m=${m%/}
    if [ -f "sensor/$m.py" ]; then paths+=("sensor/$m.py")
    elif [ -d "sensor/$m" ]; then paths+=("sensor/$m/*")
    else say "no module sensor/$m.py or package sensor/$m/"; exit 2; fi
done
if [ ${#paths[@]} -eq 0 ]; then
    mapfile -t paths < <(.venv/bin/python -c 'import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["tool"]["mutmut"]["only_mutate"]))')
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/camwatch-mutation.XXXXXX")
cleanup() {
    if [ "$keep" = 1 ]; then say "scratch copy kept: $work (cd there; $repo/.venv/bin/mutmut browse)"
    else rm -rf "$work"; fi
}
trap cleanup EXIT
tar -cf - --exclude=__pycache__ --exclude=.hypothesis --exclude=.pytest_cache --exclude='*.pyc' \
    sensor tests pcaps models pyproject.toml README.md docs | tar -xf - -C "$work"
# In the copy only: this run's modules replace the configured list, and the configured tests are joined by every
# unit test file (mutmut learns which tests reach which function and runs only those against a mutant, so more
# files cost one clean run, not time per mutant). test_code_shape reads sensor/'s source, which mutmut rewrites;
# test_cli_startup runs fresh interpreters on a capture bench/ makes (neither is in the copy, nor in-process).
(cd "$work" && "$repo/.venv/bin/python" - pyproject.toml "${paths[@]}") <<'EOF'
import json
import re
import sys
from pathlib import Path

path, modules = sys.argv[1], sys.argv[2:]
text = open(path).read()
text, n = re.subn(r"(?m)^only_mutate = \[.*\]$", "only_mutate = " + json.dumps(modules), text)
if n != 1:
    sys.exit("mutation.sh: no single `only_mutate = [...]` line in [tool.mutmut] of pyproject.toml")
selection = re.search(r"(?ms)^pytest_add_cli_args_test_selection = (\[.*?\])", text)
if selection is None:
    sys.exit("mutation.sh: no `pytest_add_cli_args_test_selection = [...]` in [tool.mutmut] of pyproject.toml")
configured = json.loads(re.sub(r",\s*\]", "]", selection[1]))
unit = sorted(str(f) for f in Path("tests/unit").glob("test_*.py")
              if f.name not in ("test_code_shape.py", "test_cli_startup.py"))
tests = configured + [f for f in unit if f not in configured]
text = text.replace(selection[0], "pytest_add_cli_args_test_selection = " + json.dumps(tests))
text, n = re.subn(r"(?m)^also_copy = \[.*\]$", 'also_copy = ["pcaps", "models", "README.md", "docs"]', text)
if n != 1:
    sys.exit("mutation.sh: no single `also_copy = [...]` line in [tool.mutmut] of pyproject.toml")
open(path, "w").write(text)
EOF

say "mutating ${paths[*]} with $jobs worker(s) in $work (progress: tail -f $work/mutmut.log)"
start=$(date +%s)
if ! (cd "$work" && "$repo/.venv/bin/mutmut" run --max-children "$jobs") >"$work/mutmut.log" 2>&1; then
    tail -c 4000 "$work/mutmut.log" | tr '\r' '\n' | tail -n 40 >&2
    say "mutmut failed (log above)"; exit 2
fi
elapsed=$(( $(date +%s) - start ))

cd "$work"
MUTATION_ELAPSED=$elapsed MUTATION_JOBS=$jobs "$repo/.venv/bin/python" - "${paths[@]}" <<'EOF'
"""Score table per module, then every surviving mutant with its diff."""
import datetime
import importlib.metadata
import json
import os
import re
import sys
from pathlib import Path

from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code

DETECTED = {"killed", "timeout", "segfault", "caught by type check"}
target = float(os.environ.get("MUTATION_TARGET", "90"))
# Survivors are explained in testing.md (decode, flows, dissect) and mutation-core.md (config, enrich, detect, export).
docs = Path("docs/testing.md").read_text() + Path("docs/mutation-core.md").read_text()


def explained(name: str) -> bool:
    return re.search(re.escape(name) + r"(?!\d)", docs) is not None



elapsed = int(os.environ["MUTATION_ELAPSED"])
print(f"camwatch mutation run {datetime.date.today().isoformat()}: mutmut {importlib.metadata.version('mutmut')}, "
      f"{os.environ['MUTATION_JOBS']} worker(s), {elapsed // 60} min {elapsed % 60:02d} s")
print()
print(f"{'module':<20} {'mutants':>7} {'killed':>7} {'timeout':>7} {'survived':>8} {'no tests':>8} {'score':>7}")
below, survivors = [], []
rows = []   # (module as given, its files)
for pattern in sys.argv[1:]:
    if pattern.endswith("*"):    # a package: every file of it, as one row
        files = sorted(str(m.relative_to("mutants"))[:-len(".meta")]
                       for m in Path("mutants", pattern.rstrip("*")).rglob("*.py.meta"))
    else:
        files = [pattern]
    rows.append((pattern, files))
for path, files in rows:
    status, origin = {}, {}
    for file in files:
        for name, code in json.loads(Path("mutants", file + ".meta").read_text())["exit_code_by_key"].items():
            status[name], origin[name] = status_by_exit_code[code], file
    count = {s: sum(1 for v in status.values() if v == s) for s in set(status.values())}
    detected = sum(n for s, n in count.items() if s in DETECTED)
    score = 100.0 * detected / len(status) if status else 100.0
    if score < target:
        below.append(path)
    print(f"{path:<20} {len(status):>7} {count.get('killed', 0):>7} "
          f"{count.get('timeout', 0) + count.get('segfault', 0):>7} {count.get('survived', 0):>8} "
          f"{count.get('no tests', 0):>8} {score:>6.1f}%")
    others = {s: n for s, n in count.items() if s not in DETECTED | {"survived", "no tests"}}
    if others:
        print(f"{'':<20} also: {others}")
    survivors += [(name, origin[name], s) for name, s in sorted(status.items()) if s not in DETECTED]
print()
if survivors:
    n_explained = sum(1 for name, _, _ in survivors if explained(name))
    print(f"{len(survivors)} not killed ({n_explained} explained in docs/testing.md or docs/mutation-core.md, marked E):")
    for name, path, s in survivors:
        print(f"\n{'E' if explained(name) else ' '} {name}  ({s})")
        for line in get_diff_for_mutant(name, path=path).splitlines():
            if line.startswith(("-", "+")) and not line.startswith(("---", "+++")):
                print("    " + line)
if below:
    print(f"\nunder the {target:g}% target: {', '.join(below)}")
sys.exit(1 if below else 0)
EOF
