"""The build process: `python -m trtd.daemon.engines.worker JOB.json`.

Builds run in their own process, started fresh (never forked from a daemon
that has initialised CUDA), so a builder that crashes or exhausts memory takes
only itself down. The job comes as a JSON file; the result is written to the
file the job names, and one JSON line on stdout says how it went.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace


def main(argv: list[str]) -> int:
    from trtd.daemon.engines.builders import BUILDERS, BuildError
    from trtd.daemon.engines.fingerprint import options_from_json

    job = json.loads(open(argv[0], encoding="utf-8").read())
    started = time.monotonic()

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        builder = BUILDERS[job["builder"]]
        options = options_from_json(job["options"])
        cap = job.get("workspace_cap_bytes") or 0
        if cap and (not options.workspace_bytes or options.workspace_bytes > cap):
            options = replace(options, workspace_bytes=cap)
        info: dict = {}
        data = builder(job["onnx"], options, job.get("timing_cache"), log, info)
    except (BuildError, ImportError, OSError, ValueError) as exc:
        print(json.dumps({"ok": False, "error": str(exc)}), flush=True)
        return 1
    with open(job["output"], "wb") as f:
        f.write(data)
    # `info`: what the builder learnt (an engine's layers), for the cache's metadata.
    print(json.dumps({"ok": True, "bytes": len(data), "seconds": time.monotonic() - started, "info": info}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
