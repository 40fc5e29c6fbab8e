"""dumpcap never outlives camwatch: killed with it (the parent-death signal, or the watchdog when dumpcap has file
capabilities), stood down on an orderly stop; an interface deleted under a live capture is one clean error; a slow
dumpcap start is waited out, or stopped on request. Each test captures on the loopback of a network namespace of its
own (root; skipped without it) and sends nothing."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import LIVE_START_WAIT, REPO

from sensor import live as live_capture
from sensor.live import LiveCapture

_runs = itertools.count()


def _live_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root: captures with dumpcap inside a network namespace"
    for tool in ("dumpcap", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    return None


@pytest.fixture
def netns():
    """A network namespace of the test's own: its loopback carries no one else's traffic, so dumpcap there never
    writes a packet (a write to a pipe nobody reads would end it, and the test would prove nothing)."""
    if _live_unavailable():
        pytest.skip(_live_unavailable())
    name = f"cw-hostile-{os.getpid()}-{next(_runs)}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create network namespaces: {made.stderr.strip()}")
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True)
    yield name
    # Only this test's processes live there (a dumpcap left behind by a failing test, say).
    for pid in subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


# Owns a LiveCapture on the namespace's loopback, says which processes it started, then waits to be killed or told
# to stop. It says so only once dumpcap has also written "File: -" on stderr, its last word at start, just after the
# pcap header: an owner killed in between takes dumpcap with it (the write fails on the closed pipe and dumpcap
# exits; 46 of 100 trials with the pipes closed at once, none of 100 with 0.2 s between), whatever the test is about.
OWNER = """
import sys, threading
from sensor.live import LiveCapture
said_file = threading.Event()
class Owned(LiveCapture):
    def _stderr_line(self, line):
        if line.startswith("File: "):
            said_file.set()
        super()._stderr_line(line)
if sys.argv[1] != "auto":
    LiveCapture.WATCHDOG = sys.argv[1] == "on"
live = Owned("lo", buffer_mib=1)
if not said_file.wait(60):
    sys.exit("dumpcap never said 'File: -' on stderr")
print(live.proc.pid, live._watchdog.pid if live._watchdog else 0, flush=True)
sys.stdin.readline()
watchdog = live._watchdog
live.stop()
print(watchdog.returncode if watchdog else "none", live.proc.returncode, flush=True)
"""


def _running(pid: int) -> bool:
    """Alive and not a zombie: an orphan's zombie waits for init, which in a container may never reap it."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat_line.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


class Owner:
    """A process owning a LiveCapture, as camwatch does; `prefix` runs it as someone else."""

    def __init__(self, ns: str, watchdog: str, prefix: tuple[str, ...] = (), env_extra: dict | None = None):
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
        # `ip netns exec` and setpriv exec what they run: the process started here is the owner itself.
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, *prefix, sys.executable, "-c", OWNER, watchdog],
                                     cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            pytest.fail(f"LiveCapture did not start: {self.proc.stderr.read()}")
        self.dumpcap, self.watchdog = map(int, line.split())
        assert _running(self.dumpcap)

    def kill_and_time_dumpcap(self, limit: float = 5.0) -> float:
        """SIGKILL the owner; seconds until its dumpcap was gone (`limit` if it was still there then)."""
        self.proc.kill()
        self.proc.wait()
        killed = time.monotonic()
        while _running(self.dumpcap) and time.monotonic() - killed < limit:
            time.sleep(0.01)
        return time.monotonic() - killed

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in (self.dumpcap, self.watchdog):
            if pid and _running(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def owner(netns):
    started: list[Owner] = []

    def start(*args, **kw) -> Owner:
        started.append(Owner(netns, *args, **kw))
        return started[-1]

    yield start
    for o in started:
        o.cleanup()


def test_dumpcap_dies_when_camwatch_is_killed(owner):
    """Run as root, dumpcap gains no privilege at exec, so the kernel's parent-death signal survives it."""
    o = owner("auto")
    assert o.watchdog == 0   # no watchdog needed
    assert o.kill_and_time_dumpcap() < 2.0


@pytest.fixture
def capable_dumpcap(tmp_path):
    """A copy of dumpcap with file capabilities, as Debian installs it for unprivileged capture, and how to run
    camwatch the way the service does: with no capabilities of its own (root's are switched off by the noroot
    securebit), so that dumpcap gains some at exec and the kernel drops the parent-death signal."""
    if _live_unavailable():
        pytest.skip(_live_unavailable())
    for tool in ("setcap", "setpriv"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    copy = bindir / "dumpcap"
    shutil.copy2(shutil.which("dumpcap"), copy)
    made = subprocess.run(["setcap", "cap_net_raw,cap_net_admin=eip", str(copy)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"no file capabilities here: {made.stderr.strip()}")
    return copy, ("setpriv", "--securebits", "+noroot", "--inh-caps=-all"), {"PATH": f"{bindir}:{os.environ['PATH']}"}


def test_capable_dumpcap_is_detected(capable_dumpcap):
    copy, _, _ = capable_dumpcap
    assert live_capture._exec_drops_parent_death_signal(str(copy))
    assert not live_capture._exec_drops_parent_death_signal(shutil.which("dumpcap"))


def test_capable_dumpcap_outlives_camwatch_without_the_watchdog(owner, capable_dumpcap):
    """Why the watchdog exists: with file capabilities the parent-death signal alone does nothing."""
    _, prefix, env = capable_dumpcap
    o = owner("off", prefix, env)
    assert o.kill_and_time_dumpcap(limit=3.0) >= 3.0


def test_capable_dumpcap_dies_when_camwatch_is_killed(owner, capable_dumpcap):
    _, prefix, env = capable_dumpcap
    o = owner("auto", prefix, env)
    assert o.watchdog, "no watchdog for a dumpcap with file capabilities"
    assert o.kill_and_time_dumpcap() < 2.0
    deadline = time.monotonic() + 5
    while _running(o.watchdog) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _running(o.watchdog)


def test_orderly_stop_stands_the_watchdog_down(owner, capable_dumpcap):
    _, prefix, env = capable_dumpcap
    o = owner("auto", prefix, env)
    out, err = o.proc.communicate("stop\n", timeout=30)
    watchdog_rc, dumpcap_rc = out.split()
    assert watchdog_rc == "0", err   # it left without signalling anyone
    assert dumpcap_rc == "0", err    # dumpcap stopped on camwatch's own SIGTERM, in order


def _small_ring(tmp_path: Path) -> Path:
    """A config with a 1 MiB capture ring: these tests need no more, and the kernel zeroes all of it at start."""
    config = tmp_path / "ring.toml"
    config.write_text("[capture]\nbuffer_mib = 1\n")
    return config


def test_interface_deleted_under_camwatch_is_one_clean_error(netns, tmp_path):
    ifname = f"cwh{os.getpid() % 100000}"
    subprocess.run(["ip", "-n", netns, "link", "add", ifname, "type", "veth", "peer", "name", ifname + "p"],
                   check=True, capture_output=True)
    subprocess.run(["ip", "-n", netns, "link", "set", ifname, "up"], check=True, capture_output=True)
    proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-m", "sensor", "run", "--interface",
                             ifname, "--metrics-out", str(tmp_path / "m.prom"), "--alerts", str(tmp_path / "a.jsonl"),
                             "--config", str(_small_ring(tmp_path))],
                            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    lines: list[str] = []
    capturing = threading.Event()

    def collect():
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("camwatch: capturing on"):
                capturing.set()

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    try:
        assert capturing.wait(LIVE_START_WAIT), "".join(lines)
        subprocess.run(["ip", "-n", netns, "link", "del", ifname], check=True, capture_output=True)
        assert proc.wait(30) == 1, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5)
    err = "".join(lines)
    assert "Traceback" not in err, err
    errors = [line for line in lines if line.startswith("camwatch: error")]
    assert len(errors) == 1, err
    assert errors[0].startswith(f"camwatch: error: capture on {ifname} ended unexpectedly: "), err
    reason = errors[0].split("ended unexpectedly: ", 1)[1]
    assert "Packets" not in reason and "dumpcap:" not in reason and ifname in reason, reason
    assert (tmp_path / "m.prom").exists()


@pytest.fixture
def slow_dumpcap(tmp_path):
    """The real dumpcap, started `delay` seconds late, first on PATH: as slow to start as a cold 1 GiB capture ring
    on a loaded machine made it (8 to 10 s here). It leaves a file `started` as it begins to wait, and a SIGTERM
    while it waits ends it, as it would end dumpcap."""
    if _live_unavailable():
        pytest.skip(_live_unavailable())
    real = shutil.which("dumpcap")
    bindir = tmp_path / "slow"
    bindir.mkdir()

    def make(delay: float) -> dict[str, str]:
        wrapper = bindir / "dumpcap"
        # The trap reaps the sleep it ends: an orphan's zombie may wait for init for good (_running).
        wrapper.write_text(f"#!/bin/sh\ntrap 'kill $!; wait; exit 143' TERM\ntouch {bindir}/started\n"
                           f"sleep {delay} & wait $!\nexec {real} \"$@\"\n")
        wrapper.chmod(0o755)
        return dict(os.environ, PYTHONUNBUFFERED="1", PATH=f"{bindir}:{os.environ['PATH']}")
    return make, bindir / "started"


def _run_in(netns: str, tmp_path: Path, *extra: str) -> list[str]:
    return ["ip", "netns", "exec", netns, sys.executable, "-m", "sensor", "run", "--interface", "lo",
            "--metrics-out", str(tmp_path / "m.prom"), "--alerts", str(tmp_path / "a.jsonl"),
            "--config", str(_small_ring(tmp_path)), *extra]


def test_a_slow_dumpcap_start_is_waited_out_and_told(netns, slow_dumpcap, tmp_path):
    """Past the first notice: camwatch says what it waits for, then captures as usual."""
    make, _ = slow_dumpcap
    env = make(LiveCapture.START_NOTICE + 2)
    done = subprocess.run(_run_in(netns, tmp_path, "--duration", "1"), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=LIVE_START_WAIT + 30)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    waits = [line for line in lines if line.startswith("camwatch: waiting for dumpcap")]
    assert waits == [f"camwatch: waiting for dumpcap to start capturing on lo ({LiveCapture.START_NOTICE:.0f} s so "
                     f"far; it opens the interface and has the kernel allocate its 1 MiB capture ring first; giving "
                     f"up at {LiveCapture.START_LIMIT:g} s)"], done.stderr
    assert lines.index(waits[0]) < next(i for i, line in enumerate(lines) if line.startswith("camwatch: capturing "))
    assert "camwatch: error" not in done.stderr, done.stderr


def test_a_stop_while_dumpcap_starts_is_an_orderly_stop(netns, slow_dumpcap, tmp_path):
    make, started = slow_dumpcap
    env = make(600)
    proc = subprocess.Popen(_run_in(netns, tmp_path), cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + LIVE_START_WAIT
        while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists(), proc.stderr.read() if proc.poll() is not None else "dumpcap never started"
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert time.monotonic() - began < LiveCapture.START_NOTICE, err   # not held until dumpcap would start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert err.splitlines()[-1] == "camwatch: stopped before dumpcap started capturing on lo", err
    # The delayed dumpcap (the wrapper and its sleep) went with it: nothing of the test's runs in the namespace.
    left = [pid for pid in subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout.split()
            if _running(int(pid))]
    assert not left, [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in left if Path(f"/proc/{pid}").exists()]
