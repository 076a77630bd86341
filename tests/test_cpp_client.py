"""The C++ client (sdk/cpp) built with CMake and run against real daemons, beside the Python SDK.

The build runs once per session (the README's commands: `cmake -S sdk/cpp -B BUILD`, `cmake
--build BUILD`), then:

- the golden-vector CTest decodes and re-encodes protocol/golden byte for byte;
- tests/… drive sdk/cpp/tests/e2e_driver.cpp (a trtd::Client behind JSON lines) against a real
  `trtd serve` and compare what it does with what the Python SDK does on the same inputs: outputs
  byte for byte on every built-in model and every path, and for every bad input a C++ caller can
  produce, the same exception class, code and message;
- a killed C++ client's region is reclaimed, a restarted daemon is registered with again, a TCP
  client finds its connection token and keeps its leases with heartbeats;
- the example program runs, built in the tree and against the installed package (find_package),
  and a project that add_subdirectory()s sdk/cpp builds and links.

Where cmake, a compiler or the headers are missing these tests skip and say which Debian packages
to install; with TRTD_REQUIRE_CPP=1 (CI sets it in .ci/run) that skip is a failure instead.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest

from daemon_process import serving, shm_names, start_daemon, wait_until
from trtd.bench.lib import cpp_build
from trtd.daemon.backends.onnxruntime import create_session
from trtd.daemon.builtin.onnx_models import builtin_model_path
from trtd.protocol import ErrorCode, ProtocolError, decode_reply, messages as m
from trtd.protocol.endpoint import EndpointError, validate_endpoint
from trtd.sdk import Client, TrtdError
from trtd.sdk import errors as sdk_errors

REPO = Path(__file__).resolve().parent.parent
REQUIRE = os.environ.get("TRTD_REQUIRE_CPP") == "1"


# -- the build, once per session --------------------------------------------------------------------


@pytest.fixture(scope="session")
def cpp(tmp_path_factory) -> Path:
    """The build directory of sdk/cpp (library, tests, example, benchmark), built once."""
    # TRTD_CPP_BUILD_DIR: a build folder to reuse (and update incrementally) across sessions.
    given = os.environ.get("TRTD_CPP_BUILD_DIR")
    folder = Path(given) if given else tmp_path_factory.mktemp("cpp-build")
    try:
        cpp_build.configure(cpp_build.source_dir(), folder)
        cpp_build.build(folder)
    except cpp_build.CppUnavailable as exc:
        if REQUIRE:
            pytest.fail(f"TRTD_REQUIRE_CPP=1 but {exc}")
        pytest.skip(str(exc))
    return folder


@pytest.fixture(scope="session")
def driver_path(cpp) -> Path:
    return cpp_build.executable(cpp, "trtd_e2e_driver")


class Driver:
    """One C++ client process: a command is a JSON line in, its answer a JSON line out."""

    def __init__(self, path: Path, env: dict | None = None):
        self.proc = subprocess.Popen([str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        assert self._next(30)["ready"]

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _next(self, timeout: float) -> dict:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the C++ driver did not answer within {timeout}s") from None
        if line is None:
            raise AssertionError(f"the C++ driver exited ({self.proc.wait()}): {self.proc.stderr.read()}")
        return json.loads(line)

    def send(self, cmd: str, **fields) -> dict:
        """fields go to the driver ("timeout" is the C++ call's); the answer is awaited for 60 s."""
        self.proc.stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
        self.proc.stdin.flush()
        return self._next(60)

    def ok(self, cmd: str, **fields) -> dict:
        answer = self.send(cmd, **fields)
        assert answer["ok"], answer
        return answer

    def error(self, cmd: str, **fields) -> dict:
        answer = self.send(cmd, **fields)
        assert not answer["ok"], answer
        assert answer["error"]["kind"] != "driver", answer
        return answer["error"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def new_driver(driver_path):
    """Drivers made in a test are closed (and waited for) when it ends."""
    made = []

    def make(env: dict | None = None) -> Driver:
        made.append(Driver(driver_path, env))
        return made[-1]

    yield make
    for d in made:
        d.close()


# -- tensors as files, and the Python SDK's verdicts ------------------------------------------------


class Files:
    """Inputs written as raw bytes for the driver; outputs read back from its files."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.n = 0

    def tensor(self, a: np.ndarray) -> dict:
        self.n += 1
        path = self.folder / f"in{self.n}.bin"
        np.ascontiguousarray(a).tofile(path)
        return {"dtype": a.dtype.name, "shape": list(a.shape), "file": str(path)}

    def inputs(self, arrays: dict) -> dict:
        return {name: self.tensor(a) for name, a in arrays.items()}

    def out_dir(self) -> str:
        self.n += 1
        folder = self.folder / f"out{self.n}"
        folder.mkdir()
        return str(folder)

    @staticmethod
    def read(spec: dict) -> np.ndarray:
        return np.fromfile(spec["file"], dtype=spec["dtype"]).reshape(spec["shape"])


@pytest.fixture
def files(tmp_path) -> Files:
    return Files(tmp_path / "tensors")


def py_kind(exc: TrtdError) -> str:
    """The C++ class name of a Python SDK exception (TrtdError is trtd::Error)."""
    return "Error" if type(exc) is TrtdError else type(exc).__name__


def py_error(call) -> dict:
    with pytest.raises(TrtdError) as e:
        call()
    return {"kind": py_kind(e.value), "code": e.value.code, "message": str(e.value)}


def same_error(cpp_error: dict, python: dict) -> None:
    assert (cpp_error["kind"], cpp_error["code"], cpp_error["message"]) == (
        python["kind"], python["code"], python["message"])


# -- no daemon needed -------------------------------------------------------------------------------


def test_golden_vectors_decode_and_reencode_byte_for_byte(cpp):
    result = subprocess.run(["ctest", "--test-dir", str(cpp), "-R", "golden_vectors", "--output-on-failure", "-V"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    count = len(json.loads((REPO / "protocol" / "golden" / "vectors.json").read_text()))
    assert f"{count} golden vectors: {count} decoded to their message and re-encoded byte for byte, 0 failures" \
        in result.stdout


def _drawn(lines: list[str]) -> list[str]:
    """A tree drawing reduced to names by depth: the Python bases in parentheses dropped."""
    return [re.sub(r" \([\w:, ]+\)", "", line).split(":")[0].rstrip() for line in lines]


def test_exception_tree_is_the_python_sdks(new_driver):
    driver = new_driver()
    answer = driver.ok("error_classes")
    classes, by_code = answer["classes"], answer["by_code"]
    python = {"Error" if c is TrtdError else c.__name__: c for c in _python_error_classes()}
    assert set(classes) == set(python)
    for name, info in classes.items():
        expected = sorted(other for other, c in python.items() if other != name and issubclass(python[name], c))
        assert sorted(info["parents"]) == expected, name
        assert info["code"] == (python[name].code if python[name] is not TrtdError else ""), name
    # Every protocol error code has its class, the Python SDK's.
    assert by_code == {code.value: py_kind(sdk_errors.error_from_reply(code.value, "m", {})) for code in ErrorCode
                       if code != ErrorCode.OVERLOADED} | {"OVERLOADED": "Overloaded"}
    stopping = driver.ok("raise_reply", code="OVERLOADED", message="stopping", details={"stopping": True})
    assert stopping["raised"]["kind"] == "DaemonStopping"
    newer = driver.ok("raise_reply", code="SOMETHING_NEW", message="from a newer daemon")
    assert (newer["raised"]["kind"], newer["raised"]["code"]) == ("ServerError", "SOMETHING_NEW")
    # The drawing in errors.hpp is the one in trtd.sdk.errors' docstring.
    header = (REPO / "sdk/cpp/include/trtd/errors.hpp").read_text().splitlines()
    start = header.index("//     Error (std::runtime_error)")
    cpp_lines = [line[len("//     "):] for line in header[start:] if line.startswith("//     ")]
    py_doc = sdk_errors.__doc__.splitlines()
    py_lines = [line[4:] for line in py_doc[py_doc.index("    TrtdError"):]]
    py_lines = py_lines[:py_lines.index("")]
    assert _drawn(cpp_lines) == _drawn(["Error"] + py_lines[1:])


def _python_error_classes() -> list[type]:
    found, pending = [], [TrtdError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


BAD_ENDPOINTS = ["tcp://127.0.0.1:99999", "http://localhost:8000", "ipc://relative.sock", "ipc://", "ipc://@abstract",
                 "tcp://127.0.0.1", "tcp://[::1]:5555", "tcp://*:5555", "tcp://127.0.0.1:0", "tcp://ünï:80",
                 "tcp://127.0.0.1:12a", "ipc:///" + "x" * 120, "tcp://host name:80"]


def test_endpoints_are_validated_in_the_python_sdks_words(new_driver):
    driver = new_driver()
    for endpoint in BAD_ENDPOINTS:
        with pytest.raises(EndpointError) as e:
            validate_endpoint(endpoint)
        error = driver.error("validate_endpoint", endpoint=endpoint)
        assert (error["kind"], error["message"]) == ("InvalidEndpoint", str(e.value)), endpoint
    for endpoint in ["ipc:///run/trtd/trtd.sock", "tcp://127.0.0.1:47810", "tcp://localhost:0080"]:
        assert driver.ok("validate_endpoint", endpoint=endpoint)["endpoint"] == validate_endpoint(endpoint)


def test_a_relative_runtime_dir_is_named_as_the_cause(new_driver):
    driver = new_driver({"TRTD_RUNTIME_DIR": "relative/run"})
    error = driver.error("validate_endpoint", endpoint="ipc://relative/run/trtd.sock")
    assert error["message"].startswith("TRTD_RUNTIME_DIR='relative/run' is a relative path")


@pytest.mark.parametrize("env", [
    {"TRTD_RUNTIME_DIR": "/tmp/trtd-cpp-test/run"},
    {"TRTD_RUNTIME_DIR": "", "XDG_RUNTIME_DIR": "/nonexistent-xdg"},
    {"TRTD_RUNTIME_DIR": "", "XDG_RUNTIME_DIR": "/tmp", "TRTD_ENDPOINT": "tcp://127.0.0.1:5999"},
])
def test_runtime_dir_endpoint_and_token_paths_are_the_python_sdks(new_driver, env):
    driver = new_driver(env)
    code = ("import json, sys; from trtd.protocol import endpoint as e; ep = sys.argv[1]; "
            "print(json.dumps({'runtime_dir': str(e.runtime_dir()), 'default_endpoint': e.default_endpoint(True), "
            "'resolved': e.resolve_endpoint(None, True), 'admin_token': str(e.token_path(ep, 'admin')), "
            "'connection_token': str(e.token_path(ep, 'connection')), "
            "'find_connection_token': str(e.find_token(ep, 'connection'))}))")
    for endpoint in ["tcp://127.0.0.1:47810", "ipc:///tmp/x/../y//d.sock"]:
        python = subprocess.run([sys.executable, "-c", code, endpoint], capture_output=True, text=True,
                                env={**os.environ, **env}, check=True)
        answer = driver.ok("paths", endpoint=endpoint)
        del answer["ok"]
        assert answer == json.loads(python.stdout), endpoint


def test_hello_reports_the_start_time_psutil_sees(new_driver):
    import psutil

    driver = new_driver()
    answer = driver.ok("process")
    assert answer["pid"] == driver.proc.pid
    assert abs(answer["start_time"] - psutil.Process(driver.proc.pid).create_time()) <= 0.05


def _lease_reply(**override) -> dict:
    reply = {"v": 1, "id": 7, "ok": True,
             "result": {"region": {"name": "trtd_1a2b3c4d_9f0e_1", "nbytes": 4096, "token": "ab" * 16}}}
    reply.update(override)
    return reply


def _region(**fields) -> dict:
    region = {"name": "trtd_1a2b3c4d_9f0e_1", "nbytes": 4096, "token": "ab" * 16}
    region.update(fields)
    return _lease_reply(result={"region": region})


HOSTILE_REPLIES = {
    "valid": msgpack.packb(_lease_reply()),
    "unknown keys are ignored": msgpack.packb(_lease_reply(extra={"x": [1, 2]}, result={
        "region": {"name": "r", "nbytes": 256, "token": "t", "later": 1}, "more": True})),
    "stale id": msgpack.packb(_lease_reply(id=6)),
    "error with id 0": msgpack.packb({"v": 1, "id": 0, "ok": False, "error": {
        "code": "BAD_MESSAGE", "message": "a request must be a msgpack map", "details": {}}}),
    "success with id 0 is stale": msgpack.packb(_lease_reply(id=0)),
    "integral float for an integer": msgpack.packb(_region(nbytes=4096.0)),
    "bool for an integer": msgpack.packb(_region(nbytes=True)),
    "nil for a string": msgpack.packb(_region(token=None)),
    "missing field": msgpack.packb(_lease_reply(result={"region": {"name": "r", "nbytes": 256}})),
    "result not a map": msgpack.packb(_lease_reply(result=[1])),
    "no ok is an error reply": msgpack.packb({"v": 1, "id": 7, "error": {"code": "INTERNAL", "message": "x"}}),
    "no ok and no error": msgpack.packb({"v": 1, "id": 7}),
    "details not a map": msgpack.packb({"v": 1, "id": 7, "ok": False,
                                        "error": {"code": "INTERNAL", "message": "x", "details": [1]}}),
    "not a map": msgpack.packb([1, 2, 3]),
    "trailing bytes": msgpack.packb(_lease_reply()) + b"\x00",
    "truncated": msgpack.packb(_lease_reply())[:-3],
    "a bin value": msgpack.packb(_region(token=b"\x01\x02"), use_bin_type=True),
    "an ext value": msgpack.packb(_region(token=msgpack.ExtType(1, b"xy"))),
    "a non-string key": msgpack.packb({"v": 1, "id": 7, "ok": True, 5: 1}, strict_types=False),
    "invalid UTF-8": msgpack.packb(_lease_reply()).replace(b"trtd_1a2b", b"trtd_\xff\xfe2b"),
}


@pytest.mark.parametrize("case", list(HOSTILE_REPLIES))
def test_replies_are_decoded_as_strictly_as_the_reference_decoder(new_driver, case):
    """The C++ codec on reply frames built with Python's msgpack: the same verdict as
    trtd.protocol.decode_reply, and for a field of the wrong type the same message."""
    frame = HOSTILE_REPLIES[case]
    try:
        reply = decode_reply(frame, m.Lease, 7)
        if reply is None:
            python = {"stale": True}
        elif reply.error is None:
            python = {"result": {"region": {"name": reply.result.region.name, "nbytes": reply.result.region.nbytes,
                                            "token": reply.result.region.token}}}
        else:
            python = {"error_reply": {"code": reply.error.code, "message": reply.error.message,
                                      "details": reply.error.details}}
    except ProtocolError as exc:
        python = {"decode_error": exc.message}
    answer = new_driver().ok("decode_reply", hex=frame.hex(), id=7)
    del answer["ok"]
    if "decode_error" in python and "field" not in python["decode_error"]:
        # Malformed msgpack: both refuse it, each in its library's words.
        assert "decode_error" in answer and answer["decode_error"].startswith(
            "reply is not a valid msgpack message within limits: ") or answer["decode_error"].startswith("a reply"), \
            answer
    else:
        assert answer == python


# -- against a daemon: every built-in model, every path ---------------------------------------------

BUILTINS = {"demo": (2, 64), "mlp": (3, 64), "nearzero224": (2, 3, 224, 224), "resnet18": (1, 3, 224, 224),
            "volume3d": (1, 1, 128, 256, 256)}


@pytest.fixture(scope="module")
def builtins_daemon(tmp_path_factory):
    """Every built-in model, with fast reclaim and the region limits of tests/conftest.py's daemon."""
    models = "".join(f"[models.{name}]\npath = \"builtin:{name}\"\n" for name in BUILTINS)
    with serving(tmp_path_factory.mktemp("cpp-daemon"),
                 "reclaim_interval_s = 0.2\nclient_timeout_s = 1.5\n"
                 f"max_region_bytes = {1 << 50}\nmax_bytes_per_client = {1 << 50}\nmax_regions_per_client = 16\n"
                 + models) as d:
        yield d


@pytest.fixture
def cpp_client(new_driver, builtins_daemon) -> Driver:
    driver = new_driver()
    driver.ok("connect", endpoint=builtins_daemon.endpoint, timeout=30)
    return driver


@pytest.fixture
def py_client(builtins_daemon):
    with Client(builtins_daemon.endpoint, timeout=30) as c:
        yield c


def test_models_status_and_reload_read_as_the_python_sdk_reads_them(cpp_client, py_client):
    from trtd.protocol.schema import to_wire

    assert cpp_client.ok("models")["models"] == [to_wire(info) for info in py_client.models()]
    status = cpp_client.ok("status")
    python = to_wire(py_client.status())
    assert set(status) - {"ok"} == set(python)
    assert (status["daemon_id"], status["pid"], [s["name"] for s in status["models"]]) == (
        python["daemon_id"], python["pid"], [s["name"] for s in python["models"]])
    reload = cpp_client.ok("reload")  # privileged: the admin token file
    assert sorted(reload["unchanged"]) == sorted(BUILTINS) and reload["loading"] == []


def test_threads_share_one_client(cpp_client, files):
    x = np.random.default_rng(4).standard_normal((3, 64), dtype=np.float32)
    answer = cpp_client.ok("threads", model="demo", inputs=files.inputs({"x": x}), threads=4, count=50)
    assert (answer["done"], answer["differ"], answer["errors"]) == (200, 0, [])


@pytest.mark.parametrize("name", list(BUILTINS))
def test_builtin_models_give_the_python_sdks_outputs(cpp_client, py_client, files, name):
    rng = np.random.default_rng(11)
    x = rng.standard_normal(BUILTINS[name], dtype=np.float32)
    expected = py_client.model(name).infer(x)
    expected = expected if isinstance(expected, dict) else {py_client.model(name).info.outputs[0].name: expected}
    got = cpp_client.ok("infer", model=name, inputs=files.inputs({"x": x}), out_dir=files.out_dir())
    assert set(got["outputs"]) == set(expected)
    for output, array in expected.items():
        np.testing.assert_array_equal(files.read(got["outputs"][output]), array)
    if name == "volume3d":
        return  # one 32 MiB round is enough for the big one
    # The zero-copy path: views into the region, filled by the driver, outputs read in place.
    views = cpp_client.ok("zero_copy_inputs", model=name, shapes={"x": list(x.shape)})["views"]
    assert views == {"x": {"dtype": "float32", "shape": list(x.shape)}}
    cpp_client.ok("fill_zero_copy", model=name, files={"x": files.tensor(x)["file"]})
    zero_copy = cpp_client.ok("run_zero_copy", model=name, out_dir=files.out_dir())["outputs"]
    for output, array in expected.items():
        np.testing.assert_array_equal(files.read(zero_copy[output]), array)


def test_every_path_and_batch_agrees_with_in_process_onnx_runtime(cpp_client, files):
    session = create_session(builtin_model_path("demo"))
    rng = np.random.default_rng(3)
    region = None
    for batch in (1, 7, 64, 2, 1):
        x = rng.standard_normal((batch, 64), dtype=np.float32)
        expected = session.run(None, {"x": x})[0]
        for path in ("copy", "call", "client"):
            got = cpp_client.ok("infer", model="demo", path=path, inputs=files.inputs({"x": x}), out_dir=files.out_dir())
            np.testing.assert_array_equal(files.read(got["outputs"]["y"]), expected)
        into = cpp_client.ok("infer", model="demo", path="into", inputs=files.inputs({"x": x}),
                             into={"y": {"dtype": "float32", "shape": [batch, 10]}}, out_dir=files.out_dir())
        assert into["outputs"]["y"]["into"] is True
        np.testing.assert_array_equal(files.read(into["outputs"]["y"]), expected)
        if batch == 64:
            region = got["region"]
    # The steady state keeps one region: the handle grew once, for batch 64, and kept it.
    assert got["region"] == region


def test_handle_is_cached_and_close_releases_its_region(cpp_client, files, py_client):
    x = np.ones((1, 64), np.float32)
    before = py_client.status().regions
    got = cpp_client.ok("infer", model="demo", inputs=files.inputs({"x": x}), out_dir=files.out_dir())
    assert got["region"] in shm_names() and py_client.status().regions == before + 1
    text = cpp_client.ok("describe_handle", model="demo")["text"]
    assert text == (f"<Model 'demo' (onnxruntime): in x float32[?,64]; out y float32[?,10], max_batch 64; "
                    f"region {got['region']} ({got['region_nbytes']} bytes)>")
    cpp_client.ok("zero_copy_inputs", model="demo")
    cpp_client.ok("model_close", model="demo")
    assert got["region"] not in shm_names() and py_client.status().regions == before
    assert cpp_client.ok("describe_handle", model="demo")["text"].endswith("; no region>")
    error = cpp_client.error("run_zero_copy", model="demo", out_dir=files.out_dir())
    assert error["kind"] == "InvalidInput"
    assert "no longer valid: the handle was closed; call zero_copy_inputs" in error["message"]
    again = cpp_client.ok("infer", model="demo", inputs=files.inputs({"x": x}), out_dir=files.out_dir())
    assert again["region"] != got["region"]  # it leased anew
    cpp_client.ok("close")
    assert again["region"] not in shm_names()  # goodbye released it at once


# -- bad input: the same error as the Python SDK ------------------------------------------------------

X1 = np.zeros((1, 64), np.float32)


@pytest.mark.parametrize("case, inputs", [
    ("dtype", {"x": np.zeros((1, 64), np.float64)}),
    ("rank", {"x": np.zeros((64,), np.float32)}),
    ("dimension", {"x": np.zeros((1, 63), np.float32)}),
    ("batch above max_batch", {"x": np.zeros((65, 64), np.float32)}),
    ("zero batch", {"x": np.zeros((0, 64), np.float32)}),
    ("unknown input", {"z": X1}),
    ("an input too many", {"x": X1, "extra": X1}),
    ("no input", {}),
    ("bool for float32", {"x": np.zeros((1, 64), np.bool_)}),
])
def test_bad_inputs_get_the_python_sdks_error(cpp_client, py_client, files, case, inputs):
    python = py_error(lambda: py_client.infer("demo", inputs))
    same_error(cpp_client.error("infer", model="demo", inputs=files.inputs(inputs), out_dir=files.out_dir()), python)
    # The daemon serves on, and the same C++ client gets right answers.
    got = cpp_client.ok("infer", model="demo", inputs=files.inputs({"x": X1}), out_dir=files.out_dir())
    np.testing.assert_array_equal(files.read(got["outputs"]["y"]), py_client.infer("demo", X1))


def test_unknown_model(cpp_client, py_client, files):
    same_error(cpp_client.error("infer", model="nope", inputs=files.inputs({"x": X1}), out_dir=files.out_dir()),
               py_error(lambda: py_client.infer("nope", X1)))


def test_a_negative_dimension_is_refused_before_sending(cpp_client, files):
    error = cpp_client.error("infer", model="demo", inputs={"x": {"dtype": "float32", "shape": [1, -64]}},
                             out_dir=files.out_dir())
    assert (error["kind"], error["message"]) == (
        "InvalidTensor", "input 'x': dimension 1 is -64; a tensor's dimensions cannot be negative")


def test_a_request_over_the_size_limit_is_refused_before_sending(cpp_client, py_client, files):
    many = {f"input_{i:04d}": X1 for i in range(3000)}
    python = py_error(lambda: py_client.infer("demo", many))
    assert "over the protocol's limit of 65536" in python["message"]
    inputs = files.inputs({"input_0000": X1})
    error = cpp_client.error("infer", model="demo", inputs={name: inputs["input_0000"] for name in many},
                             out_dir=files.out_dir())
    # The byte counts differ by the widths of ids and region names; the rest is the same.
    def sized(e):
        return {**e, "message": re.sub(r"request is \d+ bytes", "request is N bytes", e["message"])}
    same_error(sized(error), sized(python))
    got = cpp_client.ok("infer", model="demo", inputs=files.inputs({"x": X1}), out_dir=files.out_dir())
    assert files.read(got["outputs"]["y"]).shape == (1, 10)


def test_output_buffers_of_the_wrong_shape_or_name(cpp_client, py_client, files):
    x = np.ones((2, 64), np.float32)
    python = py_error(lambda: py_client.model("demo").infer(x, out=np.empty((3, 10), np.float32)))
    same_error(cpp_client.error("infer", model="demo", path="into", inputs=files.inputs({"x": x}),
                                into={"y": {"dtype": "float32", "shape": [3, 10]}}, out_dir=files.out_dir()), python)
    python = py_error(lambda: py_client.infer("demo", x, out={"nope": np.empty((2, 10), np.float32)}))
    same_error(cpp_client.error("infer", model="demo", path="into", inputs=files.inputs({"x": x}),
                                into={"nope": {"dtype": "float32", "shape": [2, 10]}}, out_dir=files.out_dir()), python)


@pytest.mark.parametrize("shape", [(1, 65), (65, 64), (0, 64), (1, 64, 1)])
def test_zero_copy_shapes_are_checked_in_the_python_sdks_words(cpp_client, py_client, files, shape):
    python = py_error(lambda: py_client.model("demo").zero_copy_inputs({"x": shape}))
    same_error(cpp_client.error("zero_copy_inputs", model="demo", shapes={"x": list(shape)}), python)
    assert cpp_client.ok("describe_handle", model="demo")["region"] == ""  # refused before anything was leased
    python = py_error(lambda: py_client.model("demo").zero_copy_inputs({"nope": (1, 64)}))
    same_error(cpp_client.error("zero_copy_inputs", model="demo", shapes={"nope": [1, 64]}), python)


def _x_ref(offset=0, shape=(1, 64), dtype="float32", nbytes=None):
    n = nbytes if nbytes is not None else int(np.prod(shape)) * np.dtype(dtype).itemsize
    return {"name": "x", "dtype": dtype, "shape": list(shape), "offset": offset, "nbytes": n}


def _y_ref(offset=512, nbytes=40):
    return {"name": "y", "offset": offset, "nbytes": nbytes}


LAYOUTS = {
    "input outside the region": ([_x_ref(offset=4096)], [_y_ref()]),
    "input straddling the end": ([_x_ref(offset=4096 - 128)], [_y_ref()]),
    "input far outside": ([_x_ref(offset=1 << 62)], [_y_ref()]),
    "output outside the region": ([_x_ref()], [_y_ref(offset=4096 - 256, nbytes=1024)]),
    "unaligned offset": ([_x_ref(offset=8)], [_y_ref()]),
    "overlap": ([_x_ref()], [_y_ref(offset=0)]),
    "output area too small": ([_x_ref(shape=(2, 64))], [_y_ref(nbytes=40)]),
    "nbytes not matching": ([_x_ref(nbytes=100)], [_y_ref()]),
    "missing input": ([], [_y_ref()]),
    "no outputs": ([_x_ref()], []),
    "zero batch": ([_x_ref(shape=(0, 64))], [_y_ref()]),
    "unknown output": ([_x_ref()], [{"name": "nope", "offset": 512, "nbytes": 40}]),
}


@pytest.mark.parametrize("case", list(LAYOUTS))
def test_bad_layouts_in_a_region_of_ones_own(cpp_client, py_client, case):
    """Client.infer_region: the caller's own layout in a leased region (the Python SDK's _call)."""
    inputs, outputs = LAYOUTS[case]
    region = py_client.lease(4096)
    python = py_error(lambda: py_client._call(m.Infer(
        client_id=py_client.client_id, model="demo", region=region.name, token=region.token,
        inputs=[m.InputRef(**i) for i in inputs], outputs=[m.OutputRef(**o) for o in outputs])))
    mine = cpp_client.ok("lease", nbytes=4096)["name"]
    error = cpp_client.error("infer_region", region=mine, model="demo", inputs=inputs, outputs=outputs)
    # Region names differ between the two clients' regions; everything else is the same.
    same_error({**error, "message": error["message"].replace(mine, region.name)}, python)
    if case == "output area too small":
        assert error["details"] == {"output": "y", "needed": 80, "capacity": 40}
    py_client.release(region)


def test_a_layout_that_fits_exactly_runs(cpp_client, files):
    x = np.random.default_rng(2).standard_normal((2, 64), dtype=np.float32)
    name = cpp_client.ok("lease", nbytes=4096)["name"]
    reply = cpp_client.ok("infer_region", region=name, model="demo", inputs=[_x_ref(shape=(2, 64))],
                          outputs=[_y_ref(nbytes=80)], write=[{"offset": 0, "file": files.tensor(x)["file"]}])
    assert reply["outputs"] == [{"name": "y", "dtype": "float32", "shape": [2, 10], "offset": 512, "nbytes": 80}]
    assert reply["timing"]["total_us"] >= reply["timing"]["compute_us"] > 0


def test_regions_of_others_forged_tokens_and_released_regions(cpp_client, py_client):
    theirs = py_client.lease(4096)
    # Another client with its own id and the stolen token: the region is not its lease.
    with Client(py_client.endpoint) as other:
        python = py_error(lambda: other._conn.call(m.Infer(
            client_id=other.client_id, model="demo", region=theirs.name, token=theirs.token,
            inputs=[m.InputRef(**_x_ref())], outputs=[m.OutputRef(**_y_ref())]), 5))
    cpp_client.ok("forge", region=theirs.name, nbytes=4096, token=theirs.token, **{"as": "stolen"})
    same_error(cpp_client.error("infer_region", region="stolen", model="demo", inputs=[_x_ref()], outputs=[_y_ref()]),
               python)
    assert python["code"] == "FORBIDDEN"
    mine = cpp_client.ok("lease", nbytes=4096)["name"]
    cpp_client.ok("forge", region=mine, nbytes=4096, token="0" * 32, **{"as": "forged"})
    forged = cpp_client.error("infer_region", region="forged", model="demo", inputs=[_x_ref()], outputs=[_y_ref()])
    own = py_client.lease(4096)
    expected = py_error(lambda: py_client._call(m.Infer(
        client_id=py_client.client_id, model="demo", region=own.name, token="0" * 32,
        inputs=[m.InputRef(**_x_ref())], outputs=[m.OutputRef(**_y_ref())])))
    same_error({**forged, "message": forged["message"].replace(mine, own.name)}, expected)
    # Released: the name is gone from /dev/shm and from the daemon.
    cpp_client.ok("release", region=mine)
    assert mine not in shm_names()
    released = cpp_client.error("infer_region", region=mine, model="demo", inputs=[_x_ref()], outputs=[_y_ref()])
    py_client.release(own)
    expected = py_error(lambda: py_client._call(m.Infer(
        client_id=py_client.client_id, model="demo", region=own.name, token=own.token,
        inputs=[m.InputRef(**_x_ref())], outputs=[m.OutputRef(**_y_ref())])))
    same_error({**released, "message": released["message"].replace(mine, own.name)}, expected)
    # The victim's region is untouched and still works for its owner.
    assert py_client._call(m.Infer(client_id=py_client.client_id, model="demo", region=theirs.name,
                                   token=theirs.token, inputs=[m.InputRef(**_x_ref())],
                                   outputs=[m.OutputRef(**_y_ref())])).outputs[0].shape == [1, 10]


def test_lease_limits(cpp_client, py_client):
    same_error(cpp_client.error("lease", nbytes=0), py_error(lambda: py_client.lease(0)))
    free = os.statvfs("/dev/shm").f_bavail * os.statvfs("/dev/shm").f_frsize
    before = shm_names()
    error = cpp_client.error("lease", nbytes=free + (1 << 30))
    assert (error["kind"], error["code"]) == ("NoSpace", "NO_SPACE") and "/dev/shm" in error["message"]
    assert shm_names() == before
    for _ in range(16):
        cpp_client.ok("lease", nbytes=256)
    python_quota = Client(py_client.endpoint)
    try:
        for _ in range(16):
            python_quota.lease(256)
        same_error(cpp_client.error("lease", nbytes=256), py_error(lambda: python_quota.lease(256)))
    finally:
        python_quota.close()


def test_a_tensor_larger_than_any_region_and_a_failed_model(tmp_path, new_driver, files):
    with serving(tmp_path / "small", f"max_region_bytes = {1 << 20}\n"
                 "[models.volume3d]\npath = \"builtin:volume3d\"\n"
                 "[models.broken]\npath = \"/nonexistent/model.onnx\"\n") as d:
        driver = new_driver()
        driver.ok("connect", endpoint=d.endpoint)
        x = np.zeros((1, 1, 128, 256, 256), np.float32)
        with Client(d.endpoint) as c:
            same_error(driver.error("infer", model="volume3d", inputs=files.inputs({"x": x}), out_dir=files.out_dir()),
                       py_error(lambda: c.infer("volume3d", x)))
            same_error(driver.error("infer", model="broken", inputs=files.inputs({"x": X1}), out_dir=files.out_dir()),
                       py_error(lambda: c.infer("broken", X1)))
            assert c.status().regions == 0


def test_timeout_then_late_reply_is_not_taken_for_the_next_answer(cpp_client, files):
    x = np.random.default_rng(9).standard_normal((1, 1, 128, 256, 256), dtype=np.float32)
    first = cpp_client.ok("infer", model="volume3d", inputs=files.inputs({"x": np.zeros_like(x)}),
                          out_dir=files.out_dir())
    error = cpp_client.error("infer", model="volume3d", inputs=files.inputs({"x": x}), out_dir=files.out_dir(),
                             timeout=0.0005)
    assert error["kind"] == "DaemonTimeout" and "within" in error["message"]
    got = cpp_client.ok("infer", model="volume3d", inputs=files.inputs({"x": np.zeros_like(x)}),
                        out_dir=files.out_dir())
    expected = create_session(builtin_model_path("volume3d")).run(None, {"x": np.zeros_like(x)})[0]
    np.testing.assert_allclose(files.read(got["outputs"]["y"]), expected)
    assert got["region"] != first["region"]  # the timed-out request's region was given up, never reused


def test_multi_input_multi_output_and_a_data_dependent_output_that_grows(cpp_client, py_client, files, tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    wide = 100_000
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Greater", ["a", "zero"], ["pos"]),
         helper.make_node("NonZero", ["pos"], ["where"])], "two_by_two",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", wide]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", wide])],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", wide]),
         helper.make_tensor_value_info("where", TensorProto.INT64, [2, "n"])],
        [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
    path = tmp_path / "two_by_two.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    loaded = cpp_client.ok("load", name="two_by_two", path=str(path), max_batch=2)  # the admin token file
    assert loaded["name"] == "two_by_two" and loaded["state"] == "ready"
    try:
        a = np.ones((1, wide), np.float32)
        b = np.arange(wide, dtype=np.float32)[None]
        got = cpp_client.ok("infer", model="two_by_two", inputs=files.inputs({"a": a, "b": b}), out_dir=files.out_dir())
        np.testing.assert_array_equal(files.read(got["outputs"]["sum"]), a + b)
        # 1.6 MB of indices: above the first guess of 1 MiB; the handle grew the area and retried.
        np.testing.assert_array_equal(files.read(got["outputs"]["where"]), np.stack(np.nonzero(a > 0)))
        a[0, ::2] = -1
        got = cpp_client.ok("infer", model="two_by_two", inputs=files.inputs({"a": a, "b": b}), out_dir=files.out_dir())
        assert files.read(got["outputs"]["where"]).shape == (2, wide // 2)
        python = py_error(lambda: py_client.model("two_by_two").infer({"a": a}))
        same_error(cpp_client.error("infer", model="two_by_two", inputs=files.inputs({"a": a}),
                                    out_dir=files.out_dir()), python)
        error = cpp_client.error("infer", model="two_by_two", path="call", inputs=files.inputs({"a": a}),
                                 out_dir=files.out_dir())
        assert error["kind"] == "InvalidInput" and "takes 2 inputs" in error["message"]
    finally:
        cpp_client.ok("unload", name="two_by_two")
    same_error(cpp_client.error("infer", model="two_by_two", inputs=files.inputs({"a": a, "b": b}),
                                out_dir=files.out_dir()),
               py_error(lambda: py_client.infer("two_by_two", {"a": a, "b": b})))


def test_a_refused_zero_copy_run_leaves_the_views_valid(cpp_client, py_client, files):
    session = create_session(builtin_model_path("demo"))
    cpp_client.ok("load", name="zc", path="builtin:demo")
    x = np.random.default_rng(8).standard_normal((3, 64), dtype=np.float32)
    expected = session.run(None, {"x": x})[0]
    try:
        cpp_client.ok("zero_copy_inputs", model="zc", shapes={"x": [3, 64]})
        cpp_client.ok("fill_zero_copy", model="zc", files={"x": files.tensor(x)["file"]})
        out = cpp_client.ok("run_zero_copy", model="zc", out_dir=files.out_dir())["outputs"]
        np.testing.assert_array_equal(files.read(out["y"]), expected)
        py_client.unload("zc")
        for _ in range(2):  # the daemon's answer each time, not the client's
            error = cpp_client.error("run_zero_copy", model="zc", out_dir=files.out_dir())
            assert error["kind"] == "UnknownModel" and "'zc'" in error["message"]
        py_client.load("zc", "builtin:demo")
        out = cpp_client.ok("run_zero_copy", model="zc", out_dir=files.out_dir())["outputs"]
        np.testing.assert_array_equal(files.read(out["y"]), expected)
    finally:
        if "zc" in {info.name for info in py_client.models(wait=False)}:
            py_client.unload("zc")


# -- clients that go away, daemons that restart ---------------------------------------------------------


@pytest.mark.parametrize("model, shape", [("demo", (1, 64)), ("volume3d", (1, 1, 128, 256, 256))])
def test_a_killed_cpp_client_has_its_region_reclaimed(new_driver, builtins_daemon, files, py_client, model, shape):
    """Killed while it sends requests, small ones or 32 MiB ones (one is in flight most of the time)."""
    driver = new_driver()
    driver.ok("connect", endpoint=builtins_daemon.endpoint)
    region = driver.ok("loop_forever", model=model, inputs=files.inputs({"x": np.zeros(shape, np.float32)}))["region"]
    time.sleep(0.2)  # it is sending requests now
    clients = py_client.status().clients
    assert region in shm_names()
    driver.proc.send_signal(signal.SIGKILL)
    driver.proc.wait()
    assert wait_until(lambda: region not in shm_names(), timeout=5), "region not reclaimed"
    assert wait_until(lambda: py_client.status().clients == clients - 1, timeout=5)


def test_a_killed_daemon_is_replaced_and_the_cpp_client_registers_again(tmp_path, new_driver, files):
    d = start_daemon(tmp_path, "--model", "demo=builtin:demo")
    x = np.random.default_rng(0).standard_normal((1, 64), dtype=np.float32)
    driver = new_driver()
    try:
        first = driver.ok("connect", endpoint=d.endpoint, timeout=5)
        expected = files.read(driver.ok("infer", model="demo", inputs=files.inputs({"x": x}),
                                        out_dir=files.out_dir())["outputs"]["y"])
        driver.ok("zero_copy_inputs", model="demo")
        d.kill()
        error = driver.error("infer", model="demo", inputs=files.inputs({"x": x}), out_dir=files.out_dir(), timeout=5)
        assert error["kind"] in ("DaemonNotRunning", "DaemonStopping"), error
        error = driver.error("infer", model="demo", inputs=files.inputs({"x": x}), out_dir=files.out_dir(),
                             timeout=0.5)
        assert error["kind"] == "DaemonNotRunning" and "trtd serve" in error["message"]
        d = start_daemon(tmp_path, "--model", "demo=builtin:demo")
        # The copying path says hello again and leases anew by itself.
        got = driver.ok("infer", model="demo", inputs=files.inputs({"x": x}), out_dir=files.out_dir())
        np.testing.assert_array_equal(files.read(got["outputs"]["y"]), expected)
        now = driver.ok("identity")
        assert now["generation"] == 1 and now["daemon_id"] != first["daemon_id"]
        assert now["client_id"] != first["client_id"]
        error = driver.error("run_zero_copy", model="demo", out_dir=files.out_dir())
        assert error["kind"] == "InvalidInput" and "restarted" in error["message"]
        driver.ok("zero_copy_inputs", model="demo")
        driver.ok("fill_zero_copy", model="demo", files={"x": files.tensor(x)["file"]})
        out = driver.ok("run_zero_copy", model="demo", out_dir=files.out_dir())["outputs"]
        np.testing.assert_array_equal(files.read(out["y"]), expected)
        driver.ok("close")
    finally:
        assert d.stop() == 0, d.log()


def test_over_tcp_the_cpp_client_sends_the_token_heartbeats_and_survives_a_restart(tmp_path, new_driver, files):
    from test_access import _tcp_daemon, token_path_in

    d, runtime = _tcp_daemon(tmp_path, "reclaim_interval_s = 0.2\nclient_timeout_s = 1.5\n")
    d2 = None
    driver = new_driver({"TRTD_RUNTIME_DIR": str(runtime)})
    try:
        hello = driver.ok("connect", endpoint=d.endpoint, timeout=10)
        # No peer credentials over TCP: the daemon asks for heartbeats (client_timeout_s / 3).
        assert hello["heartbeat_interval_s"] == pytest.approx(0.5)
        x = np.random.default_rng(5).standard_normal((2, 64), dtype=np.float32)
        first = driver.ok("infer", model="demo", inputs=files.inputs({"x": x}), out_dir=files.out_dir())
        driver.ok("sleep", s=3.0)  # twice client_timeout_s: only heartbeats keep the lease
        assert first["region"] in shm_names()
        again = driver.ok("infer", model="demo", inputs=files.inputs({"x": x}), out_dir=files.out_dir())
        assert again["region"] == first["region"]
        expected = files.read(first["outputs"]["y"])
        token_file = token_path_in(runtime, d.endpoint)
        old_token = token_file.read_text().strip()
        d.kill()
        driver.error("infer", model="demo", inputs=files.inputs({"x": x}), out_dir=files.out_dir(), timeout=5)
        d2, _ = _tcp_daemon(tmp_path, "reclaim_interval_s = 0.2\nclient_timeout_s = 1.5\n", endpoint=d.endpoint)
        assert token_file.read_text().strip() != old_token
        # Refused with the old token, the client re-reads the file, says hello again, leases anew.
        got = driver.ok("infer", model="demo", inputs=files.inputs({"x": x}), out_dir=files.out_dir())
        np.testing.assert_array_equal(files.read(got["outputs"]["y"]), expected)
        assert driver.ok("identity")["generation"] == 1
    finally:
        driver.close()
        for daemon in (d, d2):
            if daemon is not None and daemon.alive():
                assert daemon.stop() == 0, daemon.log()


def test_shutdown_stops_the_daemon(tmp_path, new_driver):
    d = start_daemon(tmp_path, "--model", "demo=builtin:demo")
    try:
        driver = new_driver()
        driver.ok("connect", endpoint=d.endpoint)
        driver.ok("shutdown")  # privileged: the admin token file beside the socket
        assert d.proc.wait(timeout=30) == 0, d.log()
        error = driver.error("models")
        assert error["kind"] == "DaemonNotRunning" and "closed" in error["message"]
    finally:
        if d.alive():
            d.stop()


def test_no_daemon_says_how_to_start_one(new_driver, tmp_path):
    error = new_driver().error("connect", endpoint=f"ipc://{tmp_path}/none.sock", connect_timeout=0.2)
    assert error["kind"] == "DaemonNotRunning" and "no socket file" in error["message"] and "trtd serve" in error["message"]


# -- the example, the CMake package, add_subdirectory --------------------------------------------------


def _run_example(program: Path, endpoint: str) -> str:
    result = subprocess.run([str(program), endpoint], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "zero-copy path and your own buffer: the same result" in result.stdout, result.stdout
    assert "input 'x' expects float32[?,64], got float64[1,64] [INVALID_TENSOR]" in result.stdout
    return result.stdout


def test_the_example_runs(cpp, builtins_daemon):
    _run_example(cpp_build.executable(cpp, "trtd_infer_demo"), builtins_daemon.endpoint)


def test_the_installed_package_is_found_by_find_package(cpp, builtins_daemon, tmp_path):
    prefix = tmp_path / "prefix"
    subprocess.run(["cmake", "--install", str(cpp), "--prefix", str(prefix)], check=True, capture_output=True)
    assert (prefix / "include/trtd/trtd.hpp").is_file()
    build = tmp_path / "example"
    cpp_build.configure(REPO / "sdk/cpp/examples", build, options=[f"-DCMAKE_PREFIX_PATH={prefix}"])
    cpp_build.build(build)
    _run_example(cpp_build.executable(build, "trtd_infer_demo"), builtins_daemon.endpoint)


def test_a_project_can_add_subdirectory_the_client(cpp, tmp_path, builtins_daemon):
    project = tmp_path / "app"
    project.mkdir()
    (project / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16)\nproject(app LANGUAGES CXX)\n"
        f"add_subdirectory({(REPO / 'sdk/cpp').as_posix()} trtd)\n"
        "add_executable(app main.cpp)\ntarget_link_libraries(app PRIVATE trtd::client)\n")
    (project / "main.cpp").write_text(
        "#include <trtd/trtd.hpp>\n#include <iostream>\n"
        "int main(int, char** argv) {\n"
        "  trtd::Client c(argv[1]);\n"
        "  auto y = c.model(\"demo\")(trtd::Tensor(trtd::DType::float32, {1, 64}));\n"
        "  std::cout << y.describe() << std::endl;\n}\n")
    # Unoptimised and as one translation unit (CMAKE_UNITY_BUILD): this checks that it builds and
    # links, and quickly, not how fast it runs.
    cpp_build.configure(project, project / "build", build_type="None", options=["-DCMAKE_UNITY_BUILD=ON",
                                                                                 "-DCMAKE_UNITY_BUILD_BATCH_SIZE=0"])
    cpp_build.build(project / "build")
    assert not list((project / "build").rglob("trtd_golden_test*"))  # a subproject builds the library only
    result = subprocess.run([str(cpp_build.executable(project / "build", "app")), builtins_daemon.endpoint],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, "float32[1,10]"), result.stderr


def test_the_build_fails_loudly_not_as_a_skip(tmp_path):
    """A compile error is a CppBuildError (a failure), never CppUnavailable (a skip)."""
    if cpp_build.missing_tools():
        pytest.skip(f"no {cpp_build.missing_tools()}")
    project = tmp_path / "broken"
    project.mkdir()
    (project / "CMakeLists.txt").write_text("cmake_minimum_required(VERSION 3.16)\nproject(b LANGUAGES CXX)\n"
                                            "add_executable(b b.cpp)\n")
    (project / "b.cpp").write_text("int main() { return undefined_name; }\n")
    cpp_build.configure(project, project / "build")
    with pytest.raises(cpp_build.CppBuildError, match="undefined_name"):
        cpp_build.build(project / "build")
    (project / "CMakeLists.txt").write_text("cmake_minimum_required(VERSION 3.16)\nproject(b LANGUAGES CXX)\n"
                                            "find_package(no_such_package_here CONFIG REQUIRED)\n")
    with pytest.raises(cpp_build.CppUnavailable, match="no_such_package_here"):
        cpp_build.configure(project, project / "build2")


# -- the Windows code path ---------------------------------------------------------------------------

MINGW = "x86_64-w64-mingw32-g++-posix"  # the posix thread model: std::thread, std::mutex


def _header_dir(name: str) -> Path | None:
    for folder in [*os.environ.get("CPLUS_INCLUDE_PATH", "").split(":"), "/usr/local/include", "/usr/include"]:
        if folder and (Path(folder) / name).exists():
            return Path(folder)
    return None


def test_the_windows_code_path_compiles_with_mingw(cpp, tmp_path):
    """Named mappings, GetProcessTimes, %LOCALAPPDATA% and the TCP default, as mingw-w64 compiles
    them for Windows (x86_64-w64-mingw32, -fsyntax-only: nothing here can link or run it)."""
    if not shutil.which(MINGW):
        why = f"no {MINGW} (Debian: apt-get install g++-mingw-w64-x86-64-posix)"
        if REQUIRE:
            pytest.fail(f"TRTD_REQUIRE_CPP=1 but {why}")
        pytest.skip(why)
    # Only the header-only dependencies, not this system's other headers: the Windows ones are mingw's.
    include = tmp_path / "include"
    include.mkdir()
    for name in ("zmq.h", "zmq.hpp", "msgpack.hpp", "msgpack"):
        folder = _header_dir(name)
        assert folder is not None, f"no {name} (the native build found it)"
        (include / name).symlink_to(folder / name)
    source = REPO / "sdk/cpp"
    # The library's sources as one translation unit (the headers parsed once), the programs apart.
    library = tmp_path / "library.cpp"
    library.write_text("".join(f'#include "{p}"\n' for p in sorted((source / "src").glob("*.cpp"))))
    files = [library, source / "examples/infer_demo.cpp", source / "bench/latency_bench.cpp"]

    def check(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run([MINGW, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-DMSGPACK_NO_BOOST",
                               f"-I{source / 'include'}", "-isystem", str(include), "-fsyntax-only", str(path)],
                              capture_output=True, text=True, timeout=300)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(files, pool.map(check, files)))
    failed = {p.name: r.stderr[-3000:] for p, r in results.items() if r.returncode}
    assert not failed, failed
    # What was compiled is the Windows path: named mappings, not POSIX shared memory.
    preprocessed = subprocess.run([MINGW, "-std=c++17", "-DMSGPACK_NO_BOOST", f"-I{source / 'include'}", "-isystem",
                                   str(include), "-E", str(source / "src/region.cpp")],
                                  capture_output=True, text=True, check=True).stdout
    assert "mapping = OpenFileMappingW(" in preprocessed and "shm_open" not in preprocessed


# -- the latency benchmark's C++ row -----------------------------------------------------------------


def test_the_latency_benchmark_runs_every_system_and_checks_the_outputs(cpp, tmp_path):
    from trtd.bench import cpp_client

    binary = cpp_build.executable(cpp, "trtd_latency_bench")
    report = tmp_path / "cpp.json"
    rc = cpp_client.main(["--models", "mlp", "--iterations", "20", "--warmup", "2", "--block", "10",
                          "--binary", str(binary), "--json", str(report), "--markdown", str(tmp_path / "cpp.md")])
    assert rc == 0
    (result,) = json.loads(report.read_text())["results"]
    assert result["ok"] and result["same_bytes_as_python"] and result["max_abs_diff_vs_in_process"] == 0
    assert set(result["systems"]) == set(cpp_client.SYSTEMS)
    assert all(s["n"] == 20 and s["p50_us"] > 0 for s in result["systems"].values())
    # A row per model (tabulate pads the cells: "| mlp   |").
    assert re.search(r"^\| mlp +\|", (tmp_path / "cpp.md").read_text(), re.M)
