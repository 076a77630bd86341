"""The metrics endpoint on a GPU (issue 19): device memory, pinned bytes and the H2D / compute /
D2H histograms of a CUDA instance, scraped from a real daemon. Skipped without a CUDA device
(run on the H200 by bench/run_on_gpu.sh)."""

from __future__ import annotations

import numpy as np
import pytest

from daemon_process import serving
from test_gpu import GPUS, WHY
from test_metrics import Scrape, free_port
from trtd.sdk import Client

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(GPUS == 0, reason=WHY)]


def test_a_gpu_models_device_memory_pinning_and_copy_times_are_scraped(tmp_path):
    port = free_port()
    config = (f'metrics = "127.0.0.1:{port}"\n'
              '[models.resnet18]\npath = "builtin:resnet18"\nbackend = "torch"\ndevice = 0\n')
    with serving(tmp_path, config) as d:
        x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
        with Client(d.endpoint) as c:
            for _ in range(5):
                c.infer("resnet18", x)
            scrape = Scrape(port)
        assert scrape.value("trtd_device_memory_total_bytes", device="0") > 0
        assert 0 < scrape.value("trtd_device_memory_free_bytes", device="0") <= \
            scrape.value("trtd_device_memory_total_bytes", device="0")
        assert scrape.value("trtd_pinned_bytes") > 0, "the client's region was pinned"
        for stage in ("h2d", "compute", "d2h"):
            name = f"trtd_model_{stage}_duration_seconds"
            assert scrape.value(name + "_count", model="resnet18") == 5, stage
            if stage != "d2h":  # 5 floats back: a few µs, which whole-µs timing may round to 0
                assert scrape.value(name + "_sum", model="resnet18") > 0, stage
