#!/usr/bin/env bash
# Installs everything camwatch needs on Debian, idempotently:
#   scripts/bootstrap.sh          sensor: tshark/dumpcap/capinfos, Wireshark's manuf, a venv with camwatch
#   scripts/bootstrap.sh --test   also the test stack: prometheus + promtool, alertmanager, tcpreplay, iproute2,
#                                 setcap, setpriv and unshare
# Debian packages go through apt-get when root, through sudo otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

say() { printf 'bootstrap: %s\n' "$*" >&2; }

missing=()
need() {  # need COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ] || missing+=("$2")
}
need tshark tshark
need dumpcap wireshark-common
need capinfos wireshark-common
[ -f /usr/share/wireshark/manuf ] || command -v tshark >/dev/null 2>&1 || missing+=(libwireshark-data)
if [ "$want_test" = 1 ]; then
    need prometheus prometheus
    need promtool prometheus
    need prometheus-alertmanager prometheus-alertmanager
    need tcpreplay tcpreplay
    need ip iproute2
    # hostile-input tests: a capable dumpcap copy (setcap), a process without capabilities (setpriv), and a full
    # or read-only state disk in a private mount namespace (unshare)
    need systemd-analyze systemd     # the unit file is verified offline
    need openssl openssl             # certificates for the TLS endpoint tests
    need setcap libcap2-bin
    need setpriv util-linux
    need unshare util-linux
    need chromium chromium           # the report in a real headless browser (tests/e2e/test_report_browser.py)
    need jq jq                       # the runbooks' alert-log queries are run as written (tests/e2e/test_runbooks.py)
    need ffmpeg ffmpeg               # real encoders' video for bench/make_encoded.py (tests/live/test_encoded_capture.py)
fi
python_ok() { python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }
python_ok || missing+=(python3 python3-venv)
# The pcap record walk is a small C extension; without a compiler camwatch still works, only slower.
need gcc gcc
python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null || missing+=(python3-dev)

if [ ${#missing[@]} -gt 0 ]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    if [ "$(id -u)" = 0 ]; then
        apt=(apt-get)
    elif command -v sudo >/dev/null 2>&1; then
        apt=(sudo apt-get)
    else
        say "need Debian packages ${missing[*]}: run as root or install sudo"; exit 1
    fi
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${apt[@]}" update -qq
    "${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
python_ok || { say "camwatch needs Python 3.11 or newer as python3"; exit 1; }

# Dependencies come from a pinned, hash-checked lock (requirements/*.txt, made by pip-compile --generate-hashes
# from pyproject.toml); camwatch itself is then installed without touching the index. The venv is redone only
# when the lock, the project or the extension's source changes.
lock=requirements/sensor.txt
[ "$want_test" = 1 ] && lock=requirements/test.txt
stamp=.venv/.camwatch-installed
# The C extensions are built by the editable install: a changed sensor/_walk.c, _flows.c, _buffers.h, _tpacket.c, _mapguard.c,
# _tally.c or _manuf.c redoes it too, or a pulled change would leave a stale extension that the compiled-vs-reference
# tests reject.
lock_id() { echo "$(cat pyproject.toml "$1" sensor/_walk.c sensor/_flows.c sensor/_tpacket.c sensor/_mapguard.c sensor/_tally.c sensor/_manuf.c sensor/_buffers.h | sha256sum | cut -d' ' -f1) $1"; }
wanted="$(lock_id "$lock")"
have="$(cat "$stamp" 2>/dev/null || true)"
# The test lock is a superset of the sensor lock: a venv made for the tests serves the demo as it is.
[ "$want_test" = 0 ] && [ "$have" = "$(lock_id requirements/test.txt)" ] && wanted="$have"
if [ ! -x .venv/bin/python ] || [ "$have" != "$wanted" ]; then
    say "installing camwatch and $lock into .venv"
    [ -x .venv/bin/python ] || python3 -m venv .venv
    log=.venv/pip-install.log
    pip=(.venv/bin/python -m pip install --disable-pip-version-check)
    if ! { "${pip[@]}" --require-hashes -r "$lock" &&
           "${pip[@]}" --no-deps --no-build-isolation -e .; } >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        say "pip install failed (full log: $log)"; exit 1
    fi
    echo "$wanted" > "$stamp"
fi
