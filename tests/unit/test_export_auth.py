"""Basic authentication of the metrics endpoint (sensor/export/auth.py): the password check costs one pbkdf2 run
whether or not the user name exists, so its timing does not tell which names exist."""

from __future__ import annotations

import base64
import hashlib
import os
import statistics
import time

from sensor.export import BasicAuth, hash_password


# ---- authentication timing --------------------------------------------------------------------------------
def test_unknown_and_known_users_cost_one_pbkdf2_run_each():
    """A wrong password for a real user and any password for a made-up user must take the same time: one pbkdf2
    run at the configured cost. (Before: an unknown user cost two, which told which names exist.)"""
    iterations = 50_000   # cheap for the test, well above timer noise
    auth = BasicAuth((("alice", hash_password("right", iterations=iterations)),
                      ("bob", hash_password("other", iterations=iterations))))

    def header(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def timed(fn) -> float:
        # CPU time of this thread: the work done, which is what must not differ; wall time on a shared machine
        # mostly measures the neighbours
        start = time.thread_time()
        fn()
        return time.thread_time() - start

    salt = os.urandom(16)

    def medians() -> tuple[float, float, float]:
        one_run: list[float] = []
        known: list[float] = []
        unknown: list[float] = []
        for i in range(21):
            # Each lambda runs within this iteration (timed below), so the late binding of i is what is meant.
            trials = [(one_run, lambda: hashlib.pbkdf2_hmac("sha256", b"guess", salt, iterations)),
                      (known, lambda: auth.allows(header("alice", f"guess{i}"))),  # noqa: B023
                      (unknown, lambda: auth.allows(header(f"mallory{i}", f"guess{i}")))]  # noqa: B023
            for j in range(3):   # rotate the order, so a burst of load elsewhere hits each kind alike
                samples, fn = trials[(i + j) % 3]
                samples.append(timed(fn))
        return statistics.median(one_run), statistics.median(known), statistics.median(unknown)

    def alike(a: float, b: float) -> bool:
        return 0.7 < a / b < 1.3

    # Neighbours on a shared machine still leak into CPU time now and then, so a measurement may be retried;
    # the old defect (two pbkdf2 runs for an unknown user) is a ratio of 2 and passes none of them.
    attempts = []
    for _ in range(3):
        m_one, m_known, m_unknown = medians()
        attempts.append((m_one, m_known, m_unknown))
        if alike(m_unknown, m_known) and alike(m_known, m_one) and alike(m_unknown, m_one):
            break
    else:
        raise AssertionError(f"(one pbkdf2 run, known user, unknown user) medians: {attempts}")
    assert auth.allows(header("alice", "right")) and auth.allows(header("bob", "other"))
    assert not auth.allows(header("mallory", "right")) and not auth.allows(header("alice", "other"))


def test_decoy_costs_what_the_configured_hashes_cost():
    auth = BasicAuth((("alice", hash_password("x", iterations=123_456)),))
    assert auth._decoy[0] == 123_456
