"""INT8 variants are accurate on every x86 CPU ONNX Runtime runs on, checked on an emulated one.

ONNX Runtime picks its 8-bit kernels by the CPU's instruction set: with VNNI (most AVX-512
servers since Cascade Lake) products are summed exactly, without it (AVX2-only CPUs such as
AMD EPYC Rome, which CI's VMs sometimes are) VPMADDUBSW sums pairs into a saturating int16.
A test that only ran on the CPU it got would pass or fail by the luck of the draw, so the
CPU-dependent part runs `trtd validate` under qemu's user-mode emulator with an AVX2 CPU
model that has no AVX-512 and no VNNI (Debian's qemu-user; `.ci/run` installs it): the same
instructions, and so the same figures, on whatever host runs the suite.
"""

from __future__ import annotations

import platform
import shutil

import numpy as np
import pytest

from trtd.bench.int8_portability import make_variants, validate_on

# Zen 2: AVX2 and FMA, no AVX-512, no VNNI (qemu-x86_64 -cpu help lists the models).
AVX2_ONLY_CPU = "EPYC-Rome-v1"

pytestmark = [
    pytest.mark.skipif(
        platform.machine() not in ("x86_64", "AMD64") or shutil.which("qemu-x86_64") is None,
        reason="needs an x86_64 host with qemu-x86_64 (Debian: apt-get install qemu-user)"),
    # Emulation is slow and its speed is the host's: each `trtd validate` has its own 600 s bound
    # (validate_on), a test runs up to two, and the first also pays for the module fixture (the
    # conversions). Above all that, so an inner bound, which says which run, fires first.
    pytest.mark.timeout(1500),
]


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """The classifier's two INT8 variants, and calibration and test samples from its data."""
    folder = tmp_path_factory.mktemp("int8")
    return folder, make_variants(folder)


def test_portable_int8_gives_the_same_answers_on_an_avx2_cpu_as_on_this_one(variants):
    folder, made = variants
    native = validate_on(made["portable"].path, folder, None)
    emulated = validate_on(made["portable"].path, folder, AVX2_ONLY_CPU)
    assert native["passed"] and emulated["passed"], (native, emulated)
    # No saturation: the emulated CPU's integer sums are exact, as VNNI's and ARM's are.
    assert abs(native["outputs"]["output"]["rel_l2"] - emulated["outputs"]["output"]["rel_l2"]) < 1e-4


def test_full_range_int8_saturates_on_an_avx2_cpu_and_the_gate_rejects_it(variants):
    """The 8-bit-weight (tensorrt target) variant is really wrong on ONNX Runtime on that CPU:
    the gate must say so. Also the proof that the emulated CPU lacks VNNI, without which the
    test above would show nothing."""
    folder, made = variants
    emulated = validate_on(made["tensorrt"].path, folder, AVX2_ONLY_CPU)
    assert not emulated["passed"], emulated
    assert emulated["outputs"]["output"]["rel_l2"] > 0.1
    assert any("target is tensorrt" in note for note in emulated["notes"])


def test_variants_say_their_target_and_stay_tensorrt_qdq(variants):
    import onnx
    from onnx import numpy_helper

    _, made = variants
    for target, weight_limit in (("portable", 64), ("tensorrt", 127)):
        meta = made[target].metadata
        assert meta["trtd.int8_target"] == target and meta["trtd.int8_preprocessed"] == "yes"
        assert meta["trtd.int8_weight_range"] == f"-{weight_limit}..{weight_limit}"
        model = onnx.load(str(made[target].path))
        constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        weights = [constants[n.input[0]] for n in model.graph.node
                   if n.op_type == "DequantizeLinear" and n.input[0] in constants]
        assert weights and all(w.dtype == np.int8 for w in weights)
        assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights) == weight_limit
        for node in model.graph.node:  # signed, symmetric: TensorRT's explicit quantization
            if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
                zero_point = constants[node.input[2]]
                assert zero_point.dtype == np.int8 and not zero_point.any(), node.name


def test_the_daemon_s_int8_variant_passes_its_swap_gate_on_an_avx2_cpu(tmp_path):
    """`precision = "int8"` in a daemon that runs as the AVX2-only CPU (the whole daemon under
    qemu: calibration, the relative-L2 swap gate, serving): the variant is swapped in, and what
    the daemon answers there is what the same variant answers on this CPU. With 8-bit weights
    (the tensorrt target, which the daemon once made for ONNX Runtime too) the gate rejected it
    on such a CPU (relative L2 0.58 > 0.1) and the model stayed on FP32."""
    import onnxruntime as ort

    from daemon_process import start_daemon, wait_ready, wait_until
    from trtd.bench.int8_portability import MODEL
    from trtd.daemon.precision.convert import convert
    from trtd.daemon.precision.datasets import shapes
    from trtd.sdk import Client

    np.savez(tmp_path / "calib.npz", x=shapes(32, seed=6)[0])
    (tmp_path / "d.toml").write_text(f'[models.cls]\npath = "{MODEL}"\nprecision = "int8"\n'
                                     f'calibration = "{tmp_path / "calib.npz"}"\n')
    cache = tmp_path / "cache"
    d = start_daemon(tmp_path, "--config", str(tmp_path / "d.toml"), emulated_cpu=AVX2_ONLY_CPU,
                     env={"TRTD_CACHE_DIR": str(cache)}, wait=False)
    try:
        wait_ready(d, timeout=300)  # emulated: its start is slower than start_daemon's 60 s allow
        with Client(d.endpoint, timeout=120) as c:
            def build() -> str:
                return next(s.build for s in c.status().models if s.name == "cls")

            assert wait_until(lambda: build().startswith(("serving", "failed", "rejected")), timeout=600), d.log()
            assert build().startswith("serving"), (build(), d.log())
            x, _ = shapes(32, seed=5)
            handle = c.model("cls")
            served = np.concatenate([handle(x[i:i + 1]) for i in range(len(x))])
            assert handle.last_backend[0] == "onnxruntime-int8"
        assert "onnxruntime-int8" in d.log() and "passed (" in d.log(), d.log()
        # The daemon's variant (from its cache, not made again) on this CPU: the same answers.
        variant = convert(MODEL, "int8", tmp_path / "calib.npz", cache_root=cache)
        assert variant.cached and variant.metadata["trtd.int8_target"] == "portable"
        session = ort.InferenceSession(str(variant.path), providers=["CPUExecutionProvider"])
        native = session.run(None, {"x": x})[0]
        assert np.linalg.norm(served - native) <= 1e-4 * np.linalg.norm(native)
    finally:
        assert d.stop(timeout=120) == 0, d.log()
