"""`trtd bench` end to end on a real daemon: sweep, reports, plots, --compare, and peers that cannot
run being reported instead of dropped. Nothing about speed is asserted; counts and shapes are."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

from trtd.bench import harness  # noqa: E402

SYSTEMS = ("in_process", "daemon_copy", "daemon_zero_copy")
TRITON = ("triton_http", "triton_grpc", "triton_grpc_shm")
COUNT = 25


def _live_children() -> set[int]:
    pids = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(p.cmdline()):
                pids.add(p.pid)
        except psutil.NoSuchProcess:
            pass
    return pids


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One small but complete run: single-client part, a 1- and 2-client sweep, a peer that cannot run."""
    out = tmp_path_factory.mktemp("bench")
    before = _live_children()
    code = harness.main(["--models", "mlp", "--concurrency", "1,2", "--count", str(COUNT), "--warmup", "5",
                         "--iterations", "40", "--peers", "triton",
                         "--peer-env", "/proc/trtd-cannot-create-this", "--out", str(out)])
    assert _live_children() <= before, "the run left processes behind"
    return code, out


def _outputs(out: Path) -> tuple[dict, str, list[Path]]:
    (json_path,) = out.glob("*.json")
    (md_path,) = out.glob("*.md")
    return json.loads(json_path.read_text()), md_path.read_text(), sorted(out.glob("*.png"))


def test_sweep_counts_every_request_of_every_client(first_run):
    code, out = first_run
    assert code == 0
    data, _, _ = _outputs(out)
    points = {(p["system"], p["concurrency"]): p for p in data["sweep"]}
    assert set(points) == {(s, n) for s in SYSTEMS for n in (1, 2)}
    for (system, n), p in points.items():
        assert p["requests"] == COUNT * n and p["errors"] == 0, p
        lat = p["latency"]
        assert 0 < lat["p50_us"] <= lat["p90_us"] <= lat["p99_us"] <= lat["max_us"]
        assert p["throughput_rps"] > 0
        if system == "in_process":
            assert p["server_cpu_us_per_request"] is None
        else:  # the daemon did the work: it used CPU time and has a size
            assert p["server_cpu_us_per_request"] > 0 and p["server_rss_mib_after"] > 10
    assert data["single_client"]["mlp"]["correctness"]["ok"]


def test_a_peer_that_cannot_run_is_reported_with_the_reason(first_run):
    _, out = first_run
    data, markdown, _ = _outputs(out)
    for system in TRITON:
        assert "could not create a virtual environment" in data["unavailable"][system]
    assert "## Not run" in markdown and "/proc/trtd-cannot-create-this" in markdown
    throughput_targets = [t for t in data["targets"] if "Triton" in t["name"]]
    assert throughput_targets and all(t["met"] is None for t in throughput_targets)
    assert all("not judged" in t["detail"] for t in throughput_targets)


def test_report_and_plots(first_run):
    _, out = first_run
    data, markdown, pngs = _outputs(out)
    assert [p.name for p in pngs] == [Path(data["meta"]["plots"]["mlp"]).name]
    assert pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pngs[0].stat().st_size > 20_000
    assert f"![mlp]({pngs[0].name})" in markdown
    assert data["meta"]["command"].startswith("trtd bench --models mlp")
    for needle in ("## Targets", "## Single client, interleaved", "## Concurrency sweep", "trtd zero-copy",
                   "## Environment", "onnxruntime"):
        assert needle in markdown


def test_compare_prints_the_change(first_run, tmp_path, capsys):
    _, out = first_run
    (old,) = out.glob("*.json")
    code = harness.main(["--models", "mlp", "--concurrency", "1", "--count", "10", "--warmup", "2",
                         "--no-single", "--compare", str(old)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "== change against the run of" in printed
    rows = [line for line in printed.splitlines() if line.startswith("mlp ") and "%" in line]
    # 3 systems x 1 common concurrency x (p50, p99, req/s)
    assert len(rows) == 9, printed


@pytest.mark.parametrize("args, message", [
    (["--compare", "/nonexistent.json"], "not a `trtd bench --json` file"),
    (["--peers", "tensorflow-serving"], "unknown peer"),
    (["--concurrency", "0,2"], "at least 1"),
    (["--models", "nosuchmodel"], "unknown model"),
])
def test_usage_errors(args, message, tmp_path):
    done = subprocess.run([sys.executable, "-m", "trtd.daemon", "bench", *args], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr, done.stderr


@pytest.mark.skipif(os.environ.get("TRTD_TEST_TRITON") != "1",
                    reason="installs PyTriton (~25 s, network) and starts a Triton server: "
                           "set TRTD_TEST_TRITON=1")
def test_triton_peer_for_real(tmp_path):
    code = harness.main(["--models", "mlp", "--concurrency", "1", "--count", "20", "--warmup", "3",
                         "--no-single", "--peers", "triton", "--json", str(tmp_path / "r.json")])
    data = json.loads((tmp_path / "r.json").read_text())
    assert code == 0 and not data["unavailable"], data["unavailable"]
    for system in TRITON:
        (point,) = [p for p in data["sweep"] if p["system"] == system]
        assert point["requests"] == 20 and point["errors"] == 0
    assert data["meta"]["peers"]["triton"]["triton"]


# -- the user's own models -------------------------------------------------------------------------


def _own_model(path: Path) -> Path:
    """Two inputs sharing a dynamic batch N, H and W dynamic too: y[N,3] = mean(x) + table[ids]."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.arange(30, dtype=np.float32).reshape(10, 3), "table")
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0),
             helper.make_node("Add", ["flat", "rows"], ["y"])]
    graph = helper.make_graph(
        nodes, "own",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], initializer=[table])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return path


def test_an_own_model_is_benched_beside_a_builtin(tmp_path):
    model = _own_model(tmp_path / "own.onnx")
    report = tmp_path / "r.json"
    code = harness.main(["--models", "mlp", "--model", f"own={model}", "--shape", "own:x=2x3x8x8",
                         "--concurrency", "1", "--count", "10", "--warmup", "2", "--iterations", "20",
                         "--json", str(report)])
    assert code == 0
    data = json.loads(report.read_text())
    own = data["single_client"]["own"]
    # ids takes N from x's shape; the daemon's answers equal in-process ONNX Runtime's.
    assert own["signature"] == "x float32[2,3,8,8], ids int64[2] -> y float32[2,3]"
    assert own["correctness"]["ok"] and own["correctness"]["max_abs_diff_copy"] == 0.0
    assert set(data["single_client"]) == {"mlp", "own"}
    points = {(p["model"], p["system"]): p for p in data["sweep"]}
    for system in SYSTEMS:
        assert points[("own", system)]["requests"] == 10 and points[("own", system)]["errors"] == 0
    assert data["meta"]["own_models"] == {"own": {"path": str(model.resolve()), "signature": own["signature"]}}
    assert "--model own=" in data["meta"]["command"]


def _bench(*args, cwd):
    return subprocess.run([sys.executable, "-m", "trtd.daemon", "bench", *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd)


def test_a_dynamic_dimension_without_a_size_is_named(tmp_path):
    model = _own_model(tmp_path / "own.onnx")
    done = _bench("--model", f"own={model}", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == ("trtd bench: model 'own': input 'x' [N, 3, H, W]: dimension 2 ('H') is "
                                   "dynamic and no size was given; give the whole shape with "
                                   "--shape own:x=1x3x<H>x<W>")


@pytest.mark.parametrize("args, message", [
    (["--models", "tiny.onnx"], "use --model NAME=PATH, e.g. --model tiny=tiny.onnx"),
    (["--model", "own={model}", "--shape", "own:x=2x4x8x8"], "dimension 1 is fixed at 3"),
    (["--model", "own={model}", "--shape", "own:x=2x3x8x8", "--shape", "own:ids=3"],
     "dimension 'N' is 2 in input 'x' and 3 here"),
    (["--model", "own={model}", "--shape", "own:z=1"], "has no input 'z' (its inputs: x, ids)"),
    (["--model", "own={model}", "--shape", "own:x=2x3xax8"], "whole numbers separated by 'x'"),
    (["--model", "mlp={model}"], "'mlp' is a built-in model's name"),
    (["--model", "own=missing.onnx"], "missing.onnx does not exist"),
    (["--shape", "mlp:x=1x64"], "built-in models have fixed shapes"),
])
def test_own_model_usage_errors(args, message, tmp_path):
    model = _own_model(tmp_path / "own.onnx")
    done = _bench(*(a.format(model=model) for a in args), cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr, done.stderr


# -- the shape of bench/ ---------------------------------------------------------------------------
# Read with ast, nothing imported: bench/'s helpers (bench/lib) and its benchmarks must not import
# each other in a cycle, lib must not import a benchmark, and nothing in bench may import a
# private (underscore) name of the daemon: those change without notice.

BENCH = Path(__file__).resolve().parent.parent / "bench"

# Private daemon names bench still uses, each waiting for a public equivalent in trtd.daemon
# (file: module.name -> why bench needs it). Remove an entry once the public name exists.
PENDING_PUBLIC: dict[str, str] = {}


def _bench_modules() -> dict[str, Path]:
    """Every module under bench/ by its import name (trtd.bench...)."""
    modules = {}
    for path in sorted(BENCH.rglob("*.py")):
        parts = path.relative_to(BENCH).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(("trtd", "bench", *parts))] = path
    return modules


def _imports(name: str, path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every import statement, lazy ones inside functions included."""
    import ast

    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, [alias.name for alias in node.names]))
    return found


def _import_graph() -> dict[str, set[str]]:
    modules = _bench_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for module, names in _imports(name, path):
            # `from package import submodule` needs the submodule, not the package's own code
            # (which Python runs first in any case, as for every import of a submodule).
            submodules = {f"{module}.{n}" for n in names} & set(modules)
            targets = submodules | ({module} if len(submodules) < max(len(names), 1) else set())
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each module that is on one (depth-first search)."""
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_bench_modules_import_each_other_without_a_cycle():
    graph = _import_graph()
    assert "trtd.bench.lib.floor" in graph and "trtd.bench.harness.cli" in graph  # the scan saw bench/
    assert _cycles(graph) == [], "\n".join(" -> ".join(c) for c in _cycles(graph))


def test_the_shared_helpers_import_no_benchmark():
    graph = _import_graph()
    wrong = {f"{name} imports {target}" for name, targets in graph.items() if name.startswith("trtd.bench.lib")
             for target in targets if not target.startswith("trtd.bench.lib")}
    assert not wrong, sorted(wrong)


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_bench_uses_no_private_daemon_name():
    found = set()
    for name, path in _bench_modules().items():
        for module, names in _imports(name, path):
            if module != "trtd.daemon" and not module.startswith("trtd.daemon."):
                continue
            where = path.relative_to(BENCH.parent).as_posix()
            if any(part.startswith("_") for part in module.split(".")):
                found.add(f"{where}: {module}")
            found |= {f"{where}: {module}.{n}" for n in names if n.startswith("_")}
    new = found - set(PENDING_PUBLIC)
    assert not new, f"private daemon names imported by bench (use a public one): {sorted(new)}"
    gone = set(PENDING_PUBLIC) - found
    assert not gone, f"no longer imported: remove from PENDING_PUBLIC: {sorted(gone)}"
