"""bind_request in-process: real models (ONNX Runtime), a real shared-memory region, typed requests.

Every refusal is checked for its code and for a message that names the tensor and says what was
expected and what came; an accepted request gives bindings at region.address + offset, and running
them writes the model's answer where the request said.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from trtd.protocol import ALIGNMENT, ErrorCode, ProtocolError, messages as m

from trtd.daemon.config.settings import ModelConfig
from trtd.daemon.core.binding import bind_request
from trtd.daemon.core.regions import RegionLimits, RegionRegistry
from trtd.daemon.running.executor import Job
from trtd.daemon.running.finished import CompletionQueue
from trtd.daemon.running.registry import ModelRegistry
from trtd.daemon.system.cuda import HostPinning

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from trtd.daemon.backends.onnxruntime import create_session  # noqa: E402
from trtd.daemon.builtin.onnx_models import builtin_model_path  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform == "win32" or not Path("/dev/shm").is_dir(),
                                reason="POSIX shared memory under /dev/shm")

REGION_BYTES = 64 * 1024
_prefixes = itertools.count()


def _two_in_two_out(path: Path) -> Path:
    """a, b: float32[batch,4] -> sum = a + b, prod = a * b (both float32[batch,4])."""
    helper, tp = onnx.helper, onnx.TensorProto
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Mul", ["a", "b"], ["prod"])],
        "two",
        [helper.make_tensor_value_info(n, tp.FLOAT, ["batch", 4]) for n in ("a", "b")],
        [helper.make_tensor_value_info(n, tp.FLOAT, ["batch", 4]) for n in ("sum", "prod")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def _data_dependent(path: Path) -> Path:
    """x: float32[8] -> idx = NonZero(x): int64[1,?], a shape only the data decides."""
    helper, tp = onnx.helper, onnx.TensorProto
    graph = helper.make_graph(
        [helper.make_node("NonZero", ["x"], ["idx"])], "nz",
        [helper.make_tensor_value_info("x", tp.FLOAT, [8])],
        [helper.make_tensor_value_info("idx", tp.INT64, [1, None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> a ready ServedModel: "m" (builtin demo: x float32[?,64] -> y float32[?,10],
    max_batch 64), "two" (two inputs, two outputs) and "nz" (a data-dependent output)."""
    folder = tmp_path_factory.mktemp("binding-models")
    completions = CompletionQueue()
    registry = ModelRegistry(completions, HostPinning())
    configs = [ModelConfig(name="m", path="builtin:demo"),
               ModelConfig(name="two", path=str(_two_in_two_out(folder / "two.onnx"))),
               ModelConfig(name="nz", path=str(_data_dependent(folder / "nz.onnx")))]
    made = {}
    try:
        for config in configs:
            model = registry.create(config)
            made[config.name] = model
            assert model.state == "ready", model.error
        yield made
    finally:
        for model in made.values():
            if model.executor is not None:
                model.executor.close()
            if model.backend is not None:
                model.backend.close()
        completions.close()


@pytest.fixture(scope="module")
def region():
    prefix = f"trtdut{os.getpid()}b{next(_prefixes)}_"
    registry = RegionRegistry(prefix, RegionLimits(1 << 20, 4, 1 << 22))
    leased = registry.lease(1, REGION_BYTES)
    yield leased
    registry.close_all()
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]


@pytest.fixture(scope="module")
def demo(models):
    return models["m"]


@pytest.fixture(scope="module")
def two(models):
    return models["two"]


def _x(offset=0, dtype="float32", shape=(1, 64), nbytes=None, name="x"):
    n = nbytes if nbytes is not None else int(np.prod(shape)) * np.dtype(dtype).itemsize
    return m.InputRef(name=name, dtype=dtype, shape=list(shape), offset=offset, nbytes=n)


def _y(offset=512, nbytes=40, name="y"):
    return m.OutputRef(name=name, offset=offset, nbytes=nbytes)


def _infer(inputs, outputs, model="m", region_name="r"):
    return m.Infer(client_id=1, model=model, region=region_name, token="t", inputs=inputs, outputs=outputs)


def _refused(code: ErrorCode, request, model, region) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        bind_request(request, model, region)
    assert info.value.code == code, (info.value.code, info.value.message)
    return info.value


def _pair(batch_a=1, batch_b=1, outputs=None):
    """Inputs a, b (float32[batch,4] = 16 bytes a row) at 0 and 256; outputs at 512 and 768."""
    inputs = [_x(0, shape=(batch_a, 4), name="a"), _x(256, shape=(batch_b, 4), name="b")]
    if outputs is None:
        outputs = [_y(512, 64, "sum"), _y(768, 64, "prod")]
    return inputs, outputs


# -- an accepted request ----------------------------------------------------------------------------


def test_a_valid_request_binds_each_tensor_at_the_region_address_plus_its_offset(demo, region):
    inputs, outputs = bind_request(_infer([_x(offset=1024, shape=(3, 64))], [_y(offset=2048, nbytes=120)]),
                                   demo, region)
    [x], [y] = inputs, outputs
    assert (x.name, x.dtype, x.shape, x.address, x.nbytes) == (
        "x", np.dtype(np.float32), (3, 64), region.address + 1024, 3 * 64 * 4)
    assert (y.name, y.dtype, y.shape, y.address, y.nbytes) == (
        "y", np.dtype(np.float32), (3, 10), region.address + 2048, 120)


def test_an_output_area_larger_than_needed_keeps_its_capacity(demo, region):
    [_], [y] = bind_request(_infer([_x()], [_y(nbytes=4096)]), demo, region)
    assert y.shape == (1, 10) and y.nbytes == 4096


def test_outputs_are_bound_in_the_order_the_request_names_them(two, region):
    inputs, outputs = _pair(outputs=[_y(768, 64, "prod"), _y(512, 64, "sum")])
    bound_in, bound_out = bind_request(_infer(inputs[::-1], outputs, "two"), two, region)
    assert [b.name for b in bound_in] == ["b", "a"]
    assert [(b.name, b.address) for b in bound_out] == [("prod", region.address + 768),
                                                        ("sum", region.address + 512)]


def test_the_bindings_run_and_write_the_answer_where_the_request_said(demo, region):
    x = np.random.default_rng(3).standard_normal((2, 64), dtype=np.float32)
    region.view[4096:4096 + x.nbytes] = x.reshape(-1).view(np.uint8)
    inputs, outputs = bind_request(_infer([_x(4096, shape=(2, 64))], [_y(8192, 80)]), demo, region)
    job = Job(identity=b"conn", request_id=1, model=demo, region=region, inputs=inputs, outputs=outputs,
              received_ns=time.perf_counter_ns())
    done = demo.executor.submit(job)  # one instance: runs inline, here
    assert done.error is None and done.shapes == {"y": (2, 10)}
    expected = create_session(builtin_model_path("demo")).run(None, {"x": x})[0]
    got = region.view[8192:8192 + 80].view(np.float32).reshape(2, 10)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_an_output_whose_shape_the_data_decides_is_bound_without_a_shape(models, region):
    request = _infer([_x(0, shape=(8,))], [_y(256, nbytes=8, name="idx")], model="nz")
    [_], [idx] = bind_request(request, models["nz"], region)
    assert idx.shape is None and idx.nbytes == 8  # any capacity: only running it can tell


def test_an_empty_output_area_overlaps_nothing(models, region):
    request = _infer([_x(0, shape=(8,))], [_y(0, nbytes=0, name="idx")], model="nz")  # at x's offset
    [_], [idx] = bind_request(request, models["nz"], region)
    assert idx.address == region.address and idx.nbytes == 0


def test_both_outputs_of_a_two_output_model_land_at_their_offsets(two, region):
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.full((2, 4), 3, dtype=np.float32)
    region.view[12288:12288 + 32] = a.reshape(-1).view(np.uint8)
    region.view[12544:12544 + 32] = b.reshape(-1).view(np.uint8)
    request = _infer([_x(12288, shape=(2, 4), name="a"), _x(12544, shape=(2, 4), name="b")],
                     [_y(13056, 32, "prod"), _y(12800, 32, "sum")], "two")
    inputs, outputs = bind_request(request, two, region)
    job = Job(identity=b"conn", request_id=2, model=two, region=region, inputs=inputs, outputs=outputs,
              received_ns=time.perf_counter_ns())
    assert two.executor.submit(job).error is None
    np.testing.assert_array_equal(region.view[12800:12832].view(np.float32).reshape(2, 4), a + b)
    np.testing.assert_array_equal(region.view[13056:13088].view(np.float32).reshape(2, 4), a * b)


def test_a_data_dependent_output_too_large_for_its_area_fails_when_it_runs(models, region):
    # Binding cannot know its size (SPEC 6.5, rule 10): the backend finds out, the request fails.
    nz = models["nz"]
    region.view[16384:16384 + 32] = np.ones(8, np.float32).view(np.uint8)  # 8 non-zeros: int64[1,8]
    inputs, outputs = bind_request(_infer([_x(16384, shape=(8,))], [_y(16640, 8, "idx")], "nz"), nz, region)
    job = Job(identity=b"conn", request_id=3, model=nz, region=region, inputs=inputs, outputs=outputs,
              received_ns=time.perf_counter_ns())
    done = nz.executor.submit(job)
    assert done.error.code == ErrorCode.OUTPUT_TOO_LARGE
    assert done.error.details == {"output": "idx", "needed": 64, "capacity": 8}


# -- inputs -----------------------------------------------------------------------------------------


def test_an_unknown_input_is_invalid_and_the_models_inputs_are_listed(demo, region):
    error = _refused(ErrorCode.INVALID_TENSOR, _infer([_x(name="z")], [_y()]), demo, region)
    assert "'z'" in error.message and "'m'" in error.message and "inputs are: x" in error.message


def test_an_input_given_twice_is_invalid(demo, region):
    error = _refused(ErrorCode.INVALID_TENSOR, _infer([_x(0), _x(256)], [_y(1024)]), demo, region)
    assert "'x' is given twice" in error.message


def test_a_wrong_dtype_is_invalid_with_expected_and_got(demo, region):
    error = _refused(ErrorCode.INVALID_TENSOR, _infer([_x(dtype="float64")], [_y(1024)]), demo, region)
    assert error.message == "input 'x' expects float32[?,64], got float64[1,64]"
    assert error.details == {"expected": "float32", "got": "float64"}


def test_a_dtype_the_protocol_does_not_know_is_invalid_and_quoted(demo, region):
    request = _infer([m.InputRef(name="x", dtype="complex64", shape=[1, 64], offset=0, nbytes=512)], [_y(1024)])
    error = _refused(ErrorCode.INVALID_TENSOR, request, demo, region)
    assert "'complex64'[1,64]" in error.message and "float32[?,64]" in error.message


def test_a_wrong_rank_is_invalid_with_both_ranks(demo, region):
    error = _refused(ErrorCode.INVALID_TENSOR, _infer([_x(shape=(64,))], [_y()]), demo, region)
    assert error.message == "input 'x' expects float32[?,64] (rank 2), got float32[64] (rank 1)"


def test_a_wrong_fixed_dimension_is_invalid_naming_it(demo, region):
    error = _refused(ErrorCode.INVALID_TENSOR, _infer([_x(shape=(1, 65))], [_y(1024)]), demo, region)
    assert error.message == "input 'x' expects float32[?,64], got float32[1,65] (dimension 1 must be 64)"


def test_a_batch_of_zero_is_invalid(demo, region):
    error = _refused(ErrorCode.INVALID_TENSOR, _infer([_x(shape=(0, 64))], [_y()]), demo, region)
    assert "'x'" in error.message and "dimension 0 is 0" in error.message


def test_a_batch_over_max_batch_is_invalid(demo, region):
    assert demo.backend.max_batch == 64
    request = _infer([_x(shape=(65, 64))], [_y(offset=32768, nbytes=65 * 40)])
    error = _refused(ErrorCode.INVALID_TENSOR, request, demo, region)
    assert error.message == "input 'x' has batch 65; model 'm' accepts at most 64"


def test_a_batch_of_max_batch_is_accepted(demo, region):
    request = _infer([_x(shape=(64, 64))], [_y(offset=32768, nbytes=64 * 40)])
    assert bind_request(request, demo, region)[1][0].shape == (64, 10)


@pytest.mark.parametrize("nbytes", [255, 257, 0])
def test_an_nbytes_that_is_not_the_shapes_is_invalid(demo, region, nbytes):
    error = _refused(ErrorCode.INVALID_TENSOR, _infer([_x(nbytes=nbytes)], [_y()]), demo, region)
    assert error.message == f"input 'x': float32[1,64] is 256 bytes, the request says {nbytes}"


def test_inputs_that_disagree_on_the_batch_are_invalid(two, region):
    inputs, outputs = _pair(batch_a=1, batch_b=2)
    error = _refused(ErrorCode.INVALID_TENSOR, _infer(inputs, outputs, "two"), two, region)
    assert "'a' has 1, 'b' has 2" in error.message


def test_a_batch_disagreement_names_the_inputs_and_their_batches(two, region):
    # binding.py's contract: "Every check names the tensor and says what was expected and what
    # came". With several inputs, the client must be told which one has the other batch.
    inputs, outputs = _pair(batch_a=1, batch_b=2)
    error = _refused(ErrorCode.INVALID_TENSOR, _infer(inputs, outputs, "two"), two, region)
    assert "'a'" in error.message and "'b'" in error.message, error.message


def test_a_missing_input_is_invalid_naming_it(two, region):
    inputs, outputs = _pair()
    error = _refused(ErrorCode.INVALID_TENSOR, _infer(inputs[:1], outputs, "two"), two, region)
    assert error.message == "missing input(s) 'b' for model 'two'"


def test_no_inputs_at_all_names_every_missing_one(two, region):
    error = _refused(ErrorCode.INVALID_TENSOR, _infer([], _pair()[1], "two"), two, region)
    assert "'a', 'b'" in error.message


# -- outputs ----------------------------------------------------------------------------------------


def test_no_outputs_is_invalid_and_lists_the_models_outputs(two, region):
    inputs, _ = _pair()
    error = _refused(ErrorCode.INVALID_TENSOR, _infer(inputs, [], "two"), two, region)
    assert "names no outputs" in error.message and "sum, prod" in error.message


def test_an_unknown_output_is_invalid_and_the_models_outputs_are_listed(demo, region):
    error = _refused(ErrorCode.INVALID_TENSOR, _infer([_x()], [_y(name="logits")]), demo, region)
    assert "'logits'" in error.message and "outputs are: y" in error.message


def test_an_output_given_twice_is_invalid(demo, region):
    error = _refused(ErrorCode.INVALID_TENSOR, _infer([_x()], [_y(512), _y(1024)]), demo, region)
    assert "'y' is given twice" in error.message


def test_an_output_area_too_small_is_output_too_large_with_needed_and_capacity(demo, region):
    error = _refused(ErrorCode.OUTPUT_TOO_LARGE, _infer([_x(shape=(2, 64))], [_y(nbytes=79)]), demo, region)
    assert error.details == {"output": "y", "needed": 80, "capacity": 79}
    assert error.message == ("output 'y' will be float32[2,10] = 80 bytes, but its area holds 79; "
                             "give it at least 80 bytes")


# -- bounds, alignment, overlap ---------------------------------------------------------------------


@pytest.mark.parametrize("offset, shape", [
    (REGION_BYTES, (1, 64)),         # starts at the end
    (REGION_BYTES - 256, (2, 64)),   # starts inside, 512 bytes from 256 before the end
    (-256, (1, 64)),                 # before the start
])
def test_an_input_outside_the_region_is_out_of_bounds(demo, region, offset, shape):
    request = _infer([_x(offset=offset, shape=shape)], [_y(1024)])
    error = _refused(ErrorCode.OUT_OF_BOUNDS, request, demo, region)
    nbytes = shape[0] * 256
    assert error.message == (f"input 'x' spans bytes [{offset}, {offset + nbytes}) but region "
                             f"{region.name!r} holds {REGION_BYTES} bytes")
    assert error.details == {"offset": offset, "nbytes": nbytes, "region_nbytes": REGION_BYTES}


def test_an_input_ending_at_the_regions_end_is_inside(demo, region):
    request = _infer([_x(offset=REGION_BYTES - 256)], [_y(0)])
    assert bind_request(request, demo, region)[0][0].address == region.address + REGION_BYTES - 256


def test_an_output_outside_the_region_is_out_of_bounds(demo, region):
    error = _refused(ErrorCode.OUT_OF_BOUNDS, _infer([_x()], [_y(REGION_BYTES - 256, 512)]), demo, region)
    assert "output 'y'" in error.message
    assert error.details == {"offset": REGION_BYTES - 256, "nbytes": 512, "region_nbytes": REGION_BYTES}


def test_a_negative_output_capacity_is_out_of_bounds(demo, region):
    error = _refused(ErrorCode.OUT_OF_BOUNDS, _infer([_x()], [_y(512, -40)]), demo, region)
    assert "output 'y'" in error.message


@pytest.mark.parametrize("offset", [1, 64, ALIGNMENT - 1, ALIGNMENT + 4])
def test_a_misaligned_input_offset_is_out_of_bounds(demo, region, offset):
    error = _refused(ErrorCode.OUT_OF_BOUNDS, _infer([_x(offset=offset)], [_y(1024)]), demo, region)
    assert error.message == f"input 'x' offset {offset} is not a multiple of {ALIGNMENT}"
    assert error.details == {}


def test_a_misaligned_output_offset_is_out_of_bounds(demo, region):
    error = _refused(ErrorCode.OUT_OF_BOUNDS, _infer([_x()], [_y(offset=520)]), demo, region)
    assert error.message == f"output 'y' offset 520 is not a multiple of {ALIGNMENT}"


def test_a_misaligned_empty_output_is_out_of_bounds_too(models, region):
    request = _infer([_x(0, shape=(8,))], [_y(300, nbytes=0, name="idx")], model="nz")
    _refused(ErrorCode.OUT_OF_BOUNDS, request, models["nz"], region)


def test_an_output_over_an_input_is_overlap_naming_both(demo, region):
    error = _refused(ErrorCode.OVERLAP, _infer([_x(0, shape=(2, 64))], [_y(256, 80)]), demo, region)
    assert "input 'x'" in error.message and "output 'y'" in error.message


def test_two_inputs_over_each_other_are_overlap(two, region):
    inputs = [_x(0, shape=(32, 4), name="a"), _x(256, shape=(32, 4), name="b")]  # 512 bytes each
    error = _refused(ErrorCode.OVERLAP, _infer(inputs, [_y(1024, 512, "sum"), _y(2048, 512, "prod")], "two"),
                     two, region)
    assert "input 'a'" in error.message and "input 'b'" in error.message


def test_two_outputs_over_each_other_are_overlap(two, region):
    inputs, _ = _pair()
    error = _refused(ErrorCode.OVERLAP, _infer(inputs, [_y(512, 512, "sum"), _y(768, 64, "prod")], "two"),
                     two, region)
    assert "output 'sum'" in error.message and "output 'prod'" in error.message


def test_an_overlap_is_judged_by_the_output_capacity_not_its_result(demo, region):
    # The result (40 bytes) would end before the input; the area given (4096) does not.
    error = _refused(ErrorCode.OVERLAP, _infer([_x(1024)], [_y(0, 4096)]), demo, region)
    assert "overlap" in error.message


def test_adjacent_ranges_do_not_overlap(two, region):
    inputs = [_x(0, shape=(16, 4), name="a"), _x(256, shape=(16, 4), name="b")]  # exactly 256 each
    outputs = [_y(512, 256, "sum"), _y(768, 256, "prod")]
    bound_in, bound_out = bind_request(_infer(inputs, outputs, "two"), two, region)
    assert [b.address - region.address for b in bound_in + bound_out] == [0, 256, 512, 768]


# -- the property -----------------------------------------------------------------------------------


_SLOTS = REGION_BYTES // ALIGNMENT
_FLAWS = ("input names", "batch", "nbytes", "dtype", "output names", "capacity", "offsets")


@st.composite
def _requests(draw):
    """Requests to model "two" (a, b: float32[batch,4]) that are right but for a few flaws; the
    right offsets are aligned and packed in the first 4 KiB, so ranges meet and often overlap."""
    flaws = draw(st.sets(st.sampled_from(_FLAWS), max_size=3))

    def value(flaw, right, wrong):
        return draw(wrong) if flaw in flaws and draw(st.booleans()) else right

    def offset():
        wrong = st.one_of(st.integers(_SLOTS - 4, _SLOTS + 1).map(lambda k: k * ALIGNMENT),
                          st.integers(-512, REGION_BYTES + 512))
        return value("offsets", draw(st.integers(0, 15)) * ALIGNMENT, wrong)

    batch = draw(st.integers(1, 16))
    names = value("input names", draw(st.permutations(["a", "b"])),
                  st.sampled_from([["a"], ["b"], ["a", "a"], ["a", "c"], []]))
    inputs = []
    for name in names:
        rows = value("batch", batch, st.integers(0, 80))
        inputs.append(m.InputRef(name=name, dtype=value("dtype", "float32", st.sampled_from(["float16", "int32"])),
                                 shape=[rows, 4], offset=offset(),
                                 nbytes=value("nbytes", rows * 16, st.integers(-16, 4096))))
    out_names = value("output names", draw(st.lists(st.sampled_from(["sum", "prod"]), min_size=1,
                                                    max_size=2, unique=True)),
                      st.lists(st.sampled_from(["sum", "prod", "y"]), max_size=3))
    outputs = [m.OutputRef(name=name, offset=offset(),
                           nbytes=value("capacity", draw(st.integers(batch * 16, 1024)),
                                        st.integers(-16, batch * 16)))
               for name in out_names]
    return _infer(inputs, outputs, "two")


@settings(max_examples=400, deadline=None)
@given(request=_requests())
def test_every_accepted_request_lies_inside_the_region_with_disjoint_ranges(two, region, request):
    try:
        inputs, outputs = bind_request(request, two, region)
    except ProtocolError:
        return
    spans = []
    for binding in inputs + outputs:
        offset = binding.address - region.address
        assert offset % ALIGNMENT == 0
        assert 0 <= offset and binding.nbytes >= 0 and offset + binding.nbytes <= region.nbytes
        if binding.nbytes:
            spans.append((offset, offset + binding.nbytes))
    spans.sort()
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end <= start, spans
    for binding in outputs:
        if binding.shape is not None:
            assert int(np.prod(binding.shape)) * binding.dtype.itemsize <= binding.nbytes


# -- the plan cache (bind_cached): a hit is what binding again would return ---------------------

def test_a_repeated_layout_is_looked_up_not_rebound(demo, region):
    from trtd.daemon.core.binding import bind_cached

    region.plans.clear()
    request = _infer([_x()], [_y()], "m")
    first = bind_cached(request, demo, region)
    again = bind_cached(_infer([_x()], [_y()], "m"), demo, region)  # a new, equal message
    assert again[0] is first[0] and again[1] is first[1]
    assert first == bind_request(request, demo, region)


def test_a_changed_layout_is_checked_again_and_refused_when_wrong(demo, region):
    from trtd.daemon.core.binding import bind_cached

    region.plans.clear()
    bind_cached(_infer([_x()], [_y()], "m"), demo, region)
    with pytest.raises(ProtocolError) as e:  # the same request, but its output overlaps its input
        bind_cached(_infer([_x()], [_y(offset=0)], "m"), demo, region)
    assert e.value.code == ErrorCode.OVERLAP


def test_a_new_backend_for_the_model_misses_the_cache(demo, region):
    from types import SimpleNamespace

    from trtd.daemon.core.binding import bind_cached

    region.plans.clear()
    request = _infer([_x()], [_y()], "m")
    first = bind_cached(request, demo, region)
    swapped = SimpleNamespace(**{name: getattr(demo, name) for name in ("name", "inputs", "outputs")},
                              backend=SimpleNamespace(max_batch=demo.backend.max_batch,
                                                      output_shapes=demo.backend.output_shapes))
    again = bind_cached(request, swapped, region)  # what a swap or a reload looks like to binding
    assert again[0] is not first[0] and again == first
