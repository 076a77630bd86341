"""The metrics and health endpoint: /metrics (Prometheus text format), /healthz, /readyz.

Opt-in (`metrics = "HOST:PORT"`, `trtd serve --metrics HOST:PORT`), on a thread of its own:
the socket loop never waits for it, and it never calls into the socket loop (it reads, see
metrics.py). One request at a time with a 5 s socket timeout, so a client that connects and
sends nothing holds the endpoint for at most that long and can never make it start threads
without bound; scrapes and probes take milliseconds.

- /metrics: prometheus_client's own WSGI app over the daemon's registry (it also speaks
  OpenMetrics and gzip when the scraper asks).
- /healthz: 200 while the daemon is alive: its socket loop has come round within
  LIVENESS_S (it does every 0.2 s when idle); 503 naming how long it has been stuck.
- /readyz: 200 when every model is ready and the daemon is not stopping (readiness.py: the
  same rule as `trtd status` and `--wait-ready`), 503 naming the models that are not.
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.registry import CollectorRegistry

from trtd.daemon.serve.metrics_address import MetricsAddress, exposure_warning, parse_metrics_address
from trtd.daemon.serve.readiness import Readiness, readiness_of

if TYPE_CHECKING:
    from trtd.daemon.core.daemon_core import DaemonCore

log = logging.getLogger("trtd.metrics")

# The socket loop must have come round within this long for /healthz to say "alive": as long as
# systemd's watchdog (WatchdogSec=60s), so a probe and the watchdog judge a hang alike. A
# request that runs on the socket thread longer than this (one instance, a very slow model)
# reads as a hang too.
LIVENESS_S = 60.0
_SOCKET_TIMEOUT_S = 5.0
PATHS = ("/metrics", "/healthz", "/readyz")


class MetricsEndpointError(RuntimeError):
    """The endpoint cannot listen where it was told to, with what to do about it."""


class _Handler(WSGIRequestHandler):
    timeout = _SOCKET_TIMEOUT_S  # StreamRequestHandler puts it on the connection

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        log.debug("metrics endpoint: %s - %s", self.address_string(), format % args)


def _text(start_response, status: str, body: str):
    data = body.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(data)))])
    return [data]


class MetricsEndpoint:
    def __init__(self, address: MetricsAddress, registry: CollectorRegistry,
                 liveness: Callable[[], str | None], readiness: Callable[[], Readiness]):
        """liveness(): None while alive, else why not; readiness(): the daemon's Readiness."""
        self.address = address
        self._metrics_app = make_wsgi_app(registry)
        self._liveness = liveness
        self._readiness = readiness
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server is not None else self.address.port

    def start(self) -> None:
        """Bind and serve on a daemon thread; MetricsEndpointError when it cannot bind."""
        self._server = _bind(self.address, self._app)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="trtd-metrics", daemon=True)
        self._thread.start()
        log.info("metrics on %s (also /healthz, /readyz)", self.address.url())

    def close(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()  # waits for serve_forever to notice (poll_interval)
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def _app(self, environ, start_response):
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "")
        if path not in PATHS:
            return _text(start_response, "404 Not Found",
                         f"not found: {path}; this endpoint serves {', '.join(PATHS)}\n")
        if method != "GET":
            start_response("405 Method Not Allowed", [("Allow", "GET"), ("Content-Length", "0")])
            return [b""]
        if path == "/metrics":
            return self._metrics_app(environ, start_response)
        try:
            if path == "/healthz":
                problem = self._liveness()
                if problem is None:
                    return _text(start_response, "200 OK", "alive\n")
                return _text(start_response, "503 Service Unavailable", f"not alive: {problem}\n")
            verdict = self._readiness()
        except Exception as exc:  # a probe must get an answer; the daemon keeps serving
            log.exception("metrics endpoint: %s failed", path)
            return _text(start_response, "500 Internal Server Error", f"{type(exc).__name__}: {exc}\n")
        if verdict.ready:
            return _text(start_response, "200 OK", "ready\n")
        return _text(start_response, "503 Service Unavailable",
                     "not ready\n" + "".join(line + "\n" for line in verdict.reasons()))


def _bind(address: MetricsAddress, app) -> WSGIServer:
    where = f"metrics = \"{address}\""
    try:
        family = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM,
                                    flags=socket.AI_PASSIVE)[0][0]
    except socket.gaierror as exc:
        raise MetricsEndpointError(f"{where}: cannot resolve host {address.host!r} ({exc.strerror}); "
                                   f"use an IP address such as 127.0.0.1") from None

    class Server(WSGIServer):
        address_family = family
        # SO_REUSEADDR: a restart may bind while the old connections are in TIME_WAIT. Not on
        # Windows, where it would let a second process bind the same port (and steal scrapes).
        allow_reuse_address = sys.platform != "win32"

    try:
        return make_server(address.host, address.port, app, server_class=Server, handler_class=_Handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            why = (f"port {address.port} is in use (another trtd, or another exporter); pick a free "
                   f"port, or stop what listens there (ss -ltnp 'sport = :{address.port}')")
        elif exc.errno == errno.EADDRNOTAVAIL:
            why = f"{address.host} is not an address of this machine"
        elif exc.errno == errno.EACCES:
            why = f"not allowed to listen on port {address.port} (ports below 1024 need privileges)"
        else:
            why = exc.strerror or str(exc)
        raise MetricsEndpointError(f"{where}: cannot listen: {why}") from None


def serve_metrics(text: str, core: DaemonCore, last_turn: Callable[[], float]) -> MetricsEndpoint:
    """Start the endpoint for `metrics = text` over `core`; last_turn(): when the socket loop
    last came round (time.monotonic()). MetricsEndpointError when it cannot listen."""
    from trtd.daemon.serve.metrics import make_registry

    warning = exposure_warning(text)
    if warning:
        log.warning("%s", warning)

    def liveness() -> str | None:
        stuck = time.monotonic() - last_turn()
        if stuck <= LIVENESS_S:
            return None
        return (f"the socket loop has not come round for {stuck:.0f} s (limit {LIVENESS_S:g} s): "
                f"a request running on it that long, or a hang")

    def readiness() -> Readiness:
        return readiness_of(list(core.models), core.stop.draining)

    endpoint = MetricsEndpoint(parse_metrics_address(text), make_registry(core), liveness, readiness)
    endpoint.start()
    return endpoint
