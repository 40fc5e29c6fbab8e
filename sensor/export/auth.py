"""HTTP basic auth for the metrics endpoint: pbkdf2-sha256 password hashes, as `camwatch hash-password` makes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from sensor.config import PBKDF2_MAX_ITERATIONS, PBKDF2_MIN_ITERATIONS, parse_password_hash

PBKDF2_ITERATIONS = 200_000


def hash_password(password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    if not PBKDF2_MIN_ITERATIONS <= iterations <= PBKDF2_MAX_ITERATIONS:
        raise ValueError(f"iterations must be from {PBKDF2_MIN_ITERATIONS} to {PBKDF2_MAX_ITERATIONS}")
    salt = salt or os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    try:
        iterations, salt, expected = parse_password_hash(hashed)
    except ValueError:
        return False
    return hmac.compare_digest(hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations), expected)


class BasicAuth:
    """HTTP basic auth against pbkdf2 hashes. Verified credentials are remembered by their SHA-256, so a
    scrape every few seconds does not pay for pbkdf2 each time; the comparison stays constant-time.

    Every attempt not in that memory costs exactly one pbkdf2 run of the configured cost, whether the user
    exists or not: an unknown user is checked against a decoy, so timing does not tell which names exist."""

    def __init__(self, users: tuple[tuple[str, str], ...]):
        # parsed once, so that a known and an unknown user do the same work per request
        self.users = {user: parse_password_hash(hashed) for user, hashed in users}
        cost = max((iterations for iterations, _, _ in self.users.values()), default=PBKDF2_ITERATIONS)
        # a random digest, which no password derives to (a chance of 2**-256)
        self._decoy = (cost, os.urandom(16), os.urandom(32))
        self._verified: set[bytes] = set()

    def allows(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        token = hashlib.sha256(header.encode()).digest()
        if any(hmac.compare_digest(token, known) for known in self._verified):
            return True
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        iterations, salt, expected = self.users.get(user, self._decoy)
        got = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
        if hmac.compare_digest(got, expected) and user in self.users:
            if len(self._verified) < 64:
                self._verified.add(token)
            return True
        return False
