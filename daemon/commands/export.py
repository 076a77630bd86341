"""`trtd export`: hand the configured models to another serving stack, or TorchScript to ONNX.

    trtd export triton [--config trtd.toml] -o REPO [--model NAME]... [--force] [--rtx-engines]
    trtd export kserve [--config trtd.toml] -o REPO --storage-uri URI [--name NAME] [--manifest PATH]
    trtd export onnx MODEL.pt --input NAME:SHAPE[:DTYPE] -o MODEL.onnx   (also `trtd export MODEL.pt ...`)

`trtd export MODEL.pt` was the whole command before the targets existed: it still works, as
`trtd export onnx MODEL.pt` (compat_argv).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TARGETS = ("triton", "kserve", "onnx")


def compat_argv(argv: list[str]) -> list[str]:
    """`trtd export MODEL.pt ...` -> `trtd export onnx MODEL.pt ...`."""
    if argv[:1] == ["export"] and len(argv) > 1 and argv[1] not in TARGETS and not argv[1].startswith("-"):
        return ["export", "onnx", *argv[1:]]
    return argv


def add_parser(sub) -> None:
    from trtd.daemon.precision import export as torchscript_export

    p = sub.add_parser("export", help="write a Triton model repository (and a KServe manifest) of the "
                                      "configured models, or TorchScript as ONNX",
                       description="Hand the configured models to Triton (a model repository) or KServe "
                                   "(the repository and an InferenceService), or export TorchScript as ONNX.")
    targets = p.add_subparsers(dest="target", required=True, metavar="{triton,kserve,onnx}")
    triton = targets.add_parser("triton", help="a Triton model repository: config.pbtxt, model.onnx, "
                                               "engines per compute capability")
    _repository_options(triton)
    triton.set_defaults(func=run_triton)
    kserve = targets.add_parser("kserve", help="the Triton repository and a KServe InferenceService "
                                               "that serves it")
    _repository_options(kserve)
    kserve.add_argument("--storage-uri", required=True, metavar="URI",
                        help="where the repository will be uploaded (s3://..., gs://..., pvc://...)")
    kserve.add_argument("--name", help="the InferenceService's name (default: from REPO's folder name)")
    kserve.add_argument("--runtime", default="kserve-tritonserver",
                        help="the (Cluster)ServingRuntime that runs Triton (default: kserve-tritonserver)")
    kserve.add_argument("--manifest", metavar="PATH",
                        help="where the manifest goes (default: REPO.inferenceservice.yaml beside REPO)")
    kserve.set_defaults(func=run_kserve)
    torchscript_export.add_parser(targets, name="onnx")


def _repository_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="the trtd config (default: the user's, else the system's)")
    p.add_argument("-o", "--output", required=True, metavar="REPO", help="the repository folder to write")
    p.add_argument("--model", action="append", default=[], metavar="NAME",
                   help="export this model only; repeatable (default: every model of the config)")
    p.add_argument("--force", action="store_true",
                   help="write into an existing, non-empty REPO, replacing the models exported")
    p.add_argument("--rtx-engines", action="store_true",
                   help="also export TensorRT-RTX engines (for a Triton whose TensorRT backend runs them; "
                        "stock Triton runs full-TensorRT engines only)")
    p.add_argument("--cache-dir", help="the engine cache root (default: TRTD_CACHE_DIR or the user's cache)")


def _config(args, prog: str):
    """(the models of --config, its path as text); ConfigError when there is none or it is broken."""
    from trtd.daemon.config.check import load_checked
    from trtd.daemon.config.settings import ConfigError
    from trtd.daemon.system import platform

    path = args.config
    if path is None:
        found = [platform.config_path(s) for s in ("user", "system") if platform.config_path(s).exists()]
        if not found:
            raise ConfigError(f"no --config given and no config file at the default locations "
                              f"(trtd config paths lists them)")
        path = str(found[0])
    config, _ = load_checked(path)
    return config.models, str(path)


def _fail(prog: str, exc: Exception) -> int:
    for line in str(exc).splitlines():
        print(f"{prog}: {line}", file=sys.stderr)
    return 1


def _plan(args, prog: str):
    from trtd.daemon.commands.export_triton import check_destination, plan_models, select_models

    models, source = _config(args, prog)
    chosen = select_models(models, args.model, source)
    out = Path(args.output)
    check_destination(out, args.force)
    return plan_models(chosen, args.cache_dir, args.rtx_engines), out, source


def _report(prog: str, planned, out: Path) -> None:
    for m in planned:
        for warning in m.warnings:
            print(f"{prog}: warning: model '{m.name}': {warning}", file=sys.stderr)
    for m in planned:
        where = f" gpus {m.gpus}" if m.gpus else ""
        engines = f", engines for {', '.join(m.cc_model_filenames) or 'any GPU'}" if m.format == "tensorrt_plan" else ""
        print(f"{m.name:<16} {m.format:<16} max_batch_size {m.max_batch_size}, {m.count} x {m.kind}{where}{engines}")
    print(f"wrote {len(planned)} model(s) to {out}")


def run_triton(args: argparse.Namespace) -> int:
    from trtd.daemon.commands.export_triton import ExportError, write_repository
    from trtd.daemon.config.settings import ConfigError

    prog = "trtd export triton"
    try:
        planned, out, source = _plan(args, prog)
        write_repository(planned, out, source)
    except (ExportError, ConfigError) as exc:
        return _fail(prog, exc)
    _report(prog, planned, out)
    return 0


def run_kserve(args: argparse.Namespace) -> int:
    from trtd.daemon.commands.export_kserve import InferenceService, ManifestError, suggest_name
    from trtd.daemon.commands.export_triton import ExportError, write_repository
    from trtd.daemon.config.settings import ConfigError

    prog = "trtd export kserve"
    out = Path(args.output)
    manifest = Path(args.manifest) if args.manifest else out.absolute().parent / f"{out.name}.inferenceservice.yaml"
    try:
        if manifest.exists() and not args.force:
            raise ExportError(f"--manifest {manifest} exists; pass --force to replace it")
        service = InferenceService(args.name or suggest_name(out.absolute().name), args.storage_uri, args.runtime)
        service.check()  # before anything is written
        planned, out, source = _plan(args, prog)
        gpus = max((max(m.gpus) + 1 for m in planned if m.gpus), default=0)
        text = InferenceService(service.name, service.storage_uri, service.runtime, gpus).yaml()
        write_repository(planned, out, source)
        try:
            manifest.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ExportError(f"--manifest {manifest}: cannot write it ({exc.strerror})") from None
    except (ExportError, ConfigError, ManifestError) as exc:
        return _fail(prog, exc)
    _report(prog, planned, out)
    print(f"wrote {manifest}: InferenceService '{service.name}' serving {args.storage_uri} with "
          f"{service.runtime}; upload {out} there, then kubectl apply -f {manifest}")
    return 0
