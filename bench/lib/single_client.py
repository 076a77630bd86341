"""The single-client benchmark's run: one daemon, the floor, and four systems timed interleaved.

For each planned model: the daemon's outputs (both paths) are compared once with in-process
ONNX Runtime, then the four systems are timed in interleaved blocks (trtd.bench.lib.interleave).
The processes (the daemon unless an endpoint is given, the floor's echo process) are started
before this process has threads of its own (ONNX Runtime and zmq start some) and stopped at
the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

from .accuracy import max_output_diff, outputs_by_name
from .daemon import check_models_served, connect, started_daemon
from .floor import Floor, echo_server, infer_message
from .interleave import measure
from .plans import Plan
from .processes import private_endpoint
from .progress import Progress
from .single_results import DAEMON_SYSTEMS, SYSTEMS, Correctness, ModelResult, Overhead
from .stats import Summary
from .systems import copy_call, in_process_call, onnx_session, zero_copy_call


def bench_model(plan: Plan, client: Any, floor: Floor, progress: Progress, own_daemon: bool) -> ModelResult:
    """Check, then time, one model on the four systems."""
    model = plan.model
    feed = model.make_inputs()
    session = onnx_session(model)
    handle = client.model(model.name)
    names = [o.name for o in session.get_outputs()]
    message = infer_message(model)

    # Correctness, once, before timing: both daemon paths against ONNX Runtime in this process.
    expected = dict(zip(names, session.run(None, feed)))
    copy = copy_call(handle, feed)
    diff_copy = max_output_diff(outputs_by_name(copy(), names), expected)
    zero_copy = zero_copy_call(handle, model, feed)
    diff_zero_copy = max_output_diff(outputs_by_name(zero_copy(), names), expected)
    del expected

    steps: dict[str, Callable[[], object]] = {
        "floor": floor.step(list(feed.values()), message),
        "in_process": in_process_call(session, feed),
        "daemon_copy": copy,
        "daemon_zero_copy": zero_copy,
    }
    progress.start(f"{model.name}: {plan.warmup} warm-up + {plan.iterations} timed x {len(steps)} "
                   f"systems, blocks of {plan.block} (+{plan.settle} settle)")
    samples = measure(steps, plan, progress)
    progress.done()

    systems = {name: Summary.of(samples[name]) for name in SYSTEMS}
    result = ModelResult(
        model=model.name, input_shape=list(model.input_shape), output_shape=list(model.output_shape),
        input_bytes=model.input_bytes, request_bytes=len(message), iterations=plan.iterations,
        warmup=plan.warmup, block=plan.block, settle=plan.settle,
        correctness=Correctness(diff_copy, diff_zero_copy), systems=systems,
        overheads={name: Overhead.of(systems[name], systems["in_process"], systems["floor"])
                   for name in DAEMON_SYSTEMS},
        signature=model.signature(), path=model.path,
    )
    if own_daemon:
        for status in client.status().models:
            if status.name == model.name:
                result.daemon_side_p50_us = status.p50_us
    return result


def run_benchmark(plans: list[Plan], endpoint: str | None, progress: Progress) -> list[ModelResult]:
    """Every plan against the daemon at `endpoint`, or (None) a daemon started for the run."""
    # Generate model files here first, so the daemon only reads finished files from the cache.
    for plan in plans:
        plan.model.source()
    results = []
    with ExitStack() as stack:
        tmpdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="trtd-bench-")))
        # Processes first, while this process has no threads yet (ORT and zmq start some).
        own_daemon, daemon = endpoint is None, None
        if endpoint is None:
            serve = [arg for plan in plans for arg in ("--model", plan.model.serve_flag())]
            endpoint, daemon = stack.enter_context(started_daemon(tmpdir, serve))
        floor_endpoint = stack.enter_context(echo_server(
            private_endpoint(tmpdir, "floor.sock") if endpoint.startswith("ipc://")
            else "tcp://127.0.0.1:*"))
        floor = Floor(floor_endpoint, max(plan.model.input_region_bytes for plan in plans))
        stack.callback(floor.close)
        progress.start(f"connecting to the daemon at {endpoint}")
        client = stack.enter_context(connect(endpoint, daemon))
        progress.done("connected")
        check_models_served(client, [plan.model.name for plan in plans])
        for plan in plans:
            results.append(bench_model(plan, client, floor, progress, own_daemon))
    return results
