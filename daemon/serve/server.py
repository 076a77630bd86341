"""The socket loop: a STREAM socket, decode -> handle -> reply, signals, reclaim.

Requests are handled on this thread, in arrival order: for one idle client
that is the shortest path (no hand-off between threads). The socket is a ZMQ_STREAM
one and the daemon speaks ZMTP itself (daemon/serve/zmtp.py, peers.py): clients keep their
DEALER sockets, while nothing a peer sends is buffered past the request limit, routing ids are
libzmq's own, and a connection's end is seen at once. Replies to a vanished peer are dropped.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import signal
import threading
import time
from typing import TYPE_CHECKING, Callable, cast

import zmq

from trtd.protocol import MAX_REQUEST_BYTES, resolve_endpoint
from trtd.protocol.endpoint import ipc_path, runtime_dir

from trtd.daemon.system import platform
from trtd.daemon.serve.access import AccessPolicy, Gate
from trtd.daemon.config.settings import ConfigError, DaemonConfig
from trtd.daemon.core.daemon_core import Answer, DaemonCore
from trtd.daemon.core.stop_state import StopState
from trtd.daemon.serve.endpoint_lock import InstanceLock
from trtd.daemon.serve.notify import Notifier
from trtd.daemon.serve.peers import Peers
from trtd.daemon.serve.stopping import DrainReport, StopDeadline, exit_now

if TYPE_CHECKING:
    from trtd.daemon.serve.metrics_http import MetricsEndpoint

log = logging.getLogger("trtd.server")

# Longest the loop sleeps before looking at signals and the reclaim timer.
_TICK_S = 0.2
# How long a client answered during a stop has to read that reply before the socket closes
# (ended early once every such client has sent again, see _drain).
_STOP_GRACE_S = 1.0
# Requests read per loop turn before finished work and timers are looked at again.
_READS_PER_TURN = 256
# Descriptors kept free of regions and connections: model files, logs, libraries, sockets.
_FD_RESERVE = 256
# How often connections are looked at: overdue handshakes, closes to retry.
_PEER_CHECK_S = 0.5
# Connections allowed beyond max_clients: calls that need no hello (status, models, the CLI).
_EXTRA_CONNECTIONS = 64
# Upper bound on flushing the last replies at close (reached only for peers that read nothing).
_CLOSE_LINGER_MS = 500
# Gives the CPU to another runnable thread or process (Windows has no sched_yield; sleep(0) is its yield).
_yield_cpu = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))
# pyzmq's constants are enum members: `x & zmq.POLLIN` builds an IntFlag (~1 µs) where a plain
# int costs ~40 ns, and the read loop asks once per request and once more per turn.
_POLLIN = int(zmq.POLLIN)
_EVENTS = int(zmq.EVENTS)
_NOBLOCK = int(zmq.NOBLOCK)


class Server:
    def __init__(self, config: DaemonConfig, reload_source: Callable[[], DaemonConfig] | None = None,
                 notifier: Notifier | None = None, own_process: bool = False):
        """reload_source: re-reads the configuration for `reload` / SIGHUP. own_process: this
        daemon is the whole process (`trtd serve`, the Windows service), so a stop that overruns
        its bound may end it (daemon/serve/stopping.py); never inside another program (tests)."""
        self.config = config
        self._lock = InstanceLock(runtime_dir(), resolve_endpoint(config.endpoint))
        self.endpoint = self._lock.endpoint
        self._socket_inode: int | None = None
        self._access = AccessPolicy.from_names(config.group, config.admin_group)
        self.gate = Gate(self.endpoint, self._access)
        self.core: DaemonCore | None = None
        self._ctx: zmq.Context | None = None
        self._socket: zmq.Socket | None = None
        self.peers: Peers | None = None
        self.stop = StopState()  # the one owner of the stop's state; the core shares it
        self._reload = threading.Event()
        self._reload_source = reload_source
        self.notifier = notifier if notifier is not None else Notifier()
        self.stop_deadline = StopDeadline(self._what_holds_the_stop, self._remove_names,
                                          enforce=own_process)
        self.abandoned = False  # the drain timed out and requests were answered unfinished
        self.metrics: MetricsEndpoint | None = None  # `metrics = HOST:PORT`: /metrics, /healthz, /readyz
        self.loop_turned = time.monotonic()  # when the socket loop last came round (/healthz)

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        platform.raise_fd_limit()
        self._fit_regions_to_descriptors()
        self._lock.acquire()
        self._lock.remove_predecessor_regions()
        self._access.share_directory(self._lock.path.parent)
        self.core = DaemonCore(self.config, self.endpoint, daemon_id=secrets.token_hex(8),
                               region_prefix=self._lock.region_prefix, share_region=self._access.share_fd,
                               authorize=self.gate.check, stop=self.stop)
        self.core.reload_source = self._reload_source
        if self.config.metrics:  # before the socket serves: a port in use stops the start here
            from trtd.daemon.serve.metrics_http import serve_metrics  # prometheus_client: only then

            self.metrics = serve_metrics(self.config.metrics, self.core, lambda: self.loop_turned)
        # Before binding: a client that can connect can always find the tokens.
        self.gate.write_tokens()
        self._bind()
        # The socket serves from here on: tell the service manager now, and load the models
        # in the background (a big model must not run into systemd's start timeout).
        self.core.start_loading()
        log.info("trtd serving on %s (pid %d); loading %d model(s) in the background",
                 self.endpoint, os.getpid(), self.core.loading)
        self.notifier.ready(self._status_line())

    def _fit_regions_to_descriptors(self) -> None:
        """Each region holds two descriptors, each connection one; libzmq aborts the process when
        it cannot accept a connection for want of one (`Too many open files`, ipc_listener.cpp).
        So max_clients and max_regions are lowered to what the descriptor limit leaves after a
        reserve for models, logs and libraries (clients get at most a quarter of it)."""
        limit = platform.fd_limit()
        if limit is None:
            return
        room = max(limit - _FD_RESERVE, 0)
        clients = min(self.config.max_clients, room // 4)
        regions = min(self.config.max_regions, (room - clients) // 2)
        if (clients, regions) != (self.config.max_clients, self.config.max_regions):
            log.warning("max_clients %d -> %d and max_regions %d -> %d: this process may open %d "
                        "descriptors (ulimit -n / LimitNOFILE); each region takes two and each "
                        "connection one; raise the limit to serve more", self.config.max_clients,
                        clients, self.config.max_regions, regions, limit)
            self.config = dataclasses.replace(self.config, max_clients=clients, max_regions=regions)

    def _started(self) -> tuple[DaemonCore, zmq.Socket]:
        """The core and the socket, which start() creates: the loop runs only after it."""
        if self.core is None or self._socket is None:
            raise RuntimeError("Server.start() must run before the socket loop")
        return self.core, self._socket

    def _peers(self) -> Peers:
        if self.peers is None:
            raise RuntimeError("Server.start() must run before the socket loop")
        return self.peers

    def _status_line(self) -> str:
        core, _ = self._started()
        states = [model.state for model in core.models]
        text = f"serving on {self.endpoint}: {states.count('ready')} model(s) ready"
        if core.loading:
            text += f", {core.loading} loading"
        if states.count("failed"):
            text += f", {states.count('failed')} failed"
        return text

    def _bind(self) -> None:
        # A STREAM socket names each connection itself: a peer's ZMQ_ROUTING_ID is never used
        # (with a ROUTER, one that claimed libzmq's next automatic id aborted the process).
        self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.STREAM)
        sock.setsockopt(zmq.LINGER, 0)
        # Replies queued for one connection at most: a client has one per request in flight (a
        # few), so only a peer that reads nothing reaches it; then replies to it are dropped. It
        # bounds what such a peer costs (~200 KiB) times the connections allowed (below).
        sock.setsockopt(zmq.SNDHWM, 1000)
        # What libzmq may read ahead of the loop per connection, in chunks of up to 8 KiB: past
        # it, it stops reading that connection (the peer's sends block), so a flooding peer
        # costs the daemon at most ~1 MiB besides the one partial request its decoder holds.
        sock.setsockopt(zmq.RCVHWM, 128)
        # Connections beyond max_clients (fitted to the descriptor limit at start) and a few
        # for hello-less calls (`status`, the CLI) are closed as they come: libzmq aborts the
        # process when it cannot accept one for want of a descriptor.
        self.peers = Peers(sock, MAX_REQUEST_BYTES, on_closed=self._connection_closed,
                           max_connections=self.config.max_clients + _EXTRA_CONNECTIONS)
        path = ipc_path(self.endpoint)
        if path is not None:
            # We hold the endpoint's lock (beside the socket, in a directory checked
            # to be private): a socket file here is a dead daemon's.
            path.unlink(missing_ok=True)
            old_umask = os.umask(0o177)  # the socket is owner-only from its first moment
            try:
                sock.bind(self.endpoint)
            finally:
                os.umask(old_umask)
            self._socket_inode = path.stat().st_ino
            self._access.share_socket(path)
        else:
            sock.bind(self.endpoint)
        self._socket = sock

    def request_stop(self, *_args) -> None:
        """Stop after draining (signal handlers and the Windows service call this, from any
        thread: it must take effect even while the socket thread runs a request)."""
        self.stop.request()
        self.stop_deadline.arm(self.config.drain_timeout_s)

    def request_reload(self, *_args) -> None:
        self._reload.set()

    def install_signal_handlers(self) -> None:
        handled = platform.install_signal_handlers(self.request_stop, self.request_reload)
        self._note_stop_signals()
        log.debug("handling %s", ", ".join(handled))

    def _note_stop_signals(self) -> None:
        """Remember which signal stopped the daemon, for the log. The stop itself stays with
        the handlers platform installed (a watcher thread acts on POSIX signals at once): the
        wrapper only records the number, on the main thread, before the loop can reach the
        drain (the interpreter runs it as soon as that thread runs Python again)."""
        for name in ("SIGTERM", "SIGINT", "SIGBREAK"):
            sig = getattr(signal, name, None)
            if sig is None:
                continue
            previous = signal.getsignal(sig)

            def note(signum, frame, previous=previous):
                self.stop.signal = signum
                if callable(previous):
                    previous(signum, frame)

            signal.signal(sig, note)

    def close(self) -> None:
        if self.metrics is not None:  # no scrape reads the core while it is taken apart
            self.metrics.close()
        # The socket before the models: a request sent from here on is never read, and its
        # client learns so when the connection closes (the SDK watches it), not after models
        # have unloaded (a model being loaded is waited for) or at its own timeout.
        if self._socket is not None:
            # The last replies (the shutdown acknowledgement, requests a timed-out drain gave up
            # on) still go out: the linger bounds how long their flush may take (in ctx.term()).
            self._socket.close(linger=_CLOSE_LINGER_MS)
            self._unlink_socket_file()
        if self.core is not None:
            self.core.close(wait=not self.abandoned)
        if self._ctx is not None:
            self._ctx.term()
        self.gate.remove_tokens()
        self._lock.release()
        self.notifier.close()
        self.stop_deadline.disarm()
        log.info("trtd stopped")

    def _remove_names(self) -> None:
        """What a forced exit does instead of close(): remove every name that points at this
        daemon (from the deadline's thread, so nothing that the socket thread may be using)."""
        self._unlink_socket_file()
        self.gate.remove_tokens()
        if self.core is not None:
            self.core.regions.unlink_names()
            for model in self.core.models:  # no engine build may outlive the daemon
                if model.swapper is not None:
                    model.swapper.cancel(wait=False)

    def _unlink_socket_file(self) -> None:
        """Only our own socket file: never one a later daemon bound after us."""
        path = ipc_path(self.endpoint)
        try:
            if path is not None and path.stat().st_ino == self._socket_inode:
                path.unlink()
        except OSError:
            pass

    def _what_holds_the_stop(self) -> str:
        if self.core is None:
            return "still starting"
        running = [f"{job.model.name!r} (request {job.request_id})"
                   for executor in self.core.models.executors() for job in executor.running()]
        parts = [("running: " + ", ".join(running)) if running else "no request running"]
        if self.core.in_flight:
            parts.append(f"{len(self.core.in_flight)} request(s) or load(s) not answered yet")
        if self.core.loading:
            parts.append(f"{self.core.loading} model(s) loading")
        return "; ".join(parts)

    # -- the loop ------------------------------------------------------------------------------------

    def serve_forever(self) -> None:
        core, sock = self._started()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(core.completions.fileno(), zmq.POLLIN)
        reclaim_every = self.config.reclaim_interval_s
        next_reclaim = time.monotonic() + reclaim_every
        next_peer_check = time.monotonic() + _PEER_CHECK_S
        tick_ms = int(min(_TICK_S, reclaim_every) * 1000)
        loading = core.loading
        while not self.stop.asked:
            self._turn(poller, sock, tick_ms)
            now = self.loop_turned = time.monotonic()
            if now >= next_reclaim:
                try:
                    core.reclaim_dead_clients()
                except Exception:  # e.g. out of file descriptors: log, keep serving, retry later
                    log.exception("reclaiming dead clients failed")
                next_reclaim = now + reclaim_every
            if now >= next_peer_check:  # handshakes overdue, closes libzmq refused
                self._peers().expire_handshakes(now)
                next_peer_check = now + _PEER_CHECK_S
            if self._reload.is_set():
                self._reload.clear()
                self._reload_now()
            if core.loading != loading:
                loading = core.loading
                self.notifier.status(self._status_line())
            self.notifier.watchdog_due(now)
        self._drain(poller, sock, tick_ms)

    def _turn(self, poller: zmq.Poller, sock: zmq.Socket, tick_ms: int) -> None:
        """One poll: answer finished work, then the requests that are waiting (at most
        _READS_PER_TURN, so that a client flooding the socket cannot keep finished work,
        timers and a stop from being looked at)."""
        core, _ = self._started()
        if self._wait(core, poller, tick_ms):
            for answer in core.step():
                self._send(answer)
            for _ in range(_READS_PER_TURN):
                # Ask whether a message waits rather than let recv raise zmq.Again: an
                # exception per turn cost ~7% of the loop's time under one client.
                if not self.stop.reading or not cast(int, sock.getsockopt(_EVENTS)) & _POLLIN:
                    break
                # A STREAM socket's message is always [routing id, bytes]: two recv calls,
                # not recv_multipart's loop that asks RCVMORE through an enum each frame.
                identity = sock.recv(_NOBLOCK)
                self._serve_chunk(core, identity, sock.recv(_NOBLOCK, copy=False))

    @staticmethod
    def _wait(core: DaemonCore, poller: zmq.Poller, tick_ms: int) -> bool:
        """Whether something is ready: polled busily first for as long as the requests just
        answered ask (their models' idle_spin_us), then asleep for up to tick_ms."""
        spin_ns, core.spin_ns = core.spin_ns, 0
        # A batch waiting for company (dynamic_batching) is due within max_queue_delay_us: poll
        # until then (a sleep's wake-up would overshoot a sub-millisecond delay), yielding the
        # CPU between polls to the clients whose requests it waits for, then step.
        due_ns = core.batch_due_ns()
        if due_ns is not None:
            clock, end = time.perf_counter_ns, time.perf_counter_ns() + due_ns
            while clock() < end:
                if poller.poll(0):
                    return True
                _yield_cpu()
            return True
        if spin_ns:
            clock, end = time.perf_counter_ns, time.perf_counter_ns() + spin_ns
            while clock() < end:
                if poller.poll(0):
                    return True
        return bool(poller.poll(tick_ms))

    def _drain(self, poller: zmq.Poller, sock: zmq.Socket, tick_ms: int) -> None:
        """Answer the requests already running or queued (new work is refused) until none is
        left or drain_timeout_s has passed; then close() releases regions and models."""
        core, _ = self._started()
        stop = self.stop
        # Replies sent just before the stop may not have been read yet either (see below):
        # every connection that said hello is waited for, as is the `shutdown` requester.
        stop.begin_drain(core.clients.identities())  # reads go on: releases and goodbyes are served
        self.notifier.stopping(f"stopping: finishing {len(core.in_flight)} request(s)")
        self.stop_deadline.arm(self.config.drain_timeout_s)  # a `shutdown` op starts it here
        deadline = self.stop_deadline.drain_ends(self.config.drain_timeout_s)
        report = DrainReport.begin(stop.cause(), len(core.in_flight), self.config.drain_timeout_s)
        while core.in_flight and time.monotonic() < deadline:
            self._turn(poller, sock, min(tick_ms, 50))
            self.loop_turned = time.monotonic()
            self.notifier.watchdog_due()
        unfinished = len(core.in_flight)
        if unfinished:
            log.warning("stopping with %d request(s) unanswered after drain_timeout_s = %.1f: "
                        "answering them as not finished", unfinished, self.config.drain_timeout_s)
            self.abandoned = True
            for answer in core.give_up_in_flight():
                self._send(answer)
        # The replies of the stop (requests drained or given up on, the `shutdown` op's
        # acknowledgement) must be read before the socket closes: a DEALER with ZMQ_IMMEDIATE
        # (the SDK's) discards unread messages from a peer that disconnects (seen: `trtd
        # shutdown` waiting its whole timeout, one of three given-up replies lost, a drained
        # request's reply lost). Every reply sent while draining is noted (_send); a connection
        # that sends again (the SDK's goodbye, a looping client's next request) has read its
        # earlier replies. The rest get a short grace period, and what arrives in it is answered.
        grace_end = time.monotonic() + _STOP_GRACE_S
        while stop.unread_replies and time.monotonic() < grace_end:
            self._turn(poller, sock, 20)
        report.end(unfinished, stop.refused, sum(model.stats.ok for model in core.models))
        stop.close()

    def _reload_now(self) -> None:
        """SIGHUP: the same as the `reload` op, reported in the log."""
        if self._reload_source is None:
            log.warning("SIGHUP: this daemon has no configuration file to reload")
            return
        self.notifier.reloading()
        try:
            self._started()[0].reload(self._reload_source())
        except ConfigError as exc:
            log.error("SIGHUP: the configuration was not reloaded, nothing changed: %s", exc)
        except Exception:
            log.exception("SIGHUP: reload failed")
        self.notifier.ready(self._status_line())

    def _serve_chunk(self, core: DaemonCore, identity: bytes, chunk: zmq.Frame) -> None:
        """What the STREAM socket read from one connection (its routing id, the bytes)."""
        received = time.perf_counter_ns()
        peers = self._peers()
        for payload in peers.receive(identity, chunk):
            reply = core.receive(identity, payload, received, lambda: peers.credentials(identity))
            if reply is not None:  # None: a worker instance or the loader answers it (step)
                self._send(Answer(identity, 0, reply))

    def _connection_closed(self, identity: bytes) -> None:
        if self.core is not None:
            self.core.connection_closed(identity)

    def _send(self, answer: Answer) -> None:
        self.stop.sent_to(answer.identity)  # while draining: to be read before the socket closes
        self._peers().send(answer.identity, answer.frame)  # a reply it cannot queue is dropped


def run(config: DaemonConfig, reload_source: Callable[[], DaemonConfig] | None = None) -> int:
    server = Server(config, reload_source, own_process=True)
    try:
        server.start()
    except Exception:
        server.close()
        raise
    server.install_signal_handlers()
    try:
        server.serve_forever()
    finally:
        server.close()
    if server.abandoned:
        exit_now(0)  # a backend call still runs on another thread: no interpreter shutdown under it
    return 0
