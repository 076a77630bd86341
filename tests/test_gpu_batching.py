"""Dynamic batching on a real CUDA device (skipped, with the reason, where there is none).

Each client's rows go H2D from its own pinned region into its rows of the instance's device
buffer, one run (a CUDA-graph replay where the batch is padded to a captured size), and D2H
back into its region. Run on a GPU machine with: python -m pytest -m gpu -v tests/test_gpu_batching.py
"""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest

from daemon_process import serving
from test_gpu import GPUS, WHY, _reference
from trtd.sdk import Client

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(GPUS == 0, reason=WHY)]

CLIENTS = 8
REQUESTS = 12
RESNET = "path = \"builtin:resnet18\"\nbackend = \"torch\"\ndevice = 0\nmax_batch = 8\n"
BATCHING = "dynamic_batching = true\nmax_queue_delay_us = 5000\n"
# cuDNN picks its (TF32) convolution algorithm per batch size: a row run in a batch and alone
# differ by ~1e-3 relative; a wrong row (another client's) differs by ~1.
TOLERANCE = 1e-2


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b))


def _client(endpoint: str, model: str, seed: int, start, results) -> None:
    rng = np.random.default_rng(seed)
    sent = []
    with Client(endpoint, timeout=120) as c:
        handle = c.model(model)
        handle(np.zeros((1, 3, 224, 224), np.float32))
        start.wait(120)
        for _ in range(REQUESTS):
            x = rng.standard_normal((1, 3, 224, 224), dtype=np.float32)
            sent.append((x, np.array(handle(x))))
    results.put((seed, sent))


def _mixes_rows(path):
    import torch

    class MinusBatchMean(torch.nn.Module):
        def forward(self, x):
            return x - x.mean(0, keepdim=True)

    torch.jit.save(torch.jit.script(MinusBatchMean().eval()), str(path))
    return path


@pytest.fixture(scope="module")
def batching_daemon(tmp_path_factory, _model_cache):
    workdir = tmp_path_factory.mktemp("gpu-batching")
    mix = _mixes_rows(workdir / "mix.pt")
    with serving(workdir,
                 f"[models.eager]\n{RESNET}{BATCHING}"
                 f"[models.graphs]\n{RESNET}{BATCHING}cuda_graphs = true\ngraph_batches = [1, 2, 4, 8]\n"
                 "preferred_batch_sizes = [1, 2, 4, 8]\n"
                 f"[models.mix]\npath = \"{mix}\"\nbackend = \"torch\"\ndevice = 0\n"
                 "inputs = [\"x:-1,8:float32\"]\nmax_batch = 8\n" + BATCHING) as d:
        yield d


@pytest.mark.parametrize("model", ["eager", "graphs"])
def test_eight_client_processes_each_get_their_own_rows_from_gpu_batches(batching_daemon, model):
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_client, args=(batching_daemon.endpoint, model, seed, start, results))
             for seed in range(CLIENTS)]
    for p in procs:
        p.start()
    start.set()
    collected = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    worst = 0.0
    for seed, sent in collected:
        assert len(sent) == REQUESTS
        for x, y in sent:  # each answer against this request's rows run alone in-process
            worst = max(worst, _rel_l2(y, _reference("resnet18", x)))
    assert worst <= TOLERANCE, worst
    with Client(batching_daemon.endpoint) as c:
        (st,) = [s for s in c.status().models if s.name == model]
    assert st.batching == "on" and st.errors == 0 and st.batch_max > 1, st
    if model == "graphs":
        assert st.graphs >= 1  # padded batches replay the captured sizes


def test_a_torch_model_that_mixes_rows_is_refused_batching_on_the_gpu(batching_daemon):
    with Client(batching_daemon.endpoint) as c:
        (st,) = [s for s in c.status().models if s.name == "mix"]
        assert st.state == "ready" and st.batching.startswith("refused: its rows are not independent"), st
        x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
        np.testing.assert_allclose(c.model("mix")(x), x - x.mean(0, keepdims=True), rtol=1e-5, atol=1e-6)
