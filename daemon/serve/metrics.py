"""What /metrics shows: a prometheus_client Collector that reads the daemon's own counters at
scrape time.

Nothing is recorded for Prometheus on the hot path beyond what the daemon keeps anyway (a
model's ok/errors, regions, clients) and, with the endpoint on, the timing histograms
(running/histograms.py). collect() runs on the endpoint's thread and only reads: plain Python
numbers, and containers copied with one C-level call (`list(...)`, `dict(...)`: atomic under
the GIL) before they are walked, so a scrape never takes a lock the socket loop takes and never
sees a container change size under it. A part that fails anyway (a device gone) is left out
of that scrape and logged once at DEBUG; the scrape itself still answers.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from trtd.protocol import PROTOCOL_VERSION, SERVER_VERSION

from trtd.daemon.running.histograms import BATCH_BOUNDS, LATENCY_BOUNDS_US, HistogramSnapshot
from trtd.daemon.system import cuda

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from trtd.daemon.core.daemon_core import DaemonCore

log = logging.getLogger("trtd.metrics")

MODEL_STATES = ("loading", "ready", "failed")
# Stage of an infer's timing -> (metric name, what it measures).
_STAGES = {
    "total": ("trtd_model_request_duration_seconds",
              "Time in the daemon from reading an infer request to its reply being ready "
              "(succeeded requests)."),
    "queue": ("trtd_model_queue_duration_seconds",
              "Time an infer request waited for a free instance."),
    "h2d": ("trtd_model_h2d_duration_seconds",
            "Host-to-device copies of an infer request's inputs (GPU models)."),
    "compute": ("trtd_model_compute_duration_seconds",
                "The backend's run of an infer request."),
    "d2h": ("trtd_model_d2h_duration_seconds",
            "Device-to-host copies of an infer request's outputs (GPU models)."),
}
_LATENCY_LE = [floatToGoString(bound / 1e6) for bound in LATENCY_BOUNDS_US] + ["+Inf"]
_BATCH_LE = [floatToGoString(float(bound)) for bound in BATCH_BOUNDS] + ["+Inf"]


def _buckets(snapshot: HistogramSnapshot, le: list[str]) -> list[tuple[str, float]]:
    return list(zip(le, snapshot.cumulative))


class DaemonCollector(Collector):
    """The daemon's metrics, built from `core` at each scrape."""

    def __init__(self, core: DaemonCore):
        self.core = core
        self._failed_parts: set[str] = set()

    def collect(self) -> Iterator[Metric]:
        for part in (self._daemon, self._models, self._builds, self._devices):
            try:
                yield from list(part())
            except Exception as exc:  # a scrape must answer: leave this part out, say why once
                if part.__name__ not in self._failed_parts:
                    self._failed_parts.add(part.__name__)
                    log.debug("metrics: %s left out of the scrape: %s", part.__name__, exc)

    def _daemon(self) -> Iterable[Metric]:
        core = self.core
        info = GaugeMetricFamily("trtd_daemon_info", "The daemon's version and protocol (value 1).",
                                 labels=["version", "protocol", "daemon_id"])
        info.add_metric([SERVER_VERSION, str(PROTOCOL_VERSION), core.daemon_id], 1)
        yield info
        yield GaugeMetricFamily("trtd_stopping", "1 while the daemon drains to stop (not ready).",
                                value=1 if core.stop.draining else 0)
        yield GaugeMetricFamily("trtd_clients", "Clients registered (hello) now.", value=len(core.clients))
        regions = core.regions
        yield GaugeMetricFamily("trtd_regions", "Shared-memory regions leased now.", value=len(regions))
        yield GaugeMetricFamily("trtd_region_bytes", "Bytes of the regions leased now.",
                                value=regions.total_bytes)
        yield GaugeMetricFamily("trtd_in_flight", "Requests and loads accepted and not answered yet.",
                                value=len(core.in_flight))
        pins = core.pinning.stats
        yield GaugeMetricFamily("trtd_pinned_bytes",
                                "Host bytes registered (page-locked) with CUDA now: the regions GPU "
                                "models have used.", value=pins.pinned_bytes)
        yield CounterMetricFamily("trtd_host_registrations", "cudaHostRegister calls made.",
                                  value=pins.registrations)
        rejected = CounterMetricFamily("trtd_rejected_requests",
                                       "Requests answered with an error before they reached a model "
                                       "(undecodable, unknown client or model, model not ready, bad "
                                       "region, refused while stopping), by op and error code.",
                                       labels=["op", "code"])
        for (op, code), count in sorted(dict(core.rejected).items()):
            rejected.add_metric([op or "undecoded", code], count)
        yield rejected

    def _models(self) -> Iterable[Metric]:
        core = self.core
        models = list(core.models)
        by_state = GaugeMetricFamily("trtd_models", "Models by state.", labels=["state"])
        counts = {name: 0 for name in MODEL_STATES}
        for model in models:
            counts[model.state] = counts.get(model.state, 0) + 1
        for name, count in counts.items():
            by_state.add_metric([name], count)
        state = GaugeMetricFamily("trtd_model_state", "1 for the state each model is in.",
                                  labels=["model", "state", "backend"])
        requests = CounterMetricFamily("trtd_model_requests",
                                       "Infer requests that reached the model (ok + errors).",
                                       labels=["model"])
        ok = CounterMetricFamily("trtd_model_ok", "Infer requests answered with outputs.",
                                 labels=["model"])
        errors = CounterMetricFamily("trtd_model_errors",
                                     "Infer requests that reached the model and were answered with "
                                     "an error, by error code.", labels=["model", "code"])
        in_flight = GaugeMetricFamily("trtd_model_in_flight", "Requests queued on or running in the "
                                      "model's instances.", labels=["model"])
        stages = {stage: HistogramMetricFamily(name, text, labels=["model"])
                  for stage, (name, text) in _STAGES.items()}
        batches = HistogramMetricFamily("trtd_model_batch_size",
                                        "Requests run together per batch (dynamic batching).",
                                        labels=["model"])
        for model in models:
            name, stats = model.name, model.stats
            state.add_metric([name, model.state, model.served_by or model.config.backend], 1)
            ok_now, errors_now = stats.ok, stats.errors
            requests.add_metric([name], ok_now + errors_now)
            ok.add_metric([name], ok_now)
            by_code = {str(code): n for code, n in dict(stats.errors_by_code).items()}
            # Errors counted without a code (none today) still add up to the model's errors.
            uncoded = errors_now - sum(by_code.values())
            if uncoded > 0:
                by_code["OTHER"] = uncoded
            for code, count in sorted(by_code.items()):
                errors.add_metric([name, code], count)
            in_flight.add_metric([name], core.in_flight.on(model.executor))
            timings = stats.timings
            if timings is not None:
                for stage, snapshot in timings.snapshot().items():
                    stages[stage].add_metric([name], _buckets(snapshot, _LATENCY_LE), snapshot.sum / 1e6)
            if stats.batches is not None:
                snapshot = stats.batches.snapshot()
                batches.add_metric([name], _buckets(snapshot, _BATCH_LE), snapshot.sum)
        yield from (by_state, state, requests, ok, errors, in_flight, *stages.values(), batches)

    def _builds(self) -> Iterable[Metric]:
        counts = self.core.models.builds.snapshot()
        help_text = {
            "started": "Engine builds started (a cache hit included).",
            "succeeded": "Engine builds that built an engine.",
            "cached": "Engine builds answered from the engine cache (nothing built).",
            "failed": "Engine builds that failed or were cancelled.",
        }
        for key, text in help_text.items():
            yield CounterMetricFamily(f"trtd_engine_builds_{key}", text, value=counts[key])
        yield GaugeMetricFamily("trtd_engine_builds_running", "Engine builds running now.",
                                value=counts["started"] - counts["succeeded"] - counts["cached"]
                                - counts["failed"])
        yield CounterMetricFamily("trtd_engine_build_seconds", "Seconds spent in engine builds that ran.",
                                  value=counts["seconds"])

    def _devices(self) -> Iterable[Metric]:
        """Memory of the GPUs that models run on; nothing on a machine serving from the CPU."""
        devices = sorted({model.config.device for model in list(self.core.models)
                          if model.config.device >= 0})
        if not devices:
            return []
        free = GaugeMetricFamily("trtd_device_memory_free_bytes", "Free memory of the GPU.",
                                 labels=["device", "name"])
        total = GaugeMetricFamily("trtd_device_memory_total_bytes", "Memory of the GPU.",
                                  labels=["device", "name"])
        for device in devices:
            free_bytes, total_bytes = cuda.memory_info(device)
            labels = [str(device), cuda.device_name(device)]
            free.add_metric(labels, free_bytes)
            total.add_metric(labels, total_bytes)
        return [free, total]


class ProcessFallback(Collector):
    """The process metrics where prometheus_client's ProcessCollector has no /proc to read
    (Windows, macOS): the same names, from psutil. On Linux only `process_threads`, which
    ProcessCollector does not export."""

    def __init__(self, threads_only: bool):
        self._process = psutil.Process()
        self._threads_only = threads_only

    def collect(self) -> Iterator[Metric]:
        process = self._process
        with process.oneshot():
            yield GaugeMetricFamily("process_threads", "OS threads of the process.",
                                    value=process.num_threads())
            if self._threads_only:
                return
            memory = process.memory_info()
            cpu = process.cpu_times()
            yield GaugeMetricFamily("process_resident_memory_bytes", "Resident memory size in bytes.",
                                    value=memory.rss)
            yield GaugeMetricFamily("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                                    value=memory.vms)
            yield CounterMetricFamily("process_cpu_seconds_total",
                                      "Total user and system CPU time spent in seconds.",
                                      value=cpu.user + cpu.system)
            yield GaugeMetricFamily("process_start_time_seconds",
                                    "Start time of the process since unix epoch in seconds.",
                                    value=process.create_time())
            if sys.platform == "win32":
                yield GaugeMetricFamily("process_open_handles", "Open handles (Windows).",
                                        value=process.num_handles())
            else:
                yield GaugeMetricFamily("process_open_fds", "Number of open file descriptors.",
                                        value=process.num_fds())


def make_registry(core: DaemonCore) -> CollectorRegistry:
    """A registry of this daemon's own (never prometheus_client's global one: a test or an
    embedding program may run several daemons in one process)."""
    from prometheus_client import ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(core))
    has_proc = Path(f"/proc/{os.getpid()}/stat").exists()
    if has_proc:
        ProcessCollector(registry=registry)  # rss, fds, cpu, start time: the standard names
    registry.register(ProcessFallback(threads_only=has_proc))
    return registry
