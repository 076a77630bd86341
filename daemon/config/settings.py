"""Daemon configuration: typed dataclasses, loaded from TOML and/or CLI flags.

Example (trtd.toml):

    endpoint = "ipc:///run/trtd/trtd.sock"   # optional; TRTD_ENDPOINT or the default otherwise
    reclaim_interval_s = 1.0

    [models.demo]
    path = "builtin:demo"                   # a generated model, or a path to an .onnx file

    [models.segmenter]
    path = "/srv/models/seg.onnx"
    max_batch = 4
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from trtd.protocol.endpoint import ENDPOINT_ENV, EndpointError, default_endpoint, validate_endpoint

from trtd.daemon.serve.access import group_problems
from trtd.daemon.serve.metrics_address import metrics_problems

BUILTIN_PREFIX = "builtin:"
GiB = 1024**3
MAX_BATCH_LIMIT = 1 << 20  # keeps every size computed from it far inside int64
LOG_FORMATS = ("text", "json")


# max_queue_delay_us when a model leaves it at -1, per device kind: on the CPU waiting for company
# cost more than batching saved at every client count measured on the 2-core VM, on the H200 a
# short wait filled ResNet-18 batches (bench/results/2026-12-02-batching-cpu-2core.md, -gpu-h200.md).
DEFAULT_QUEUE_DELAY_US = {"cpu": 0, "gpu": 500}


def queue_delay_us(m: "ModelConfig") -> int:
    """The model's effective max_queue_delay_us: as configured, or its device's default (-1)."""
    if m.max_queue_delay_us >= 0:
        return m.max_queue_delay_us
    return DEFAULT_QUEUE_DELAY_US["gpu" if m.device >= 0 else "cpu"]


class ConfigError(ValueError):
    """A configuration problem, with the file/flag and what to change."""


@dataclass(slots=True)
class ModelConfig:
    name: str
    path: str  # a file, or "builtin:NAME" for a generated model
    backend: str = "onnxruntime"
    # Largest batch accepted on a dynamic first dimension; 0 = the backend's default.
    max_batch: int = 0
    # ONNX Runtime threads; 0 lets ONNX Runtime choose (one per physical core).
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    # CUDA device index; -1 runs on the CPU.
    device: int = -1
    # Independent executors (each with its own CUDA stream and device buffers on a
    # GPU): requests of different clients run concurrently on different instances.
    instances: int = 1
    # Requests waiting for a free instance beyond this fail fast with OVERLOADED.
    max_queue: int = 64
    # TorchScript files carry no I/O description: "NAME:SHAPE[:DTYPE]" per input,
    # SHAPE as comma-separated dims with -1 for the dynamic batch, e.g. "x:-1,3,224,224:float32".
    inputs: list[str] = field(default_factory=list)
    # TorchScript on a GPU: capture the model as a CUDA graph per instance and batch size, on
    # the first request of that size, and replay it (far fewer kernel launches from Python).
    # Other batch sizes run eagerly; graph_batches [] = 1, 2, 4, 8 (up to max_batch).
    cuda_graphs: bool = False
    graph_batches: list[int] = field(default_factory=list)
    # How a GPU instance's thread waits for its request to finish: "spin" (lowest latency, a
    # CPU core busy for the whole run) or "block" (sleeps; waking it costs a scheduler round trip).
    gpu_wait: str = "spin"
    # After answering a request of this model, the socket loop keeps polling for the next
    # request this long (µs) before it sleeps: a client that sends again soon (a loop) does not
    # wait for the daemon's thread to wake (70-150 µs on a server; more in a VM). Costs up to
    # this much CPU per request when no request comes. 0: sleep at once.
    idle_spin_us: int = 0
    # Dynamic batching (daemon/running/batching.py): requests of different clients whose inputs
    # agree apart from dimension 0 run as one batch of up to max_batch rows. Off by default: only
    # a model whose rows are independent may be batched (checked at load, see the README).
    dynamic_batching: bool = False
    # Longest a request waits for company when other clients are active (µs); a lone client
    # never waits. 0: batch only what has queued up while the instance was busy. -1: the
    # device's default, DEFAULT_QUEUE_DELAY_US (chosen from bench/results/2026-12-02-batching-*).
    max_queue_delay_us: int = -1
    # Batch sizes a batch is padded up to (rows beyond the requests' are never returned), e.g.
    # the CUDA-graph buckets; [] = run exactly the rows that came.
    preferred_batch_sizes: list[int] = field(default_factory=list)
    # TensorRT: version-compatible engines that embed the lean runtime run host code
    # from the engine file; allow it only for engines you trust.
    allow_engine_host_code: bool = False
    # TensorRT plugin libraries (custom ops) to load before building or deserializing.
    plugins: list[str] = field(default_factory=list)
    # backend = "tensorrt" with an ONNX path: served by ONNX Runtime at once, the engine
    # is built in the background, compared with ONNX Runtime, then swapped in.
    swap: str = "auto"                    # "auto" | "off" (stay on ONNX Runtime)
    engine_builder: str = "tensorrt"      # or "onnxruntime": an optimized ONNX model (no GPU needed)
    # Which TensorRT builds and runs the engine: "tensorrt" (any GPU TensorRT supports: datacenter
    # too), "tensorrt-rtx" (TensorRT for RTX: RTX GPUs, engines built ahead of time without a GPU),
    # or "auto": from what is installed and the GPU (engines/library.py; status says which and why).
    engine_library: str = "auto"
    profiles: list[str] = field(default_factory=list)  # one per profile: "x:MIN,OPT,MAX;y:..."
    workspace_mib: int = 0
    opt_level: int = 3
    hardware_compatible: bool = False
    version_compatible: bool = False
    compare_samples: int = 4              # seeded random inputs the engine must match ONNX Runtime on
    # Tolerances of the swap gate; 0 means the default for what is swapped in: 1e-3 for an
    # engine of the same precision, 1e-2 for FP16, 0.1 for INT8 (then mind the metrics of
    # `trtd validate` on real data: this gate only catches broken variants).
    compare_atol: float = 0.0
    compare_rtol: float = 0.0
    # Reduced precision, prepared in the background like an engine and swapped in after the
    # gate: "fp16", or "int8" with calibration samples (.npz or a folder of .npy).
    precision: str = ""
    calibration: str = ""
    calibration_method: str = "minmax"


@dataclass(slots=True)
class DaemonConfig:
    endpoint: str | None = None
    models: list[ModelConfig] = field(default_factory=list)
    # How often dead clients are looked for; their regions go within this interval.
    reclaim_interval_s: float = 1.0
    # Clients in another PID namespace prove liveness by heartbeat within this time.
    client_timeout_s: float = 30.0
    max_region_bytes: int = 4 * GiB
    max_regions_per_client: int = 64
    max_bytes_per_client: int = 16 * GiB
    # Daemon-wide caps: every client and region costs memory and file descriptors (two per region).
    max_clients: int = 1024
    max_regions: int = 4096
    log_level: str = "INFO"
    # POSIX group whose members may use the daemon: socket and regions 0660, its folder
    # 0750, all with this group. "" = the daemon's user only.
    group: str = ""
    # POSIX group that may also read the admin token (shutdown, load, unload): "" = the
    # daemon's user (and root) only. Members of `group` can use models but not change them.
    admin_group: str = ""
    # On stop (SIGTERM, the Windows service stop request, `shutdown`), requests already
    # running or queued get this long to finish and be answered before models are unloaded.
    drain_timeout_s: float = 10.0
    # The Prometheus metrics and health endpoint (/metrics, /healthz, /readyz), "HOST:PORT",
    # e.g. "127.0.0.1:9464"; "" = off. A non-loopback host is served too, with a warning.
    metrics: str = ""
    # "text" (one line per event) or "json" (one JSON object per line, for log pipelines).
    log_format: str = "text"


_MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)} - {"name"}
_DAEMON_FIELDS = {f.name for f in dataclasses.fields(DaemonConfig)} - {"models"}


def _check_type(where: str, key: str, value: object, expected: type) -> None:
    ok = isinstance(value, expected) and not (expected in (int, float) and isinstance(value, bool))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise ConfigError(f"{where}: '{key}' must be {expected.__name__}, got {value!r}")


def did_you_mean(word: str, choices) -> str:
    """'; did you mean 'X'?' for the choice closest to a misspelt `word`, '' when none is close."""
    close = difflib.get_close_matches(word, sorted(choices), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _build(cls: type, table: dict, **fixed):
    """`cls` from a table that config_check has already vetted (known keys, right types)."""
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    kwargs = dict(fixed)
    for key, value in table.items():
        kwargs[key] = float(value) if hints[key] == "float" else value
    return cls(**kwargs)


def read_toml(path: Path) -> tuple[str, dict]:
    """The file's text and its parsed table; ConfigError when missing or not TOML."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def load_config(path: str | Path, endpoint: str | None = None) -> DaemonConfig:
    """The configuration in the file; ConfigFileError listing every problem `trtd config check`
    finds (with its line) when one of them keeps the daemon from starting. `endpoint` (serve's
    --endpoint) replaces the file's."""
    # config_check builds on this module, hence the late import: one checker for both.
    from trtd.daemon.config.check import load_checked

    return load_checked(path, endpoint)[0]


def build_config(path: Path, data: dict) -> DaemonConfig:
    """The DaemonConfig of a parsed file that passed check_text (model paths made absolute)."""
    data = dict(data)
    models_table = data.pop("models", {})
    config = _build(DaemonConfig, data)
    for name, table in models_table.items():
        model = _build(ModelConfig, table, name=name)
        if not model.path.startswith(BUILTIN_PREFIX):
            # Relative model paths are relative to the config file, not the cwd of a service.
            model.path = str((path.parent / model.path).resolve())
        if model.calibration:
            model.calibration = str((path.parent / model.calibration).resolve())
        config.models.append(model)
    return config


def parse_model_flag(flag: str) -> ModelConfig:
    """--model NAME=PATH"""
    name, sep, path = flag.partition("=")
    if not sep or not name or not path:
        raise ConfigError(f"--model expects NAME=PATH (e.g. --model demo=builtin:demo), got {flag!r}")
    if not path.startswith(BUILTIN_PREFIX):
        path = str(Path(path).resolve())
    return ModelConfig(name=name, path=path)


def model_file_problem(path: Path) -> str | None:
    """Why `path` cannot be a model file, or None. Not only regular files: a named pipe is read
    like one (a model decrypted on the fly into a FIFO never touches the disk in the clear);
    the load then waits, as "loading", until the writer has delivered the model."""
    if not path.exists():
        return f"model file {path} does not exist"
    if path.is_dir():
        return f"model file {path} is a directory; name the model file inside it"
    if not (path.is_file() or path.is_fifo()):
        # A device such as /dev/zero would be read without end.
        return f"model file {path} is not a regular file or a named pipe"
    return _writable_by_others(path)


def _writable_by_others(path: Path) -> str | None:
    """A model is code the daemon runs as its own user (a TorchScript file can read and return
    the daemon's files; a TensorRT plugin is a shared library): one that another user can
    change would run that user's code as the daemon. POSIX only (Windows has ACLs instead)."""
    if sys.platform == "win32":
        return None
    import stat

    try:
        st = path.stat()
    except OSError as exc:
        return f"model file {path} cannot be read: {exc.strerror}"
    owner_ok = st.st_uid in (0, os.geteuid())
    if owner_ok and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return None
    who = "its group or other users" if owner_ok else f"its owner (uid {st.st_uid}), another user,"
    return (f"model file {path} can be changed by {who}; the daemon runs a model as its own user, "
            f"so it serves only files that user or root owns and nobody else may write "
            f"(chown, chmod go-w)")


def validate_model(m: ModelConfig) -> None:
    if not m.name:
        raise ConfigError("a model needs a name")
    if not 0 <= m.max_batch <= MAX_BATCH_LIMIT:
        raise ConfigError(f"model '{m.name}': max_batch must be 0..{MAX_BATCH_LIMIT}, got {m.max_batch}")
    if not 1 <= m.instances <= 64 or m.max_queue < 0:
        raise ConfigError(f"model '{m.name}': instances must be 1..64 and max_queue >= 0")
    if m.device < -1:
        raise ConfigError(f"model '{m.name}': device must be -1 (CPU) or a CUDA device index")
    if m.swap not in ("auto", "off"):
        raise ConfigError(f"model '{m.name}': swap must be \"auto\" or \"off\", got {m.swap!r}")
    if m.engine_builder not in ("tensorrt", "onnxruntime"):
        raise ConfigError(f"model '{m.name}': engine_builder must be \"tensorrt\" or \"onnxruntime\"")
    if m.engine_library not in ("auto", "tensorrt", "tensorrt-rtx"):
        raise ConfigError(f"model '{m.name}': engine_library must be \"auto\", \"tensorrt\" or "
                          f"\"tensorrt-rtx\", got {m.engine_library!r}"
                          f"{did_you_mean(m.engine_library, ('auto', 'tensorrt', 'tensorrt-rtx'))}")
    if m.engine_library == "tensorrt-rtx" and (m.hardware_compatible or m.version_compatible):
        raise ConfigError(f"model '{m.name}': engine_library = \"tensorrt-rtx\" with hardware_compatible "
                          f"or version_compatible: those are TensorRT options; a TensorRT-RTX engine "
                          f"runs on every RTX GPU of its targets already")
    if m.precision not in ("", "fp16", "int8"):
        raise ConfigError(f"model '{m.name}': precision must be \"fp16\" or \"int8\", got {m.precision!r}")
    if m.backend == "torch" and m.precision not in ("", "fp16"):
        raise ConfigError(f"model '{m.name}': a TorchScript model runs in FP32 or FP16 (precision = "
                          f"\"fp16\": weights and activations in half precision, inputs and outputs "
                          f"stay as declared); INT8 needs an ONNX model")
    if m.precision == "int8" and not m.calibration:
        raise ConfigError(f"model '{m.name}': precision = \"int8\" needs calibration = \"SAMPLES.npz\" "
                          f"(or a folder of .npy files) drawn from the data the model will see")
    if m.compare_samples < 1:
        raise ConfigError(f"model '{m.name}': compare_samples must be >= 1")
    if not all(isinstance(i, str) for i in m.inputs + m.profiles + m.plugins):
        raise ConfigError(f"model '{m.name}': inputs must be strings like \"x:-1,3,224,224:float32\"")
    if m.cuda_graphs and (m.backend not in ("torch", "tensorrt") or m.device < 0):
        raise ConfigError(f"model '{m.name}': cuda_graphs needs backend = \"torch\" or \"tensorrt\" on "
                          f"a GPU (device >= 0); ONNX Runtime and the CPU do not capture graphs")
    if not all(isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= MAX_BATCH_LIMIT
               for b in m.graph_batches):
        raise ConfigError(f"model '{m.name}': graph_batches must be batch sizes 1..{MAX_BATCH_LIMIT}, "
                          f"e.g. [1, 2, 4, 8], got {m.graph_batches!r}")
    if not 0 <= m.idle_spin_us <= 10_000:
        raise ConfigError(f"model '{m.name}': idle_spin_us must be 0..10000 (µs), got {m.idle_spin_us}")
    if m.gpu_wait not in ("spin", "block"):
        raise ConfigError(f"model '{m.name}': gpu_wait must be \"spin\" or \"block\", got {m.gpu_wait!r}")
    if not -1 <= m.max_queue_delay_us <= 1_000_000:
        raise ConfigError(f"model '{m.name}': max_queue_delay_us must be 0..1000000 (µs), or -1 for the "
                          f"device's default, got {m.max_queue_delay_us}")
    if not all(isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= MAX_BATCH_LIMIT
               for b in m.preferred_batch_sizes):
        raise ConfigError(f"model '{m.name}': preferred_batch_sizes must be batch sizes "
                          f"1..{MAX_BATCH_LIMIT}, e.g. [4, 8], got {m.preferred_batch_sizes!r}")
    if m.max_batch and any(b > m.max_batch for b in m.preferred_batch_sizes):
        raise ConfigError(f"model '{m.name}': preferred_batch_sizes {m.preferred_batch_sizes} has sizes "
                          f"above max_batch = {m.max_batch}; a batch never has more rows than that")
    if m.preferred_batch_sizes and not m.dynamic_batching:
        raise ConfigError(f"model '{m.name}': preferred_batch_sizes is set but "
                          f"dynamic_batching is not; add dynamic_batching = true")
    if m.graph_batches and not m.cuda_graphs:
        raise ConfigError(f"model '{m.name}': graph_batches is set but cuda_graphs is not; add "
                          f"cuda_graphs = true")


def config_problems(config: DaemonConfig) -> list[str]:
    """Every problem with the daemon-level settings and the models, each naming its key."""
    problems = []
    names = [m.name for m in config.models]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        problems.append(f"model names must be unique; repeated: {', '.join(sorted(dupes))}")
    for m in config.models:
        try:
            validate_model(m)
        except ConfigError as exc:
            problems.append(str(exc))
    problems += endpoint_problems(config.endpoint)
    if config.reclaim_interval_s <= 0:
        problems.append("reclaim_interval_s must be > 0")
    problems += [message for _, message in group_problems(config.group, config.admin_group)]
    if config.drain_timeout_s < 0:
        problems.append("drain_timeout_s must be >= 0")
    problems += metrics_problems(config.metrics)
    if config.log_format not in LOG_FORMATS:
        problems.append(f"log_format must be \"text\" or \"json\", got {config.log_format!r}"
                        f"{did_you_mean(config.log_format, LOG_FORMATS)}")
    if min(config.max_region_bytes, config.max_regions_per_client, config.max_clients,
           config.max_regions) <= 0:
        problems.append("max_region_bytes, max_regions_per_client, max_clients and max_regions "
                        "must be > 0")
    return problems


def endpoint_problems(endpoint: str | None) -> list[str]:
    """What is wrong with the endpoint the daemon would listen on: `endpoint` (the file's key or
    --endpoint) when set, else $TRTD_ENDPOINT, else the per-user default; named by its source."""
    if endpoint is not None:
        source, value = "", endpoint  # the message names the endpoint key already
    elif os.environ.get(ENDPOINT_ENV):
        source, value = f"${ENDPOINT_ENV} (the config sets no endpoint): ", os.environ[ENDPOINT_ENV]
    else:
        source, value = "the default endpoint (the config sets none): ", default_endpoint()
    try:
        validate_endpoint(value)
    except EndpointError as exc:
        return [f"{source}{exc}"]
    return []


def validate(config: DaemonConfig) -> None:
    """ConfigError naming every problem (one per line) when there is any."""
    problems = config_problems(config)
    if problems:
        raise ConfigError("\n".join(problems))
