"""The GPU benchmark (python -m trtd.bench.gpu) without a GPU: what of it runs on a CPU.

Its timed run needs CUDA (the in-process rows capture CUDA graphs), and is run on the H200. Here:
- `--help` works and names every row;
- the rows it times are all described (legend) and every daemon row has its in-process
  counterpart; every served model a row or the concurrency table uses is in the daemon config;
- the daemon rows and the concurrency rows run, once each, against a real daemon serving the
  bench's own config on the CPU (torch backend, device = -1, with the GPU-only keys dropped:
  cuda_graphs, graph_batches, gpu_wait), and their outputs have the workload's shape. That is
  the code the GPU run goes through for those rows (handles, zero-copy views, clients), minus
  the device.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")

from trtd.bench import gpu  # noqa: E402
from trtd.bench.lib.daemon import check_models_served, connect, started_daemon  # noqa: E402
from trtd.bench.lib.gpu_report import REFERENCE, SYSTEMS  # noqa: E402
from trtd.bench.lib.progress import Progress  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="ipc endpoints")

_GPU_ONLY = ("cuda_graphs", "graph_batches", "gpu_wait")


def test_help_names_every_row():
    out = subprocess.run([sys.executable, "-m", "trtd.bench.gpu", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for row in SYSTEMS:
        assert row in out.stdout, row


def test_every_served_model_a_row_uses_is_configured_and_fp16_covers_every_workload():
    used = {*gpu.GRAPH_MODEL.values(), *gpu.BLOCKING_MODEL.values(), *gpu.IDLE_SPIN_MODEL.values(),
            *gpu.FP16_MODEL.values(), *gpu.CONCURRENCY}
    assert used <= set(gpu.MODELS), used - set(gpu.MODELS)
    for w in gpu.WORKLOADS:
        builtin, settings = gpu.MODELS[gpu.FP16_MODEL[w.model]]
        assert builtin == w.model and settings["precision"] == "fp16" and settings["cuda_graphs"]
    assert "resnet18_graph_fp16" in gpu.CONCURRENCY and "resnet18_graph" in gpu.CONCURRENCY


def test_daemon_and_concurrency_rows_run_against_a_real_daemon_on_the_cpu(tmp_path):
    cpu_models = {name: (builtin, {k: v for k, v in settings.items() if k not in _GPU_ONLY})
                  for name, (builtin, settings) in gpu.MODELS.items()}
    config = gpu._config(-1, tmp_path, cpu_models)
    with started_daemon(tmp_path, ["--config", str(config)]) as (endpoint, daemon):
        with connect(endpoint, daemon) as client, \
                connect(endpoint, daemon, name="trtd-bench-spin") as spin_client:
            check_models_served(client, gpu.MODELS)
            b = gpu.Bench(torch=None, device=None, client=client, spin_client=spin_client, floor=None,
                          schedule=None, progress=Progress(), daemon_pid=daemon.pid)
            seen = set()
            # resnet18 b1 and volume3d b1 (b8 goes through the same code as b1).
            for w in (gpu.WORKLOADS[0], gpu.WORKLOADS[2]):
                x = np.random.default_rng(w.batch).standard_normal(w.input_shape, dtype=np.float32)
                systems = gpu.daemon_systems(b, w, x)
                assert {"daemon_graph_fp16_copy", "daemon_graph_fp16_zero_copy"} <= set(systems)
                outputs = {}
                for name, (call, _handle) in systems.items():
                    assert name in SYSTEMS and name in REFERENCE, name
                    outputs[name] = gpu._array(call())
                    assert outputs[name].shape == w.output_shape, (name, outputs[name].shape)
                # FP32 rows compute the same model on the same input (FP16 on the CPU: close).
                for name, y in outputs.items():
                    tolerance = 1e-2 if "fp16" in name else 1e-5
                    np.testing.assert_allclose(y, outputs["daemon_copy"], rtol=tolerance, atol=tolerance,
                                               err_msg=name)
                seen |= set(systems)
            assert seen <= set(SYSTEMS)
            rows = gpu.bench_concurrency(b, endpoint, count=2, warmup=0)
            assert [r.model for r in rows] == list(gpu.CONCURRENCY)
            assert all(r.load is not None and r.load.requests == 2 * gpu.CONCURRENT_CLIENTS for r in rows), \
                [(r.model, r.error) for r in rows]
