"""`trtd export`: TorchScript -> ONNX, then a check that ONNX Runtime reproduces TorchScript.

ScriptModules go through torch's TorchScript-based exporter (`dynamo=False`):
the torch.export-based one cannot take a ScriptModule. Inputs are named from
the `--input NAME:SHAPE[:DTYPE]` specs, outputs `output` / `output0..`, and
`--dynamic-batch` makes dimension 0 of every input and output dynamic.

A large model takes a while (torch's export is one call that says nothing): `progress`
is told each phase, and every HEARTBEAT_S the time the export call has taken so far, in the
build's `progress: ` lines (trtd build prints them the same way).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from trtd.daemon.backends.base import BackendError
from trtd.daemon.backends.torch import parse_input_spec
from trtd.daemon.engines.progress import HEARTBEAT_S, PROGRESS
from trtd.daemon.precision.metrics import value_metrics

Progress = Callable[[str], None]


class ExportError(ValueError):
    pass


@contextmanager
def _phase(progress: Progress | None, what: str, heartbeat_s: float = HEARTBEAT_S) -> Iterator[None]:
    """Say `what` started, then its elapsed time every heartbeat_s until it ends, then that it ended."""
    if progress is None:
        yield
        return
    progress(f"{PROGRESS}{what}")
    start, done = time.monotonic(), threading.Event()

    def beat() -> None:
        while not done.wait(heartbeat_s):
            progress(f"{PROGRESS}{what}: {time.monotonic() - start:.0f} s so far")

    ticker = threading.Thread(target=beat, name="export-progress", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()
        progress(f"{PROGRESS}{what}: done in {time.monotonic() - start:.1f} s")


def export_torchscript(pt_path: str | Path, inputs: list[str], out_path: str | Path,
                       dynamic_batch: bool = False, opset: int = 17, samples: int = 4,
                       atol: float = 1e-4, rtol: float = 1e-3, seed: int = 0,
                       progress: Progress | None = None) -> dict:
    """Export and check; returns the check's figures. ExportError when it cannot or the check fails.
    progress: told each phase as a `progress: ` line (see the module's docstring)."""
    try:
        import torch
    except ImportError:
        raise ExportError("trtd export needs torch: pip install \"trtd[torch]\"") from None
    import onnxruntime as ort

    if not inputs:
        raise ExportError("give every input: --input NAME:SHAPE[:DTYPE], e.g. --input x:1,3,224,224")
    try:
        specs = [parse_input_spec(s) for s in inputs]
    except BackendError as exc:
        raise ExportError(str(exc)) from None
    try:
        with _phase(progress, f"loading {pt_path}"):
            module = torch.jit.load(str(pt_path), map_location="cpu").eval()
    except Exception as exc:
        raise ExportError(f"{pt_path} is not a TorchScript module torch.jit.load can read: {exc}") from None
    if not hasattr(module, "forward"):
        raise ExportError(f"{pt_path} holds no module with a forward method")
    rng = np.random.default_rng(seed)

    def example(batch: int):
        arrays = []
        for s in specs:
            shape = [batch if d < 0 else d for d in s.shape]
            dt = np.dtype(s.dtype)
            arrays.append(rng.standard_normal(shape).astype(dt) if dt.kind == "f"
                          else rng.integers(0, 8, shape).astype(dt))
        return arrays

    first = example(1)
    with torch.inference_mode():
        try:
            outputs = module(*[torch.from_numpy(a) for a in first])
        except Exception as exc:
            raise ExportError(f"the module does not run on inputs {inputs}: {exc}; give the inputs "
                              f"its forward() takes") from None
    count = len(outputs) if isinstance(outputs, (tuple, list)) else 1
    output_names = ["output"] if count == 1 else [f"output{i}" for i in range(count)]
    names = [s.name for s in specs]
    dynamic = ({n: {0: "batch"} for n in names + output_names}
               if dynamic_batch or any(s.shape[0] < 0 for s in specs) else None)
    with warnings.catch_warnings(), _phase(progress, "exporting to ONNX (torch.onnx.export)"):
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            torch.onnx.export(module, tuple(torch.from_numpy(a) for a in first), str(out_path),
                              input_names=names, output_names=output_names, dynamic_axes=dynamic,
                              opset_version=opset, dynamo=False)
        except Exception as exc:
            raise ExportError(f"torch could not export {pt_path} to ONNX: {exc}") from None
    if progress is not None:
        progress(f"{PROGRESS}checking with ONNX Runtime on {samples} random input(s)")
    session = ort.InferenceSession(str(out_path), providers=["CPUExecutionProvider"])
    worst: dict = {}
    for i in range(samples):
        arrays = example(1 + (i % 3) if dynamic else 1)
        with torch.inference_mode():
            ref = module(*[torch.from_numpy(a) for a in arrays])
        ref = [r.numpy() for r in (ref if isinstance(ref, (tuple, list)) else [ref])]
        got = session.run(None, dict(zip(names, arrays)))
        for name, g, r in zip(output_names, got, ref):
            m = value_metrics(g, r)
            w = worst.setdefault(name, m)
            for k in ("max_abs", "mean_abs", "rel_l2"):
                w[k] = max(w[k], m[k])
            w["cosine"] = min(w["cosine"], m["cosine"])
            if not np.allclose(g, r, atol=atol, rtol=rtol):
                w["within_tolerance"] = False
    ok = all(m.get("within_tolerance", True) for m in worst.values())
    result = {"onnx": str(out_path), "inputs": inputs, "outputs": output_names, "opset": opset,
              "dynamic_batch": bool(dynamic), "samples": samples, "atol": atol, "rtol": rtol,
              "per_output": worst, "ok": ok}
    if not ok:
        raise ExportError(f"ONNX Runtime does not reproduce TorchScript within atol {atol} / rtol {rtol}: "
                          f"{worst}")
    return result


def add_parser(sub, name: str = "export") -> None:
    """`trtd export onnx` (trtd.daemon.commands.export also takes `trtd export MODEL.pt`)."""
    p = sub.add_parser(name, help="TorchScript -> ONNX, checked against TorchScript with ONNX Runtime")
    p.add_argument("torchscript")
    p.add_argument("--input", action="append", default=[], metavar="NAME:SHAPE[:DTYPE]", required=True)
    p.add_argument("--dynamic-batch", action="store_true")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--atol", type=float, default=1e-4)
    p.add_argument("--rtol", type=float, default=1e-3)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--progress", action="store_true",
                   help="print the export's progress on stderr (its phases, and the time so far while "
                        "torch exports) even when stderr is not a terminal")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        show = args.progress or sys.stderr.isatty()
        result = export_torchscript(args.torchscript, args.input, args.output, args.dynamic_batch,
                                    args.opset, atol=args.atol, rtol=args.rtol,
                                    progress=(lambda line: print(line, file=sys.stderr, flush=True))
                                    if show else None)
    except ExportError as exc:
        print(f"trtd export: {exc}", file=sys.stderr)
        return 1
    print(f"exported {args.output}: outputs {', '.join(result['outputs'])}; ONNX Runtime vs TorchScript "
          f"on {result['samples']} random inputs:")
    for name, m in result["per_output"].items():
        print(f"  {name}: max abs {m['max_abs']:.3g}, rel L2 {m['rel_l2']:.3g}, cosine {m['cosine']:.6f} "
              f"(tolerance atol {args.atol:g} / rtol {args.rtol:g}: ok)")
    return 0
