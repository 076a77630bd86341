"""The GPU data path on a real CUDA device (skipped, with the reason, where there is none).

Run on a GPU machine with: python -m pytest -m gpu -v tests/test_gpu.py
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from daemon_process import run_threads, serving
from trtd.daemon.commands.cli import graph_summary, main
from trtd.sdk import Client


def _gpu_count() -> tuple[int, str]:
    try:
        import torch  # noqa: F401
    except ImportError:
        return 0, "torch is not installed (the GPU tests use the torch backend)"
    try:
        from trtd.daemon.system import cuda

        return cuda.device_count(), "no CUDA device"
    except Exception as exc:
        return 0, f"no usable CUDA device: {exc}"


GPUS, WHY = _gpu_count()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(GPUS == 0, reason=WHY)]

def _chain_module(path):
    """50 matrix products a request: GPU-bound, so two instances' requests overlap on the GPU."""
    import torch

    class Chain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(1024, 1024) / 32)

        def forward(self, x):
            for _ in range(50):
                x = torch.tanh(x @ self.w)
            return x

    torch.jit.save(torch.jit.script(Chain().eval()), str(path))
    return path


# ResNet-18 with CUDA graphs captured for batch 1 and 8 (other sizes run eagerly).
GRAPH_MODEL = ("path = \"builtin:resnet18\"\nbackend = \"torch\"\ndevice = 0\nmax_batch = 8\n"
               "cuda_graphs = true\ngraph_batches = [1, 8]\n")


@pytest.fixture(scope="module")
def gpu_daemon(tmp_path_factory, _model_cache):
    workdir = tmp_path_factory.mktemp("gpu")
    chain = _chain_module(workdir / "chain.pt")
    chain_model = f"path = \"{chain}\"\nbackend = \"torch\"\ndevice = 0\ninputs = [\"x:-1,1024\"]\nmax_batch = 1024\n"
    with serving(workdir,
                 "[models.resnet18]\npath = \"builtin:resnet18\"\nbackend = \"torch\"\ndevice = 0\nmax_batch = 8\n"
                 "[models.volume3d]\npath = \"builtin:volume3d\"\nbackend = \"torch\"\ndevice = 0\n"
                 f"[models.chain1]\n{chain_model}"
                 f"[models.chain2]\n{chain_model}instances = 2\n"
                 f"[models.resnet18_graph]\n{GRAPH_MODEL}"
                 f"[models.resnet18_graph_x2]\n{GRAPH_MODEL}instances = 2\n"
                 f"[models.resnet18_graph_fp16]\n{GRAPH_MODEL}precision = \"fp16\"\n"
                 "[models.demo_cpu]\npath = \"builtin:demo\"\n") as d:
        yield d


def _reference(name: str, x: np.ndarray) -> np.ndarray:
    import torch

    from trtd.daemon.builtin.torch_models import builtin_torchscript_path

    module = torch.jit.load(str(builtin_torchscript_path(name)), map_location="cuda:0").eval()
    with torch.inference_mode():
        return module(torch.from_numpy(x).cuda()).cpu().numpy()


@pytest.mark.parametrize("name, shape", [("resnet18", (1, 3, 224, 224)), ("resnet18", (8, 3, 224, 224)),
                                         ("volume3d", (1, 1, 128, 256, 256))])
def test_outputs_equal_in_process_torch(gpu_daemon, name, shape):
    rng = np.random.default_rng(hash(shape) % 2**32)
    with Client(gpu_daemon.endpoint) as c:
        handle = c.model(name)
        for _ in range(3):  # fresh random inputs each time
            x = rng.standard_normal(shape, dtype=np.float32)
            y = handle(x)
            ref = _reference(name, x)
            assert np.isfinite(y).all()
            assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 1e-5
        t = handle.last_timing
        assert t.h2d_us > 0 and t.compute_us > 0 and t.d2h_us > 0


def test_regions_are_registered_once_and_unregistered_on_release(gpu_daemon):
    with Client(gpu_daemon.endpoint) as c:
        before = c.status()
        handle = c.model("resnet18")
        x = np.random.default_rng(1).standard_normal((1, 3, 224, 224), dtype=np.float32)
        for _ in range(50):
            handle(x)
        during = c.status()
        assert during.host_registrations - before.host_registrations == 1
        assert during.pinned_bytes - before.pinned_bytes == handle._region.nbytes
        handle.close()  # releases the region
        after = c.status()
        assert after.pinned_bytes == before.pinned_bytes
        assert after.host_registrations == during.host_registrations


def test_two_instances_overlap_in_time(gpu_daemon):
    """With 2 instances, the requests of two clients run at the same time: the sum of their
    GPU spans exceeds the wall time. With 1 instance they cannot (the sum stays below it)."""
    x = np.random.default_rng(2).standard_normal((1024, 1024), dtype=np.float32)

    def run(model: str) -> tuple[float, float]:
        spans, threads = [], []

        def client():
            with Client(gpu_daemon.endpoint) as c:
                h = c.model(model)
                h(x)  # warm
                barrier.wait()
                for _ in range(20):
                    h(x)
                    spans.append(h.last_timing.compute_us / 1e6)

        barrier = threading.Barrier(3)
        threads = [threading.Thread(target=client) for _ in range(2)]
        for t in threads:
            t.start()
        barrier.wait()
        start = time.perf_counter()
        for t in threads:
            t.join()
        return sum(spans), time.perf_counter() - start

    busy1, wall1 = run("chain1")
    busy2, wall2 = run("chain2")
    assert busy1 <= wall1 * 1.05, (busy1, wall1)
    assert busy2 > wall2 * 1.2, (busy2, wall2)


def test_load_unload_cycles_return_device_and_pinned_memory(gpu_daemon):
    from trtd.daemon.system import cuda

    x = np.random.default_rng(3).standard_normal((8, 3, 224, 224), dtype=np.float32)
    with Client(gpu_daemon.endpoint) as admin:
        def cycle():
            admin.load("cycled", "builtin:resnet18", backend="torch", max_batch=8, device=0)
            with Client(gpu_daemon.endpoint) as c:
                c.infer("cycled", x)
            admin.unload("cycled")

        cycle()  # the first load may initialise libraries (cuDNN workspaces) for good
        free_before, _ = cuda.memory_info(0)
        pinned_before = admin.status().pinned_bytes
        for _ in range(3):
            cycle()
        free_after, _ = cuda.memory_info(0)
        assert abs(free_before - free_after) < 64 * 2**20, (free_before, free_after)
        assert admin.status().pinned_bytes == pinned_before


def test_cpu_models_keep_serving_beside_gpu_models(gpu_daemon):
    with Client(gpu_daemon.endpoint) as c:
        assert c.infer("demo_cpu", np.zeros((1, 64), np.float32)).shape == (1, 10)
        statuses = {s.name: s for s in c.status().models}
        assert statuses["resnet18"].device == 0 and statuses["demo_cpu"].device == -1
        assert c.status().devices[0].total_bytes > 0


@pytest.mark.skipif(GPUS < 2, reason="needs two CUDA devices")
def test_models_on_two_gpus_serve_concurrent_clients(tmp_path):
    def work(model, seed):
        rng = np.random.default_rng(seed)
        with Client(d.endpoint) as c:
            for _ in range(10):
                x = rng.standard_normal((1, 3, 224, 224), dtype=np.float32)
                y, ref = c.infer(model, x), _reference("resnet18", x)
                assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 1e-5

    with serving(tmp_path,
                 "[models.gpu0]\npath = \"builtin:resnet18\"\nbackend = \"torch\"\ndevice = 0\n"
                 "[models.gpu1]\npath = \"builtin:resnet18\"\nbackend = \"torch\"\ndevice = 1\n") as d:
        run_threads(work, [(m, i) for i, m in enumerate(["gpu0", "gpu1"] * 2)])
        with Client(d.endpoint) as c:
            assert {s.device for s in c.status().models} == {0, 1}
            assert len(c.status().devices) == 2


def test_tensorrt_runtime_rejects_foreign_engine_bytes(tmp_path):
    from trtd.daemon.backends.base import BackendError
    from trtd.daemon.engines.trt import TensorRTUnavailable, import_tensorrt

    try:
        trt = import_tensorrt()
    except TensorRTUnavailable as exc:
        pytest.skip(str(exc))
    from trtd.daemon.backends.tensorrt import TensorRTBackend

    engine = tmp_path / "foreign.engine"
    engine.write_bytes(b"ftrt" + bytes(range(256)) * 64)  # not an engine of this TensorRT
    with pytest.raises(BackendError, match="could not deserialize") as e:
        TensorRTBackend(engine, device=0)
    assert trt.version in str(e.value)
    with serving(tmp_path, f"[models.trt]\npath = \"{engine}\"\nbackend = \"tensorrt\"\ndevice = 0\n") as d:
        with Client(d.endpoint) as c:
            info = c.describe("trt")
            assert info.state == "failed" and "could not deserialize" in info.error


def _full_tensorrt_or_skip():
    from trtd.daemon.engines.trt import TensorRTUnavailable, import_tensorrt

    try:
        return import_tensorrt(prefer="full")
    except TensorRTUnavailable as exc:
        pytest.skip(f"needs the full TensorRT library to build engines: {exc}")


@pytest.mark.timeout(3600)  # a TensorRT build takes minutes
def test_tensorrt_build_inspect_and_serve_with_swap(tmp_path):
    import subprocess
    import sys

    from trtd.daemon.builtin.onnx_models import builtin_model_path

    _full_tensorrt_or_skip()
    onnx_path = builtin_model_path("resnet18")
    # The CLI and the daemon share the session's cache (TRTD_CACHE_DIR): the daemon must reuse it.
    out = subprocess.run([sys.executable, "-m", "trtd.daemon", "build", str(onnx_path), "--profile",
                          "x:1x3x224x224,4x3x224x224,8x3x224x224", "--inspect"],
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr
    assert "tactic=" in out.stdout
    config = (f"[models.r]\npath = \"{onnx_path}\"\nbackend = \"tensorrt\"\ndevice = 0\n"
              "profiles = [\"x:1x3x224x224,4x3x224x224,8x3x224x224\"]\ncompare_atol = 0.01\n"
              "compare_rtol = 0.01\n")
    with serving(tmp_path, config) as d:
        with Client(d.endpoint) as c:
            from daemon_process import wait_until

            state = lambda: next(s.build for s in c.status().models if s.name == "r")  # noqa: E731
            assert wait_until(lambda: state().startswith(("serving engine", "rejected", "failed")), 1800)
            assert state().startswith("serving engine"), state()
            assert "cached:" in d.log()  # the engine `trtd build` made was reused, not rebuilt
            h = c.model("r")
            h(np.zeros((2, 3, 224, 224), np.float32))
            assert h.last_backend[0] == "tensorrt" and h.last_backend[1]


def _rel_l2(y: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(y - ref) / np.linalg.norm(ref))


def _graphs(c: Client, name: str) -> tuple[int, int]:
    model = next(s for s in c.status().models if s.name == name)
    return model.graphs, model.graph_bytes


def test_cuda_graph_replays_equal_eager_and_other_batches_run_eagerly(gpu_daemon, capsys):
    rng = np.random.default_rng(11)
    with Client(gpu_daemon.endpoint) as c:
        handle = c.model("resnet18_graph")
        for batch in (1, 8, 3, 1, 8):  # 1 and 8: captured, then replayed; 3: eager
            for _ in range(2):
                x = rng.standard_normal((batch, 3, 224, 224), dtype=np.float32)
                assert _rel_l2(handle(x), _reference("resnet18", x)) <= 1e-6
        slots = handle.zero_copy_inputs({"x": (8, 3, 224, 224)})  # another region: same graph
        x = rng.standard_normal((8, 3, 224, 224), dtype=np.float32)
        slots["x"][...] = x
        del slots
        assert _rel_l2(handle.run_zero_copy()["output"], _reference("resnet18", x)) <= 1e-6
        graphs, graph_bytes = _graphs(c, "resnet18_graph")
        assert graphs == 2 and graph_bytes >= 0, (graphs, graph_bytes)
    # `trtd status`'s text form prints the same fields (its exit code depends on the other models).
    capsys.readouterr()
    main(["status", "--endpoint", gpu_daemon.endpoint])
    line = f"resnet18_graph: cuda graphs: {graph_summary(graphs, graph_bytes)}"
    assert line in capsys.readouterr().out.splitlines()


def test_cuda_graphs_of_two_instances_serve_concurrent_clients_correctly(gpu_daemon):
    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        with Client(gpu_daemon.endpoint) as c:
            handle = c.model("resnet18_graph_x2")
            for _ in range(12):
                x = rng.standard_normal((1, 3, 224, 224), dtype=np.float32)
                assert _rel_l2(handle(x), _reference("resnet18", x)) <= 1e-6

    run_threads(client, [(seed,) for seed in range(6)])
    with Client(gpu_daemon.endpoint) as c:
        assert 1 <= _graphs(c, "resnet18_graph_x2")[0] <= 2  # one b1 graph per instance used


def test_fp16_graph_stays_close_to_fp32(gpu_daemon):
    x = np.random.default_rng(5).standard_normal((8, 3, 224, 224), dtype=np.float32)
    with Client(gpu_daemon.endpoint) as c:
        y = c.model("resnet18_graph_fp16")(x)
    assert y.dtype == np.float32
    assert _rel_l2(y, _reference("resnet18", x)) < 1e-2


def test_unloading_a_graph_model_returns_its_device_memory(tmp_path, _model_cache):
    from trtd.daemon.system import cuda

    base = "[models.keep]\npath = \"builtin:demo\"\n"
    with_graphs = base + f"[models.cycled]\n{GRAPH_MODEL}"
    x = np.random.default_rng(3).standard_normal((8, 3, 224, 224), dtype=np.float32)
    with serving(tmp_path, with_graphs, name="g") as d, Client(d.endpoint) as admin:
        config = tmp_path / "g.toml"

        def cycle() -> None:
            config.write_text(with_graphs)
            admin.reload()
            with Client(d.endpoint) as c:
                handle = c.model("cycled")  # waits for the load
                handle(x)
                handle(x[:1])
                assert _graphs(admin, "cycled")[0] == 2
            config.write_text(base)
            admin.reload()
            assert "cycled" not in [s.name for s in admin.status().models]

        cycle()  # the first load initialises libraries (cuDNN workspaces) for good
        free_before, _ = cuda.memory_info(0)
        for _ in range(3):
            cycle()
        free_after, _ = cuda.memory_info(0)
        assert abs(free_before - free_after) < 64 * 2**20, (free_before, free_after)


def test_a_captured_stream_graph_replays_its_work_with_one_launch():
    """system/cuda.py's Graph (what TensorRT engines' graphs are made of): a device-to-device
    copy captured once replays on what the source holds at launch time."""
    from trtd.daemon.system import cuda

    stream = cuda.Stream(0)
    src, dst = cuda.DeviceBuffer(0, 4096), cuda.DeviceBuffer(0, 4096)
    try:
        graph = cuda.Graph(stream, lambda: cuda.copy_d2d(dst.ptr, src.ptr, 4096, stream))
        for fill in (1.0, 2.5):
            host = np.full(1024, fill, np.float32)
            cuda.copy_h2d(src.ptr, host.ctypes.data, 4096, stream)
            graph.launch(stream)
            out = np.zeros(1024, np.float32)
            cuda.copy_d2h(out.ctypes.data, dst.ptr, 4096, stream)
            stream.synchronize()
            assert (out == fill).all()
        graph.close()
        with pytest.raises(ZeroDivisionError):  # a failing recording ends the capture, stream usable
            cuda.Graph(stream, lambda: 1 / 0)
        cuda.copy_d2d(dst.ptr, src.ptr, 4096, stream)
        stream.synchronize()
    finally:
        src.close()
        dst.close()
        stream.close()
