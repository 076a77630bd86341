"""`trtd build` and `trtd cache`: the command-line face of the engine machinery."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from trtd.daemon.engines.build import BuildJob, build, default_cache_root
from trtd.daemon.engines.progress import is_progress
from trtd.daemon.engines.builders import BuildError, inspect_engine
from trtd.daemon.engines.cache import CacheError, EngineCache
from trtd.daemon.engines.fingerprint import BuildOptions
from trtd.daemon.engines import library as libraries
from trtd.daemon.engines.profiles import ProfileError, check_against_model, parse_profiles


def add_build_parser(sub) -> None:
    p = sub.add_parser("build", help="build a TensorRT or TensorRT-RTX engine from an ONNX model (cached)")
    p.add_argument("onnx", help="the ONNX model")
    p.add_argument("--name", help="model name in the cache (default: the file's stem)")
    p.add_argument("--profile", action="append", default=[], metavar="NAME:MIN,OPT,MAX",
                   help="an input's shape range, shapes like 1x3x224x224; repeat for each dynamic "
                        "input; separate profiles with --next-profile")
    p.add_argument("--next-profile", action="append_const", dest="profile", const=None,
                   help="start another optimization profile")
    p.add_argument("--workspace", type=int, metavar="MiB", default=0, help="workspace limit")
    p.add_argument("--opt-level", type=int, default=3, help="builder optimization level 0..5")
    p.add_argument("--timing-cache", help="timing cache file (default: one per GPU and version in the cache)")
    p.add_argument("--plugin", action="append", default=[], help="plugin library with custom ops")
    p.add_argument("--hardware-compatible", action="store_true", help="run on any Ampere or newer GPU")
    p.add_argument("--version-compatible", action="store_true",
                   help="run on later TensorRT versions of the same major (lean runtime)")
    p.add_argument("--exclude-lean-runtime", action="store_true",
                   help="with --version-compatible: do not embed the lean runtime")
    p.add_argument("--builder", choices=["tensorrt", "onnxruntime"], default="tensorrt",
                   help="onnxruntime writes an optimized ONNX model (.onnx) instead: no TensorRT, no GPU")
    p.add_argument("--library", choices=libraries.CHOICES, default="auto",
                   help="tensorrt: for the GPU here (needs one); tensorrt-rtx: for RTX GPUs, built "
                        "without a GPU; auto: from what is installed and the GPU (default)")
    p.add_argument("--target", metavar="SM,...",
                   help="TensorRT-RTX: the compute capabilities to build for, e.g. sm86,sm89,sm120 "
                        f"(default {','.join(libraries.DEFAULT_RTX_TARGETS)}; known: {', '.join(libraries.RTX_TARGETS)})")
    p.add_argument("--device", type=int, default=0)
    p.add_argument("--inspect", action="store_true", help="print per-layer precision and tactics")
    p.add_argument("-o", "--output", help="also copy the result here")
    p.add_argument("--progress", action="store_true",
                   help="print the build's progress on stderr (its phases, or the time so far) even "
                        "when stderr is not a terminal")
    p.add_argument("--cache-dir", help="cache root (default: TRTD_CACHE_DIR or the user's cache)")
    p.set_defaults(func=run_build)


def _profile_groups(specs: list[str | None]) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    for spec in specs:
        if spec is None:
            groups.append([])
        else:
            groups[-1].append(spec)
    return [g for g in groups if g]


def _onnx_inputs(path: str) -> dict[str, list[int]]:
    import onnx

    model = onnx.load(path, load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    inputs = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        inputs[value.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    return inputs


def _missing_library() -> str | None:
    from trtd.daemon.engines.trt import TensorRTUnavailable, import_tensorrt

    install = "pip install tensorrt, from NVIDIA's package index"
    try:
        trt = import_tensorrt()
    except TensorRTUnavailable:
        return f"the TensorRT library: {install}"
    if not trt.can_build:
        return (f"the full TensorRT library: only the lean runtime {trt.version} is here (it runs "
                f"engines, it cannot build them); {install}")
    return None


def choose_library(requested: str, device: int) -> libraries.LibraryChoice:
    """The library `trtd build --library REQUESTED` builds with on this machine, and why. Under
    "auto" with a GPU here the engine is for that GPU (so it must run there); without one, or
    with --library tensorrt-rtx, it is for the RTX GPUs of its targets, wherever they are."""
    gpu = libraries.gpu_of(device)
    return libraries.choose(requested, gpu, libraries.installed(), build=True,
                            run=requested == "auto" and gpu is not None, via="--library")


def _missing_gpu(device: int) -> str | None:
    from trtd.daemon.system import cuda

    if not cuda.available():
        return 'a GPU: cuda-python is not installed (pip install "trtd[cuda]"), so no GPU can be used'
    try:
        count = cuda.device_count()
    except cuda.CudaError as exc:
        return f"a GPU: {exc}"
    if device >= count:
        return f"GPU {device}: this machine has {count} GPU(s)" + (" (choose one with --device)" if count else "")
    return None


def tensorrt_build_problem(onnx: str, device: int, library: str = "auto") -> str | None:
    """Why an engine of `library` cannot be built here, and what works instead; None if it can."""
    choice = choose_library(library, device)
    if choice.library == libraries.RTX:
        # TensorRT-RTX needs no GPU: only its absence, or (auto) a GPU it does not support with
        # nothing else installed, stops it; the problem says what to install.
        return f"a TensorRT-RTX engine cannot be built: {choice.problem}" if choice.problem else None
    missing = [m for m in (_missing_library(), _missing_gpu(device)) if m]
    if not missing:
        return None
    instead = [(f"trtd build {onnx} --builder onnxruntime", "an optimized ONNX model for the CPU, cached the same way"),
               (f"trtd serve --model NAME={onnx}", "serves the ONNX model with ONNX Runtime as it is")]
    if libraries.installed().rtx:
        instead.insert(0, (f"trtd build {onnx} --library tensorrt-rtx", "an engine for RTX GPUs, built without one"))
    else:
        missing.append("or instead TensorRT-RTX, which builds engines for RTX GPUs without a GPU: "
                       + libraries.RTX_INSTALL)
    width = max(len(command) for command, _ in instead)
    return "\n".join(["a TensorRT engine cannot be built on this machine. Missing:",
                      *(f"  - {m}" for m in missing), "What works without them:",
                      *(f"  {command.ljust(width)}   {what}" for command, what in instead)])


def build_job(args: argparse.Namespace, library: str = libraries.TENSORRT) -> BuildJob:
    """The job `trtd build ARGS` asks for; for TensorRT, its profiles checked against the model."""
    profiles = parse_profiles(_profile_groups(args.profile))
    if args.builder == "tensorrt":
        check_against_model(profiles, _onnx_inputs(args.onnx))
    rtx = args.builder == "tensorrt" and library == libraries.RTX
    if args.target and not rtx:
        raise ValueError("--target applies to TensorRT-RTX engines (--library tensorrt-rtx); a TensorRT "
                         "engine is built for the GPU it is built on")
    targets = libraries.parse_targets(args.target or libraries.DEFAULT_RTX_TARGETS) if rtx else ()
    options = BuildOptions(profiles=tuple(profiles), workspace_bytes=args.workspace * 2**20,
                           optimization_level=args.opt_level,
                           hardware_compatible=args.hardware_compatible,
                           version_compatible=args.version_compatible,
                           exclude_lean_runtime=args.exclude_lean_runtime,
                           plugins=tuple(str(Path(p).resolve()) for p in args.plugin), targets=targets)
    return BuildJob(model=args.name or Path(args.onnx).stem, onnx_path=args.onnx, options=options,
                    builder=libraries.RTX if rtx else args.builder, cache_root=args.cache_dir,
                    timing_cache=args.timing_cache, device=args.device)


def run_build(args: argparse.Namespace) -> int:
    # Every problem at once: a wrong profile and a machine that cannot build are both worth
    # knowing before the next try.
    problems = []
    choice = choose_library(args.library, args.device) if args.builder == "tensorrt" else None
    blocked = tensorrt_build_problem(args.onnx, args.device, args.library) if choice else None
    try:
        job = build_job(args, choice.library if choice else libraries.TENSORRT)
        if blocked is None:
            if choice is not None:
                print(f"library: {choice.text()}", file=sys.stderr)
            show_progress = args.progress or sys.stderr.isatty()

            def say(line: str) -> None:
                if show_progress or not is_progress(line):
                    print(line, file=sys.stderr, flush=True)

            entry, built = build(job, log=say)
    except (ProfileError, ValueError, BuildError, CacheError, ImportError) as exc:  # TargetError too
        problems.append(str(exc))
    except Exception as exc:  # e.g. onnx's own errors for a corrupt file
        problems.append(f"{args.onnx}: {type(exc).__name__}: {exc}")
    problems += [blocked] if blocked else []
    for problem in problems:
        print(f"trtd build: {problem}", file=sys.stderr)
    if problems:
        return 1
    targets = entry.metadata.get("targets")
    print(f"{'built' if built else 'cached'}: {entry.engine_path} ({entry.metadata['bytes']} bytes, "
          f"fingerprint {entry.fingerprint}" + (f", for {','.join(targets)}" if targets else "") + ")")
    if args.output:
        _copy_out(entry, Path(args.output))
    if args.inspect:
        if args.builder != "tensorrt":
            print("--inspect applies to TensorRT engines", file=sys.stderr)
        else:
            print(_inspect(entry))
    return 0


def _copy_out(entry, output: Path) -> None:
    """The engine, and its metadata beside it (`<stem>.json`): the daemon that loads the file
    learns its library and targets from it (engines/library.py)."""
    shutil.copyfile(entry.engine_path, output)
    if entry.metadata.get("library"):
        meta = dict(entry.metadata, file=output.name)
        output.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def _inspect(entry) -> str:
    """Per-layer precisions: the builder's report where it was kept (TensorRT-RTX engines, which
    load only on an RTX GPU), else the engine inspector (needs the GPU the engine is for)."""
    layers = entry.metadata.get("layers")
    if layers:
        counts = entry.metadata.get("compute_precisions", {})
        summary = ", ".join(f"{n} {dtype}" for dtype, n in sorted(counts.items()))
        return "\n".join([*layers, f"convolutions and matrix products by input precision: {summary or 'none'}"])
    return inspect_engine(entry.engine_path.read_bytes())


def add_cache_parser(sub) -> None:
    p = sub.add_parser("cache", help="list, verify or clear cached engines")
    p.add_argument("action", choices=["list", "verify", "clear"])
    p.add_argument("--cache-dir", help="cache root (default: TRTD_CACHE_DIR or the user's cache)")
    p.set_defaults(func=run_cache)


def run_cache(args: argparse.Namespace) -> int:
    cache = EngineCache(args.cache_dir or default_cache_root())
    if args.action == "clear":
        print(f"removed {cache.clear()} engine(s) from {cache.dir}")
        return 0
    if args.action == "list":
        entries = cache.entries()
        if not entries:
            print(f"no engines in {cache.dir}")
            return 0
        from tabulate import tabulate

        rows = []
        for e in entries:
            dep = e.metadata.get("depends_on", {})
            # For TensorRT-RTX the targets are what it runs on, not the GPU it was built on.
            runs_on = ",".join(e.metadata["targets"]) if e.metadata.get("targets") else dep.get("gpu", "?")
            library = e.metadata.get("library", e.metadata.get("builder", "?"))
            rows.append((e.model, e.fingerprint, f"{e.metadata.get('bytes', 0)} B", library,
                         dep.get("tensorrt", "?"), runs_on, e.metadata.get("stored_at", "")))
        # No header: one engine per line, its model first, for scripts (columns fit the widest).
        print(tabulate(rows, tablefmt="plain", colalign=("left", "left", "right"), disable_numparse=True))
        return 0
    bad = 0
    for e, problem in cache.verify():
        print(f"{'BAD ' if problem else 'ok  '} {e.engine_path.name}{': ' + problem if problem else ''}")
        bad += bool(problem)
    return 1 if bad else 0
