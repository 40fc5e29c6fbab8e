"""The client side of a sensor's HTTP endpoint: how `inventory --url` and `report --url` read `/inventory` from a
sensor that may sit behind TLS, mutual TLS and basic auth (sensor/export/server.py, README "Metrics endpoint").

One set of credentials per command, whatever the number of URLs: an estate's sensors share a CA and a client
certificate, as its Prometheus does. The password never goes on the command line (other users see it in `ps`):
it comes from the environment, and a URL with credentials in it is refused for the same reason. Basic auth over
plain http is refused too: it would send the password in clear to whatever answers.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sensor.errors import CamwatchError

if TYPE_CHECKING:
    import ssl

PASSWORD_ENV = "CAMWATCH_URL_PASSWORD"
MAX_INVENTORY_BYTES = 64 << 20   # 10,000 devices with full series are ~30 MB; more is not a camwatch answer
TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class SensorAccess:
    ca: str | None = None     # verify the sensor's certificate against this CA (PEM); else the system's store
    cert: str | None = None   # client certificate (PEM) for a sensor with [metrics] client_ca
    key: str | None = None    # its private key, when not in the certificate file
    user: str | None = None   # basic-auth user; the password is in $CAMWATCH_URL_PASSWORD

    def tls_context(self) -> ssl.SSLContext:
        import ssl  # TLS only for an https:// sensor: every other command starts without it

        try:
            context = ssl.create_default_context(cafile=self.ca)
            if self.cert:
                context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise CamwatchError(f"cannot load the TLS files for --url: {exc}") from None
        return context

    def authorization(self) -> str | None:
        if self.user is None:
            return None
        password = os.environ.get(PASSWORD_ENV)
        if password is None:
            raise CamwatchError(f"--url-user {self.user}: set the password in ${PASSWORD_ENV}")
        return "Basic " + base64.b64encode(f"{self.user}:{password}".encode()).decode()


def fetch_inventory(url: str, access: SensorAccess = SensorAccess()) -> list[Any]:
    """A running sensor's /inventory: the JSON list, or a one-line CamwatchError naming what went wrong."""
    docs = _fetch_json(url, "/inventory", "inventory", access)
    if not isinstance(docs, list):
        raise CamwatchError(f"{url.rstrip('/')}/inventory: not a camwatch inventory (a JSON list)")
    return docs


def fetch_country_series(url: str, access: SensorAccess = SensorAccess()) -> dict[str, Any] | None:
    """A running sensor's /countries (bytes sent outside by country over time); None from a sensor older than the
    endpoint (HTTP 404), so a report of a mixed estate still has its totals."""
    doc = _fetch_json(url, "/countries", "country series", access, missing_ok=True)
    if doc is not None and not isinstance(doc, dict):
        raise CamwatchError(f"{url.rstrip('/')}/countries: not camwatch country series (a JSON object)")
    return doc


def _fetch_json(url: str, path: str, what: str, access: SensorAccess, missing_ok: bool = False) -> Any:
    import ssl
    import urllib.error
    import urllib.request

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CamwatchError(f"{url}: not an http:// or https:// URL of a running sensor")
    if parts.username is not None or parts.password is not None:
        raise CamwatchError(f"{parts.scheme}://{parts.hostname}...: credentials do not go in the URL (it shows in "
                            f"`ps` and shell history); use --url-user and ${PASSWORD_ENV}")
    authorization = access.authorization()
    if authorization and parts.scheme != "https":
        raise CamwatchError(f"{url}: basic auth needs https:// (the password would cross the network in clear)")
    target = url.rstrip("/") + path
    request = urllib.request.Request(target, headers={"Accept": "application/json"})
    if authorization:
        request.add_header("Authorization", authorization)
    context = access.tls_context() if parts.scheme == "https" else None
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS, context=context) as response:
            body = response.read(MAX_INVENTORY_BYTES + 1)
    except urllib.error.HTTPError as exc:
        if exc.code == 404 and missing_ok:
            return None
        hint = f" (give --url-user, password in ${PASSWORD_ENV})" if exc.code == 401 and not authorization else ""
        raise CamwatchError(f"cannot read the {what} from {target}: HTTP {exc.code} {exc.reason}{hint}") from None
    except (OSError, ValueError, ssl.SSLError) as exc:
        raise CamwatchError(f"cannot read the {what} from {target}: {exc}") from None
    if len(body) > MAX_INVENTORY_BYTES:
        raise CamwatchError(f"{target}: answer larger than {MAX_INVENTORY_BYTES >> 20} MiB; not a camwatch {what}")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise CamwatchError(f"{target}: not JSON; not a camwatch {what}") from None
