"""The C++ client's latency loop (sdk/cpp/bench/latency_bench.cpp) as a process this one drives.

The process connects its own trtd::Client to the daemon, makes a handle for the model and fills
its zero-copy views once; then each `block(system, n, settle)` asks it for `settle` untimed and
`n` timed calls of one system (copy, zero_copy or floor) and returns its samples in ns, timed in
C++ with std::chrono::steady_clock. Interleaving those blocks with this process's own systems
(trtd.bench.lib.interleave.measure_blocks) puts all of them in one run under the same noise.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from .daemon import BenchError
from .processes import start_process, stop_process

CPP_SYSTEMS = ("cpp_floor", "cpp_copy", "cpp_zero_copy")


class CppBench:
    def __init__(self, binary: Path, endpoint: str, model: str, feed: dict[str, np.ndarray], workdir: Path,
                 floor_endpoint: str, floor_message: bytes):
        workdir.mkdir(parents=True, exist_ok=True)
        argv = [str(binary), "--endpoint", endpoint, "--model", model]
        for name, array in feed.items():
            path = workdir / f"{name}.bin"
            np.ascontiguousarray(array).tofile(path)
            argv += ["--input", f"{name}:{array.dtype.name}:{'x'.join(map(str, array.shape))}:{path}"]
        message = workdir / "floor-message.bin"
        message.write_bytes(floor_message)
        argv += ["--floor", floor_endpoint, "--floor-message", str(message)]
        self._workdir = workdir
        self._proc = start_process(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._expect("ready")

    def _expect(self, word: str) -> str:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.startswith(word):
            raise BenchError(f"the C++ benchmark process said {line!r} instead of {word!r} "
                             f"(exit status {self._proc.poll()})")
        return line

    def _send(self, line: str) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()

    def block(self, system: str, n: int, settle: int) -> list[int]:
        """`settle` untimed then `n` timed calls of `system` (copy, zero_copy, floor): ns each."""
        self._send(f"run {system} {n} {settle}")
        return [int(v) for v in self._expect("samples").split()[1:]]

    def outputs(self) -> dict[str, dict[str, bytes]]:
        """Both paths' outputs, as raw bytes by output name: {"copy": {...}, "zero_copy": {...}}."""
        folder = self._workdir / "outputs"
        folder.mkdir(exist_ok=True)
        self._send(f"output {folder}")
        self._expect("ok")
        found: dict[str, dict[str, bytes]] = {"copy": {}, "zero_copy": {}}
        for path in folder.glob("*.bin"):
            for kind in ("zero_copy", "copy"):  # zero_copy_ first: copy_ is not its prefix, but be plain
                if path.stem.startswith(kind + "_"):
                    found[kind][path.stem[len(kind) + 1:]] = path.read_bytes()
                    break
        return found

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._send("quit")
                self._proc.wait(timeout=10)  # its client says goodbye on the way out
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                pass
        stop_process(self._proc, "C++ benchmark process")
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                stream.close()
