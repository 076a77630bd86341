"""A model's engines in the engine cache, as Triton's `cc_model_filenames` wants them.

The cache keys an engine by the fingerprint of everything it depends on (engines/fingerprint.py);
its metadata keeps those inputs. Exported are the intact engines built from the very ONNX bytes
the model serves (`depends_on.onnx_sha256`): a full-TensorRT engine runs on the compute
capability it was built on (`depends_on.compute_capability`, "9.0"), a hardware-compatible one
on any Ampere or newer GPU (">=8.0": Triton's default file, used where no capability matches),
a TensorRT-RTX engine on each of its targets ("sm86" -> "8.6").

Triton's TensorRT backend (`platform: "tensorrt_plan"`) links full TensorRT, which cannot
deserialize a TensorRT-RTX engine (a separate library with its own engine format): those are
left out unless asked for (`include_rtx`), for a Triton whose TensorRT backend was built against
TensorRT-RTX. Where one compute capability has several engines, a full-TensorRT one wins, then
the newest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from trtd.daemon.engines.cache import CacheEntry, EngineCache
from trtd.daemon.engines.library import RTX, RTX_TARGETS, TENSORRT

HARDWARE_COMPATIBLE = ">=8.0"  # what fingerprint_inputs records for hardware-compatible engines


@dataclass(frozen=True)
class ExportedEngine:
    entry: CacheEntry
    library: str                      # "tensorrt" or "tensorrt-rtx"
    capabilities: tuple[str, ...]     # compute capabilities it runs on; () = any >= 8.0
    file_name: str                    # its name in the model's version folder
    max_batch: int                    # the largest batch all its profiles take; 0 without profiles
    tensorrt_version: str

    @property
    def path(self) -> Path:
        return self.entry.engine_path


@dataclass
class EngineSet:
    engines: list[ExportedEngine] = field(default_factory=list)        # the files to copy
    cc_model_filenames: dict[str, str] = field(default_factory=dict)   # "8.6" -> file name
    default_model_filename: str = ""                                   # a hardware-compatible engine
    notes: list[str] = field(default_factory=list)                     # engines left out, and why

    @property
    def max_batch(self) -> int:
        """The largest batch every exported engine takes (0: none has a batch profile)."""
        limits = [e.max_batch for e in self.engines if e.max_batch]
        return min(limits) if limits else 0


def profile_max_batch(metadata: dict) -> int:
    """The largest dimension 0 every profile's every input accepts (0: built without profiles)."""
    profiles = metadata.get("depends_on", {}).get("options", {}).get("profiles") or []
    tops = [r["max"][0] for p in profiles for r in p.get("inputs", []) if r.get("max")]
    return min(tops) if tops else 0


def describe_engine(entry: CacheEntry) -> ExportedEngine | None:
    meta = entry.metadata
    depends = meta.get("depends_on", {})
    library = meta.get("library")
    version = str(depends.get("tensorrt", "?"))
    if library == RTX:
        targets = tuple(meta.get("targets") or depends.get("targets") or ())
        caps = tuple(RTX_TARGETS[t] for t in targets if t in RTX_TARGETS)
        if not caps:
            return None
        return ExportedEngine(entry, RTX, caps, f"model.rtx-{'-'.join(targets)}.plan",
                              profile_max_batch(meta), version)
    if library == TENSORRT:
        cc = str(depends.get("compute_capability", ""))
        if cc == HARDWARE_COMPATIBLE:
            return ExportedEngine(entry, TENSORRT, (), "model.plan", profile_max_batch(meta), version)
        if not cc or not cc.replace(".", "").isdigit():
            return None
        return ExportedEngine(entry, TENSORRT, (cc,), f"model.sm{cc.replace('.', '')}.plan",
                              profile_max_batch(meta), version)
    return None  # ONNX Runtime's optimized models are cached beside engines; they are not plans


def _preference(engine: ExportedEngine) -> tuple:
    return (engine.library == TENSORRT, engine.entry.metadata.get("stored_at", ""))


def find_engines(cache_root: str | Path, onnx_sha256: str, include_rtx: bool = False) -> EngineSet:
    """The intact engines in the cache at `cache_root` built from the ONNX file of this hash."""
    cache = EngineCache(cache_root)
    found = EngineSet()
    usable: list[ExportedEngine] = []
    for entry in cache.entries():
        if entry.metadata.get("depends_on", {}).get("onnx_sha256") != onnx_sha256:
            continue
        engine = describe_engine(entry)
        if engine is None:
            continue
        if cache.lookup(entry.fingerprint, suffix=entry.engine_path.suffix) is None:
            found.notes.append(f"engine {entry.engine_path.name} is damaged or incomplete "
                               f"(`trtd cache verify` says why); left out")
            continue
        if engine.library == RTX and not include_rtx:
            found.notes.append(
                f"TensorRT-RTX engine {entry.fingerprint} (for {', '.join(entry.metadata.get('targets', []))}) "
                f"left out: Triton's TensorRT backend runs full-TensorRT engines; pass --rtx-engines "
                f"for a Triton whose TensorRT backend runs TensorRT-RTX")
            continue
        usable.append(engine)
    by_cc: dict[str, ExportedEngine] = {}
    default: ExportedEngine | None = None
    for engine in sorted(usable, key=_preference):  # the preferred one last, so it stays
        if not engine.capabilities:
            default = engine
        for cc in engine.capabilities:
            by_cc[cc] = engine
    chosen = {id(e): e for e in [*by_cc.values(), *([default] if default else [])]}
    found.engines = sorted(chosen.values(), key=lambda e: e.file_name)
    found.cc_model_filenames = {cc: by_cc[cc].file_name for cc in sorted(by_cc, key=_cc_key)}
    found.default_model_filename = default.file_name if default else ""
    versions = sorted({e.tensorrt_version for e in found.engines})
    if len(versions) > 1:
        found.notes.append(f"the engines were built by different TensorRT versions ({', '.join(versions)}); "
                           f"one Triton runs one TensorRT: rebuild them with the version of your Triton "
                           f"image")
    for engine in usable:
        if id(engine) not in chosen:
            found.notes.append(f"engine {engine.entry.fingerprint} is superseded by another for the "
                               f"same GPU ({', '.join(engine.capabilities) or 'any >= 8.0'}); left out")
    return found


def _cc_key(cc: str) -> tuple[int, ...]:
    return tuple(int(part) for part in cc.split("."))
