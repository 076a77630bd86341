"""The client library: Client and per-model handles over leased shared memory.

    from trtd.sdk import Client
    with Client() as c:
        y = c.infer("demo", x)            # numpy in, numpy out
        m = c.model("demo")               # the client's cached handle: it keeps its region
        y = m(x)
        slots = m.zero_copy_inputs()      # writable views of the input slots (shapes checked here)
        slots["x"][:] = x
        out = m.run_zero_copy()           # read-only views, valid until the next request on m

Tensor bytes never travel through the socket: inputs are written into a
region the daemon leased to this client, outputs are read from the same region.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import psutil

from trtd.protocol import (ENDPOINT_ENV, WIRE_DTYPES, InputRef, ModelInfo, OutputRef,
                           align_up, from_numpy, messages as m, plan_slots, resolve_endpoint)

from trtd.protocol.endpoint import (ADMIN_TOKEN, CONNECTION_TOKEN, EndpointError, find_token,
                                    validate_endpoint)

from .checks import expected, zero_copy_shapes
from .connection import Connection
from .errors import (AccessDenied, DaemonRestarted, DaemonStopping, DeadlineExceeded, InvalidEndpoint, InvalidInput,
                     ModelNotReady, OutputTooLarge, RegionError, TrtdError)
from .shm import AttachedRegion
from .transport import Transport
from .zmq_transport import ZmqTransport

DEFAULT_TIMEOUT_S = 30.0
# Output areas of unbounded size (data-dependent shapes) start at this; a reply
# naming the needed size makes the handle grow and retry once.
_UNBOUNDED_OUTPUT_BYTES = 1 << 20
_MAX_PLANS = 16
# How often an infer looks again at a model that is still loading (a daemon that just restarted).
_LOADING_POLL_S = 0.05
_DTYPES = {name: np.dtype(name) for name in WIRE_DTYPES}


class Client:
    def __init__(self, endpoint: str | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                 connect_timeout: float = 5.0, name: str = "", spin_us: int = 0,
                 admin_token: str | None = None, transport: Transport | None = None):
        """spin_us: busy-wait up to this long for each reply before sleeping (costs a CPU core
        while waiting; saves the wake-up of a sleeping thread, see trtd.bench.wakeup).
        admin_token: for load/unload/shutdown; by default read from the daemon's admin token
        file when this user may read it.
        transport: what carries the frames (sdk/transport.py), e.g. an InProcessTransport to a
        daemon core in this process; by default a ZmqTransport to `endpoint` (or TRTD_ENDPOINT,
        or the one found running). With a transport, endpoint and spin_us are its business.
        The Client owns it: closing the client closes the transport."""
        if transport is not None and (endpoint is not None or spin_us):
            raise ValueError("pass endpoint and spin_us to the transport, not with it")
        self.endpoint = (transport.endpoint if transport is not None else
                         _valid_endpoint(resolve_endpoint(endpoint, discover=True),
                                         "" if endpoint else os.environ.get(ENDPOINT_ENV, "")))
        self.timeout = timeout
        self._name = name
        self._admin_token = admin_token
        self._admin_problem = ""
        # ipc sockets are guarded by their file mode; a TCP daemon wants its connection token,
        # which each daemon start renews: re-read on refusal (see _refresh_connection_token).
        self._connection_token_file = (find_token(self.endpoint, CONNECTION_TOKEN)
                                       if self.endpoint.startswith("tcp://") else None)
        connection = ("" if self._connection_token_file is None
                      else read_token(self._connection_token_file)[0])
        self._conn = Connection(transport if transport is not None else ZmqTransport(self.endpoint, spin_us),
                                connect_timeout, auth=connection)
        self._handles: dict[str, ModelHandle] = {}
        self._handles_lock = threading.Lock()
        self._heartbeat_stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self.generation = 0  # bumped when the daemon restarts and this client re-registers
        self._rehello_lock = threading.Lock()
        try:
            self._hello()
        except BaseException:
            self._conn.close()
            raise
        # A Client dropped without close() still says goodbye, so its leases go at once
        # instead of living as long as the process.
        self._session = [self.client_id]
        self._finalizer = weakref.finalize(self, Client._finalize, self._conn, self._heartbeat_stop,
                                           self._session)

    # -- session -------------------------------------------------------------------------------------

    def _hello(self) -> None:
        me = psutil.Process()
        reply = self._conn.call(m.Hello(client_pid=os.getpid(), client_start_time=me.create_time(),
                                        client_name=self._name), self.timeout)
        self.client_id = reply.client_id
        if hasattr(self, "_session"):
            self._session[0] = reply.client_id
        self.daemon_id = reply.daemon_id
        self.server_version = reply.server_version
        if reply.heartbeat_interval_s > 0 and self._heartbeat is None:
            self._heartbeat = threading.Thread(target=self._beat, args=(reply.heartbeat_interval_s,),
                                               name="trtd-heartbeat", daemon=True)
            self._heartbeat.start()

    def _admin_auth(self) -> str:
        self._admin_problem = ""
        if self._admin_token is not None:
            return self._admin_token
        token, self._admin_problem = read_token(find_token(self.endpoint, ADMIN_TOKEN))
        return token

    def _beat(self, interval: float) -> None:
        # Only clients whose pid the daemon cannot watch (another PID namespace) need this.
        while not self._heartbeat_stop.wait(interval):
            try:
                self._call(m.Heartbeat(client_id=self.client_id))
            except TrtdError:
                pass

    def _refresh_connection_token(self, exc: AccessDenied, sent: str) -> bool:
        """After a TCP daemon refused the connection token `sent`: True when its token file now
        holds another one (a restarted daemon wrote a fresh one), which the connection then sends.

        The gate answers UNAUTHORIZED before the daemon could say UNKNOWN_CLIENT, so without
        this a TCP client would never learn of the restart nor register again."""
        if self._connection_token_file is None or exc.details.get("needs") != "connection":
            return False
        token, problem = read_token(self._connection_token_file)
        if not token or token == sent:
            if problem:
                exc.args = (f"{exc} ({problem})",)
            return False
        self._conn.auth = token
        return True

    def _call(self, request: m.Request, timeout: float | None = None,
              _generation: int | None = None):
        if isinstance(request, m.Infer) and _generation is None:
            return self._call_when_loaded(request, self.timeout if timeout is None else timeout)
        return self._call_once(request, timeout, _generation)

    def _call_when_loaded(self, request: m.Infer, timeout: float):
        """An infer that finds its model still loading (a daemon that has just restarted loads
        in the background) waits for it, within the call's timeout, as describing it does."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._call_once(request, max(deadline - time.monotonic(), 0.001))
            except ModelNotReady as exc:
                if exc.details.get("state") != "loading" or time.monotonic() >= deadline:
                    raise
                time.sleep(min(_LOADING_POLL_S, max(deadline - time.monotonic(), 0.0)))

    def _call_once(self, request: m.Request, timeout: float | None = None,
                   _generation: int | None = None):
        retry = _generation is None
        generation = self.generation if retry else _generation
        sent = self._conn.auth
        try:
            return self._conn.call(request, self.timeout if timeout is None else timeout,
                                   self._admin_auth() if request.PRIVILEGED else None)
        except AccessDenied as exc:
            if not retry or not self._refresh_connection_token(exc, sent):
                if request.PRIVILEGED and self._admin_problem:
                    raise AccessDenied(f"{exc} ({self._admin_problem})", code=exc.code,
                                       details=exc.details) from None
                raise
        except DaemonRestarted as exc:  # the daemon's UNKNOWN_CLIENT: register again, then say so
            if isinstance(request, m.Hello):
                raise
            old = self.daemon_id
            with self._rehello_lock:
                # Several threads may see the same restart: one of them registers again.
                if self.generation == generation:
                    self._hello()
                    self.generation += 1
            raise DaemonRestarted(
                f"the daemon at {self.endpoint} restarted or reclaimed this client "
                f"(daemon {old} -> {self.daemon_id}); leased regions were lost and zero-copy "
                f"views are invalid; the client has registered again",
                code=exc.code, details=exc.details,
            ) from None
        # Refused for a stale connection token, now renewed: once more, so that a restarted
        # daemon's UNKNOWN_CLIENT reaches the restart handling above.
        # Another thread may have seen the same refusal and registered again already: the
        # generation of the first attempt tells.
        return self._call_once(request, timeout, _generation=generation)

    # -- models --------------------------------------------------------------------------------------

    def models(self, wait: bool = True) -> list[ModelInfo]:
        """Every model the daemon serves. A daemon answers before its models have loaded (they
        load in the background): with wait, models still "loading" are waited for, up to the
        client's timeout, as the first reply of a starting daemon used to wait."""
        return self._wait_loaded(lambda: self._call(m.ListModels()).models, wait)

    def describe(self, model: str, wait: bool = True) -> ModelInfo:
        return self._wait_loaded(lambda: self._call(m.ListModels(name=model)).models, wait)[0]

    def _wait_loaded(self, fetch, wait: bool) -> list[ModelInfo]:
        deadline = time.monotonic() + self.timeout
        infos = fetch()
        while wait and any(i.state == "loading" for i in infos) and time.monotonic() < deadline:
            time.sleep(0.05)
            infos = fetch()
        return infos

    def _describe_when_loaded(self, name: str) -> ModelInfo:
        info = self.describe(name)
        if info.state == "loading":
            raise ModelNotReady(f"model {name!r} is still loading after {self.timeout:.0f} s; "
                                f"`trtd status` shows it")
        return info

    def reload(self) -> m.ReloadReply:
        """Ask the daemon to re-read its configuration file (models load in the background)."""
        return self._call(m.Reload())

    def model(self, name: str) -> "ModelHandle":
        """The handle for model `name`, cached: every call with the same name returns the same
        handle (and c.infer(name, ...) uses it), so its region is leased once per client.
        Closing it (handle.close() or a `with` block) releases the region now; the handle
        stays the cached one and leases a region again on its next request."""
        with self._handles_lock:
            handle = self._handles.get(name)
            if handle is None:
                info = self._describe_when_loaded(name)
                if info.state != "ready":
                    raise ModelNotReady(f"model {name!r} is {info.state}: {info.error or 'not ready yet'}")
                handle = self._handles[name] = ModelHandle(self, info)
            return handle

    def infer(self, model: str, inputs, timeout: float | None = None, out=None,
              deadline_ms: int = 0):
        """Run `model` on a numpy array (single-input models) or a {name: array} dict.

        Returns an array for single-output models, else a {name: array} dict.
        `out` (an array, or a {name: array} dict) receives the outputs instead of
        new arrays: for large outputs this saves allocating (and page-faulting)
        fresh memory on every call. `deadline_ms` > 0: if the daemon cannot start the
        request within that many milliseconds it does not run it (DeadlineExceeded).
        """
        return self.model(model).infer(inputs, timeout=timeout, out=out, deadline_ms=deadline_ms)

    def status(self) -> m.StatusReply:
        return self._call(m.Status())

    def load(self, name: str, path: str, backend: str = "onnxruntime", max_batch: int = 0,
             device: int = -1, instances: int = 1, inputs: list[str] | None = None) -> ModelInfo:
        """Load a model into the daemon (path as the daemon sees it, or builtin:NAME)."""
        return self._call(m.Load(name=name, path=path, backend=backend, max_batch=max_batch,
                                 device=device, instances=instances, inputs=list(inputs or []))).model

    def unload(self, name: str) -> None:
        with self._handles_lock:
            handle = self._handles.pop(name, None)
        if handle is not None:
            handle.close()
        self._call(m.Unload(name=name))

    def shutdown(self) -> None:
        """Stop the daemon (privileged). This client is closed afterwards."""
        self._call(m.Shutdown())
        # The finalizer says goodbye at once, without waiting (and lingers for it to go out):
        # the daemon keeps its socket open until it arrives, so that the acknowledgement above
        # was read before the connection goes away.
        self._finalizer()

    # -- regions -------------------------------------------------------------------------------------

    def lease(self, nbytes: int) -> AttachedRegion:
        info = self._call(m.Lease(client_id=self.client_id, nbytes=nbytes)).region
        return AttachedRegion(info.name, info.nbytes, info.token)

    def release(self, region: AttachedRegion, wait: bool = True) -> None:
        region.close()
        request = m.Release(client_id=self.client_id, region=region.name, token=region.token)
        if not wait:  # e.g. after a timeout: the daemon may be stuck; its late reply is dropped
            self._conn.send_nowait(request)
            return
        try:
            self._call(request)
        except (RegionError, DaemonRestarted):
            pass  # already gone with a restart or a reclaim: nothing left to free

    # -- lifetime ------------------------------------------------------------------------------------

    def close(self) -> None:
        if not self._finalizer.alive:
            return
        with self._handles_lock:
            handles, self._handles = list(self._handles.values()), {}
        for handle in handles:
            handle.close(release=False)
        try:  # one message frees every lease; the daemon would reclaim them anyway
            self._conn.call(m.Goodbye(client_id=self.client_id), min(self.timeout, 2.0))
        except TrtdError:
            pass
        self._session[0] = None
        self._finalizer()

    @staticmethod
    def _finalize(conn: Connection, stop: threading.Event, session: list) -> None:
        stop.set()
        if session[0] is not None:  # dropped without close(): goodbye, without waiting
            conn.send_nowait(m.Goodbye(client_id=session[0]))
        conn.close(linger_ms=200 if session[0] is not None else 0)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _valid_endpoint(endpoint: str, from_env: str) -> str:
    """The endpoint, or InvalidEndpoint now: a bad one would otherwise show up only as a
    daemon that never answers. from_env: TRTD_ENDPOINT's value when that is where it came from."""
    try:
        return validate_endpoint(endpoint)
    except EndpointError as exc:
        where = f" (from {ENDPOINT_ENV})" if from_env else ""
        raise InvalidEndpoint(f"{exc}{where}") from None


def read_token(path) -> tuple[str, str]:
    """(token, "") from a daemon's token file, or ("", why not) when this user cannot read it."""
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip(), ""
    except FileNotFoundError:
        return "", f"no token file {path}: is the daemon running at this endpoint?"
    except PermissionError:
        return "", f"this user may not read {path}"
    except (OSError, UnicodeDecodeError) as exc:
        return "", f"could not read {path}: {exc}"


@dataclass(slots=True)
class _Plan:
    """Where each tensor of one request shape lives in the region, and the message for it."""

    key: tuple
    inputs: list[tuple[str, np.dtype, tuple[int, ...], int]]  # name, dtype, shape, offset
    request: m.Infer
    nbytes: int


class ModelHandle:
    """A model plus a region of its own; calls on one handle are serialized.

    Client.model(name) caches one handle per name. `with c.model(name) as m:` (or m.close())
    releases the region when done; the handle remains usable and leases again when used."""

    def __init__(self, client: Client, info: ModelInfo):
        self._client = client
        self.info = info
        self.name = info.name
        self._lock = threading.Lock()
        self._region: AttachedRegion | None = None
        self._generation = client.generation
        self._plan: _Plan | None = None
        # Recent plans by input shapes, so alternating batch sizes re-plan nothing.
        self._plans: dict[tuple, _Plan] = {}
        self._output_capacity: dict[str, int] = {}
        self._zero_copy_plan: _Plan | None = None
        # Why the last zero-copy views stopped being valid, for run_zero_copy()'s message.
        self._views_lost = "call zero_copy_inputs() first"
        # The daemon's timing of the last request on this handle (queue, H2D, compute, D2H, total),
        # and which backend (and engine fingerprint) answered it.
        self.last_timing: m.Timing | None = None
        self.last_backend: tuple[str, str] = ("", "")

    # -- copying path --------------------------------------------------------------------------------

    def __call__(self, *args, **kwargs):
        if args and kwargs:
            raise InvalidInput("pass inputs positionally or by name, not both")
        return self.infer(args[0] if len(args) == 1 else (kwargs or list(args)))

    def infer(self, inputs, timeout: float | None = None, out=None, deadline_ms: int = 0):
        arrays = self._named(inputs)
        targets = self._out_targets(out)
        with self._lock:
            for attempt in range(3):
                try:
                    plan = self._prepare(arrays)  # may lease: a restart shows up here too
                    plan.request.deadline_ms = deadline_ms
                    for name, _, _, offset in plan.inputs:
                        a = arrays[name]
                        self._region.array(offset, a.dtype, a.shape)[...] = a
                    reply = self._client._call(plan.request, timeout)
                except DaemonRestarted:
                    self._forget_region()  # our inputs are still in hand: lease anew and resend
                    continue
                except OutputTooLarge as exc:
                    if attempt < 2 and self._grow(exc):
                        continue
                    raise
                except DeadlineExceeded:
                    raise  # it did not run: the region is still ours alone
                except (TimeoutError, DaemonStopping) as exc:
                    self._retire_if_still_written(exc)
                    raise
                self.last_timing, self.last_backend = reply.timing, (reply.backend, reply.engine)
                outs = {}
                for o in reply.outputs:
                    view = self._region.array(o.offset, _DTYPES[o.dtype], tuple(o.shape))
                    outs[o.name] = self._copy_out(o.name, view, targets.get(o.name))
                return self._shape_result(outs)
        raise TrtdError("the daemon kept restarting while this request was retried")

    def _out_targets(self, out) -> dict[str, np.ndarray]:
        if out is None:
            return {}
        if isinstance(out, np.ndarray):
            if len(self.info.outputs) != 1:
                raise InvalidInput(f"model {self.name!r} has {len(self.info.outputs)} outputs; pass "
                                   f"out as a dict {{name: array}}")
            return {self.info.outputs[0].name: out}
        unknown = set(out) - {o.name for o in self.info.outputs}
        if unknown:
            raise InvalidInput(f"out names unknown output(s) {sorted(unknown)} of model {self.name!r}")
        return dict(out)

    @staticmethod
    def _copy_out(name: str, view: np.ndarray, target: np.ndarray | None) -> np.ndarray:
        if target is None:
            return view.copy()
        if target.shape != view.shape or target.dtype != view.dtype:
            raise InvalidInput(f"out[{name!r}] is {target.dtype}{list(target.shape)}, the result is "
                               f"{view.dtype}{list(view.shape)}")
        np.copyto(target, view)
        return target

    # -- zero-copy path ------------------------------------------------------------------------------

    def zero_copy_inputs(self, shapes: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
        """Writable views of the input slots in the region, for shapes (default: the model's
        static shapes, batch 1). Fill them, then call run_zero_copy() as often as you like.

        Shapes are checked against the model here (names, fixed and dynamic dimensions, its
        max batch): a wrong one raises InvalidInput and leaves earlier views valid."""
        checked = zero_copy_shapes(self.info, shapes)
        fake = {spec.name: np.lib.stride_tricks.as_strided(np.zeros(1, spec.dtype), checked[spec.name],
                                                           [0] * len(checked[spec.name]))
                for spec in self.info.inputs}
        with self._lock:
            plan = self._zero_copy_plan = self._prepare(fake)
            return {name: self._region.array(offset, dtype, shape)
                    for name, dtype, shape, offset in plan.inputs}

    def run_zero_copy(self, timeout: float | None = None, deadline_ms: int = 0) -> dict[str, np.ndarray]:
        """Run on what is in the input slots; returns read-only views of the outputs.

        A request the daemon refuses (overloaded, stopping, model not ready, deadline) leaves
        the views valid: run again once the cause is gone."""
        with self._lock:
            plan = self._zero_copy_plan
            if self._generation != self._client.generation:
                self._invalidate_views("the daemon restarted since zero_copy_inputs(): its region "
                                       "is gone; call zero_copy_inputs() again")
            elif plan is not None and plan is not self._plan:
                self._invalidate_views("a request with other shapes ran on this handle since "
                                       "zero_copy_inputs(); call it again for views of this layout")
            plan = self._zero_copy_plan
            if plan is None:
                raise InvalidInput(self._views_lost)
            plan.request.deadline_ms = deadline_ms
            try:
                reply = self._client._call(plan.request, timeout)
            except DeadlineExceeded:
                raise  # it did not run: the region is still ours alone
            except (TimeoutError, DaemonStopping) as exc:
                self._retire_if_still_written(exc)
                raise
            self.last_timing, self.last_backend = reply.timing, (reply.backend, reply.engine)
            outs = {}
            for o in reply.outputs:
                view = self._region.array(o.offset, _DTYPES[o.dtype], tuple(o.shape))
                view.flags.writeable = False
                outs[o.name] = view
            return outs

    def _invalidate_views(self, why: str) -> None:
        self._zero_copy_plan = None
        self._views_lost = f"the zero-copy views are no longer valid: {why}"

    # -- planning ------------------------------------------------------------------------------------

    def _named(self, inputs) -> dict[str, np.ndarray]:
        specs = self.info.inputs
        if isinstance(inputs, Mapping):
            arrays = dict(inputs)
        elif isinstance(inputs, (list, tuple)) and not isinstance(inputs, np.ndarray) and len(specs) > 1:
            if len(inputs) != len(specs):
                raise InvalidInput(f"model {self.name!r} takes {len(specs)} inputs "
                                   f"({', '.join(s.name for s in specs)}), got {len(inputs)}")
            arrays = {s.name: a for s, a in zip(specs, inputs)}
        else:
            if len(specs) != 1:
                raise InvalidInput(f"model {self.name!r} takes {len(specs)} inputs; pass a dict "
                                   f"{{{', '.join(repr(s.name) for s in specs)}: array, ...}}")
            arrays = {specs[0].name: inputs}
        for name, a in arrays.items():
            if not isinstance(a, np.ndarray):
                arrays[name] = a = np.asarray(a)
            if a.dtype.name not in WIRE_DTYPES:
                raise InvalidInput(f"input {name!r} has dtype {a.dtype}, which the protocol does not "
                                   f"carry ({', '.join(WIRE_DTYPES)})")
        return arrays

    def _prepare(self, arrays: dict[str, np.ndarray]) -> _Plan:
        """The plan for these input shapes, with a region big enough for it."""
        if self._generation != self._client.generation:
            self._forget_region()
        key = tuple((n, a.dtype.name, a.shape) for n, a in arrays.items())
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= _MAX_PLANS:
                self._plans.pop(next(iter(self._plans)))
            plan = self._plans[key] = self._make_plan(arrays, key)
        if self._region is None or self._region.nbytes < plan.nbytes:
            old = self._region.nbytes if self._region is not None else 0
            self._retire_region(why="the handle needed a larger region for other shapes")
            self._region = self._client.lease(max(plan.nbytes, 2 * old))
            self._generation = self._client.generation
        # Only after the re-lease above, which forgets the current plan: set before it, a
        # zero-copy plan whose region had to grow was refused as stale at its first run.
        self._plan = plan
        plan.request.client_id = self._client.client_id
        plan.request.region = self._region.name
        plan.request.token = self._region.token
        return plan

    def _make_plan(self, arrays: dict[str, np.ndarray], key: tuple) -> _Plan:
        batch = next(iter(arrays.values())).shape[0] if arrays and next(iter(arrays.values())).ndim else 1
        sizes = [(n, a.nbytes) for n, a in arrays.items()]
        for spec in self.info.outputs:
            sizes.append((spec.name, self._output_bytes(spec, batch)))
        slots, total = plan_slots(sizes)
        n_in = len(arrays)
        inputs = [(s.name, arrays[s.name].dtype, arrays[s.name].shape, s.offset) for s in slots[:n_in]]
        request = m.Infer(
            client_id=0, model=self.name, region="", token="",
            inputs=[InputRef(name=n, dtype=from_numpy(d), shape=list(sh), offset=o,
                             nbytes=arrays[n].nbytes) for n, d, sh, o in inputs],
            outputs=[OutputRef(name=s.name, offset=s.offset, nbytes=s.nbytes) for s in slots[n_in:]],
        )
        return _Plan(key=key, inputs=inputs, request=request, nbytes=total)

    def _output_bytes(self, spec, batch: int) -> int:
        if spec.name in self._output_capacity:
            return self._output_capacity[spec.name]
        if spec.max_nbytes < 0:
            return _UNBOUNDED_OUTPUT_BYTES
        if self.info.max_batch and spec.shape and spec.shape[0] < 0:
            # Size for this batch, not the largest: max_nbytes covers max_batch samples.
            return align_up(spec.max_nbytes // self.info.max_batch * max(batch, 1), 1)
        return spec.max_nbytes

    def _grow(self, exc: OutputTooLarge) -> bool:
        needed, name = exc.details.get("needed"), exc.details.get("output")
        if not isinstance(needed, int) or name not in {o.name for o in self.info.outputs}:
            return False
        self._output_capacity[name] = needed
        self._plans.clear()
        return True

    def _shape_result(self, outs: dict[str, np.ndarray]):
        return next(iter(outs.values())) if len(outs) == 1 else outs

    # -- region lifetime -----------------------------------------------------------------------------

    def _retire_if_still_written(self, exc: Exception) -> None:
        """A request that timed out, or that a stopping daemon gave up on while it ran (or
        whose connection closed first), may still be writing into the region: never reuse
        it. One the stopping daemon refused before running it left the region ours alone."""
        if isinstance(exc, DaemonStopping) and exc.details.get("started") is False:
            return
        self._retire_region(wait=False, why="the last request timed out or its daemon stopped while "
                            "it may have run, so the daemon may still write into its region, which was given up")

    def _retire_region(self, wait: bool = True, why: str = "the handle was closed") -> None:
        if self._region is not None:
            region, self._region = self._region, None
            self._plan = None
            self._invalidate_views(f"{why}; call zero_copy_inputs() again")
            self._client.release(region, wait=wait)

    def _forget_region(self) -> None:
        """After a daemon restart the region is gone on the daemon's side: just unmap it."""
        if self._region is not None:
            self._region.close()
            self._region = None
        self._plan = None
        self._invalidate_views("the daemon restarted: its region is gone; call zero_copy_inputs() again")
        self._generation = self._client.generation

    def close(self, release: bool = True) -> None:
        """Release the handle's region now (zero-copy views become invalid). The handle can
        still be used: its next request leases a new region. release=False only unmaps it
        (Client.close(): the client's goodbye frees every lease at once)."""
        with self._lock:
            if release:
                self._retire_region()
            elif self._region is not None:
                self._region.close()
                self._region = None
                self._plan = None
                self._invalidate_views("the client was closed")

    def __enter__(self) -> "ModelHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        region = self._region  # once: another thread may close the handle meanwhile
        held = f"region {region.name} ({region.nbytes} bytes)" if region is not None else "no region"
        batch = f", max_batch {self.info.max_batch}" if self.info.max_batch else ""
        return (f"<ModelHandle {self.name!r} ({self.info.backend}): in {_describe(self.info.inputs)}; "
                f"out {_describe(self.info.outputs)}{batch}; {held}>")


def _describe(specs) -> str:
    return ", ".join(f"{s.name} {expected(s)}" for s in specs) or "-"
