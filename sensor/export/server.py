"""The HTTP endpoint: /metrics, /inventory, /countries, /healthz, /readyz. prometheus_client serves; camwatch adds
only its routes, basic auth in the WSGI app and TLS on the listening socket."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import make_server

from prometheus_client import CollectorRegistry

# prometheus_client's start_wsgi_server cannot be used as it stands: it serves the registry alone (no other routes,
# no auth) and its TLS handshake runs in accept(), where one silent client stalls every scrape. Its server and
# handler classes are reused as it pairs them there: a daemon thread per request, no access log. _SilentHandler is
# private, yet it is the handler start_wsgi_server gives ThreadingWSGIServer; a copy of it here would drift.
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

from sensor.errors import CamwatchError
from sensor.export.auth import BasicAuth
from sensor.export.exposition import metrics_app
from sensor.export.listen import DEFAULT_METRICS_ADDRESS, parse_listen  # noqa: F401  (still importable from here)

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from sensor.config import MetricsSettings

_GUARDED = ("/metrics", "/inventory", "/countries")   # /healthz and /readyz stay open to health checks (TLS aside)


class MetricsServer:
    def __init__(self, registry: CollectorRegistry, listen: tuple[str, int], ready: Callable[[], bool] = lambda: True,
                 inventory: Callable[[], list] = list, settings: MetricsSettings | None = None,
                 countries: Callable[[], dict] = dict):
        auth = BasicAuth(settings.basic_auth) if settings is not None and settings.basic_auth else None
        app = _routes(metrics_app(registry), ready, {"/inventory": inventory, "/countries": countries}, auth)
        host, port = listen
        server_class: type[ThreadingWSGIServer] = type(
            "Server", (ThreadingWSGIServer,), {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET})
        try:
            self.httpd = make_server(host, port, app, server_class, handler_class=_SilentHandler)
        except OSError as exc:
            raise CamwatchError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from None
        self.tls = False
        if settings is not None and settings.tls_cert:
            ctx = _tls_context(settings.tls_cert, settings.tls_key, settings.client_ca)
            # the handshake happens in the request thread, so a slow or silent client cannot stall accept()
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True, do_handshake_on_connect=False)
            self.tls = True
        self.address = self.httpd.server_address[:2]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics-http", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _routes(metrics_app: WSGIApplication, ready: Callable[[], bool], documents: dict[str, Callable[[], Any]],
            auth: BasicAuth | None) -> WSGIApplication:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path in _GUARDED and auth and not auth.allows(environ.get("HTTP_AUTHORIZATION")):
            start_response("401 Unauthorized", [("Content-Type", "text/plain; charset=utf-8"),
                                                ("WWW-Authenticate", 'Basic realm="camwatch"')])
            return [b"unauthorized\n"]
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path == "/healthz":
            return _text(start_response, "200 OK", "ok\n")
        if path == "/readyz":
            if ready():
                return _text(start_response, "200 OK", "ready\n")
            return _text(start_response, "503 Service Unavailable", "not ready\n")
        if path in documents:
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps(documents[path]()).encode()]
        if path == "/":
            return _text(start_response, "200 OK",
                         "camwatch: see /metrics, /inventory, /countries, /healthz, /readyz\n")
        return _text(start_response, "404 Not Found", "not found\n")

    return app


def _tls_context(cert: str, key: str | None, client_ca: str | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
        if client_ca:
            ctx.load_verify_locations(client_ca)
            # Required in the handshake, not optional with per-route checks: a client without a certificate never
            # reaches the HTTP layer, so no route (/healthz included) depends on the application remembering to
            # check. docs/deploy.md tells health checks to present a certificate.
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise CamwatchError(f"metrics TLS: cannot load certificate, key or CA: {exc}") from None
    return ctx


def _text(start_response: StartResponse, status: str, body: str) -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
    return [body.encode()]
