"""The SDK against a real daemon: copying and zero-copy paths, threads, timeouts, load/unload."""

from __future__ import annotations


import numpy as np
import pytest

from daemon_process import run_threads
from trtd.daemon.backends.onnxruntime import create_session
from trtd.daemon.builtin.onnx_models import builtin_model_path
from trtd.protocol.endpoint import EndpointError
from trtd.sdk import Client, DaemonTimeout, InvalidEndpoint, InvalidInput, TrtdError, UnknownModel

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

WIDE = 100_000  # NonZero of this many positives is 1.6 MB: above the SDK's first guess


@pytest.fixture(scope="module")
def two_by_two(tmp_path_factory):
    """Two inputs, two outputs, one of them data-dependent (NonZero)."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]),
         helper.make_node("Greater", ["a", "zero"], ["pos"]),
         helper.make_node("NonZero", ["pos"], ["where"])],
        "two_by_two",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", WIDE]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", WIDE])],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", WIDE]),
         helper.make_tensor_value_info("where", TensorProto.INT64, [2, "n"])],
        [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    path = tmp_path_factory.mktemp("models") / "two_by_two.onnx"
    onnx.save(model, str(path))
    return path


@pytest.fixture
def client(daemon):
    with Client(daemon.endpoint, timeout=10) as c:
        yield c


def test_models_describes_io(client):
    info = {m.name: m for m in client.models()}["demo"]
    assert info.state == "ready" and info.max_batch == 64
    assert [(t.name, t.dtype, t.shape) for t in info.inputs] == [("x", "float32", [-1, 64])]
    assert [(t.name, t.dtype, t.shape, t.max_nbytes) for t in info.outputs] == [
        ("y", "float32", [-1, 10], 64 * 10 * 4)]


def test_infer_matches_in_process_for_every_batch(client):
    session = create_session(builtin_model_path("demo"))
    handle = client.model("demo")
    rng = np.random.default_rng(3)
    for batch in (1, 7, 64, 2, 1):
        x = rng.standard_normal((batch, 64), dtype=np.float32)
        np.testing.assert_array_equal(handle(x), session.run(None, {"x": x})[0])


def test_steady_state_reuses_the_region(client):
    handle = client.model("demo")
    x = np.ones((4, 64), np.float32)
    handle(x)
    region = handle._region.name
    for _ in range(20):
        handle(x)
        handle(x[:2])
    assert handle._region.name == region
    assert client.status().regions == 1


def test_copying_path_results_survive_later_requests(client):
    handle = client.model("demo")
    first = handle(np.ones((1, 64), np.float32))
    keep = first.copy()
    handle(np.full((1, 64), -5, np.float32))
    np.testing.assert_array_equal(first, keep)


def test_out_arrays_receive_the_outputs(client):
    handle = client.model("demo")
    x = np.random.default_rng(4).standard_normal((2, 64), dtype=np.float32)
    out = np.empty((2, 10), np.float32)
    assert handle.infer(x, out=out) is out
    np.testing.assert_array_equal(out, handle(x))
    with pytest.raises(InvalidInput, match=r"out\['y'\] is float32\[3, 10\]"):
        handle.infer(x, out=np.empty((3, 10), np.float32))
    with pytest.raises(InvalidInput, match="unknown output"):
        client.infer("demo", x, out={"nope": out})


def test_zero_copy_views(client):
    session = create_session(builtin_model_path("demo"))
    handle = client.model("demo")
    slots = handle.zero_copy_inputs({"x": (3, 64)})
    x = np.random.default_rng(5).standard_normal((3, 64), dtype=np.float32)
    slots["x"][...] = x
    out = handle.run_zero_copy()
    np.testing.assert_array_equal(out["y"], session.run(None, {"x": x})[0])
    with pytest.raises(ValueError):
        out["y"][0, 0] = 1.0  # outputs are read-only views
    slots["x"][...] = 0  # the same slots run again without a new call to zero_copy_inputs
    np.testing.assert_array_equal(handle.run_zero_copy()["y"], session.run(None, {"x": x * 0})[0])


@pytest.mark.parametrize("shape, message", [
    ((1, 65), r"input 'x' expects float32\[\?,64\], got \[1,65\] \(dimension 1 must be 64\)"),
    ((65, 64), r"input 'x' has batch 65; model 'demo' accepts at most 64"),
    ((0, 64), r"input 'x': dimension 0 is 0; dynamic dimensions must be at least 1"),
    ((1, 64, 1), r"input 'x' expects float32\[\?,64\] \(rank 2\), got \[1,64,1\] \(rank 3\)"),
    (("one", 64), r"input 'x': the shape must be a tuple of ints"),
])
def test_zero_copy_shapes_are_checked_when_the_views_are_made(client, shape, message):
    session = create_session(builtin_model_path("demo"))
    handle = client.model("demo")
    with pytest.raises(InvalidInput, match=message):
        handle.zero_copy_inputs({"x": shape})
    assert "no region" in repr(handle)  # refused before anything was leased
    slots = handle.zero_copy_inputs({"x": (2, 64)})
    x = np.random.default_rng(6).standard_normal((2, 64), dtype=np.float32)
    slots["x"][...] = x
    with pytest.raises(InvalidInput, match=message):
        handle.zero_copy_inputs({"x": shape})
    # The views made before the refused call are still the ones that run.
    np.testing.assert_array_equal(handle.run_zero_copy()["y"], session.run(None, {"x": x})[0])


def test_zero_copy_unknown_input_name_is_refused_with_the_model_inputs(client):
    with pytest.raises(InvalidInput, match=r"model 'demo' has no input\(s\) \['nope'\]; its inputs are: x"):
        client.model("demo").zero_copy_inputs({"nope": (1, 64)})


def test_zero_copy_views_that_needed_a_larger_region_run_at_once(client):
    """The region grows for a larger batch; the views made with it run without a second call."""
    session = create_session(builtin_model_path("demo"))
    handle = client.model("demo")
    handle(np.ones((1, 64), np.float32))  # a region sized for batch 1
    small = handle._region.nbytes
    slots = handle.zero_copy_inputs({"x": (64, 64)})
    assert handle._region.nbytes > small
    x = np.random.default_rng(7).standard_normal((64, 64), dtype=np.float32)
    slots["x"][...] = x
    np.testing.assert_array_equal(handle.run_zero_copy()["y"], session.run(None, {"x": x})[0])


def test_a_refused_zero_copy_run_leaves_the_views_valid(client, daemon):
    """The daemon refuses a run (here: the model is not loaded); once it is back the same views
    run again, with what was written into them, without a new zero_copy_inputs()."""
    session = create_session(builtin_model_path("demo"))
    client.load("zc", "builtin:demo")
    with Client(daemon.endpoint, timeout=10) as admin:
        try:
            handle = client.model("zc")
            slots = handle.zero_copy_inputs({"x": (3, 64)})
            x = np.random.default_rng(8).standard_normal((3, 64), dtype=np.float32)
            slots["x"][...] = x
            expected = session.run(None, {"x": x})[0]
            np.testing.assert_array_equal(handle.run_zero_copy()["y"], expected)
            admin.unload("zc")
            with pytest.raises(UnknownModel, match="zc"):
                handle.run_zero_copy()
            with pytest.raises(UnknownModel, match="zc"):  # still the daemon's answer, not the SDK's
                handle.run_zero_copy()
            admin.load("zc", "builtin:demo")
            np.testing.assert_array_equal(handle.run_zero_copy()["y"], expected)
        finally:
            if "zc" in {m.name for m in admin.models(wait=False)}:
                admin.unload("zc")


def test_a_handle_is_cached_and_its_context_manager_releases_its_region(client):
    x = np.random.default_rng(9).standard_normal((1, 64), dtype=np.float32)
    regions = client.status().regions
    with client.model("demo") as handle:
        assert client.model("demo") is handle  # the cache: one handle, one region per client
        expected = handle(x)
        slots = handle.zero_copy_inputs()
        assert client.status().regions == regions + 1
        text = repr(handle)
        assert text.startswith("<ModelHandle 'demo' (onnxruntime)"), text
        assert "in x float32[?,64]" in text and "out y float32[?,10]" in text, text
        assert "max_batch 64" in text and f"region {handle._region.name}" in text, text
    assert client.status().regions == regions
    assert "no region" in repr(handle)
    slots["x"][...] = 0  # the old views are plain memory now, no longer the daemon's region
    with pytest.raises(InvalidInput, match="no longer valid: the handle was closed; call zero_copy_inputs"):
        handle.run_zero_copy()
    # Closing a cached handle leaves it the cached one, and it works again: it leases anew.
    again = client.model("demo")
    assert again is handle
    np.testing.assert_array_equal(again(x), expected)
    assert client.status().regions == regions + 1


@pytest.mark.parametrize("endpoint, message", [
    ("tcp://127.0.0.1:99999", r"the port must be a number 1\.\.65535"),
    ("http://localhost:8000", r"the scheme must be ipc:// .* or tcp://"),
    ("ipc://relative.sock", r"must be absolute"),
])
def test_client_refuses_a_bad_endpoint_when_it_is_made(endpoint, message):
    with pytest.raises(InvalidEndpoint, match=message) as e:
        Client(endpoint, connect_timeout=0.1)
    assert isinstance(e.value, EndpointError) and isinstance(e.value, TrtdError)


def test_client_names_trtd_endpoint_when_the_bad_endpoint_came_from_it(monkeypatch):
    monkeypatch.setenv("TRTD_ENDPOINT", "tcp://127.0.0.1:0")
    with pytest.raises(InvalidEndpoint, match=r"random port.*\(from TRTD_ENDPOINT\)"):
        Client(connect_timeout=0.1)


def test_multi_input_multi_output_and_growing_data_dependent_output(client, two_by_two):
    client.load("two_by_two", str(two_by_two), max_batch=2)
    try:
        a = np.ones((1, WIDE), np.float32)
        b = np.arange(WIDE, dtype=np.float32)[None]
        out = client.infer("two_by_two", {"a": a, "b": b})
        np.testing.assert_array_equal(out["sum"], a + b)
        assert out["where"].shape == (2, WIDE)  # 1.6 MB: the SDK grew the area and retried
        a[0, ::2] = -1
        out = client.model("two_by_two")((a, b))
        assert out["where"].shape == (2, WIDE // 2)
        with pytest.raises(InvalidInput, match="takes 2 inputs"):
            client.infer("two_by_two", a)
    finally:
        client.unload("two_by_two")
    with pytest.raises(UnknownModel):
        client.infer("two_by_two", {"a": a, "b": b})


def test_threads_share_one_client(daemon):
    session = create_session(builtin_model_path("demo"))
    with Client(daemon.endpoint, timeout=30) as c:
        def work(seed):
            rng = np.random.default_rng(seed)
            for _ in range(50):
                x = rng.standard_normal((1 + seed % 3, 64), dtype=np.float32)
                np.testing.assert_array_equal(c.infer("demo", x), session.run(None, {"x": x})[0])

        run_threads(work, [(i,) for i in range(4)])


def test_timeout_then_late_reply_is_not_taken_for_the_next_answer(client):
    x = np.random.default_rng(9).standard_normal((1, 1, 128, 256, 256), dtype=np.float32)
    handle = client.model("volume3d")
    with pytest.raises(DaemonTimeout, match="within"):
        handle.infer(x, timeout=0.0005)
    y = handle(np.zeros_like(x))
    np.testing.assert_allclose(y, create_session(builtin_model_path("volume3d")).run(None, {"x": np.zeros_like(x)})[0])
