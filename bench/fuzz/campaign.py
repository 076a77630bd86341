"""`python -m trtd.bench.fuzz`: a campaign of every kind of case against a daemon of its own."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..lib.daemon import BenchError, connect, started_daemon
from ..lib.meta import command
from ..lib.results import write_json
from . import __doc__ as PACKAGE_DOC
from .strategies import FRAMES, admin_request, mutated_frame, typed_request
from .target import DAEMON_CONFIG, FuzzTarget


def run_campaign(target: FuzzTarget, examples: int) -> dict[str, Any]:
    """Each kind of case `examples` times, as hypothesis draws them."""
    config = settings(max_examples=examples, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))

    def campaign(strategy: st.SearchStrategy[Any], method: Callable[[Any], None], n: int) -> None:
        @settings(config, max_examples=n)
        @given(strategy)
        def run(case: Any) -> None:
            method(case)
        run()

    campaign(typed_request(), target.request, examples)
    campaign(mutated_frame(), target.mutated, examples)
    campaign(admin_request(), target.admin, max(examples // 5, 10))
    campaign(FRAMES, target.frames, max(examples // 5, 20))  # each one is a new connection: fewer
    return target.summary()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m trtd.bench.fuzz", description=PACKAGE_DOC,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=2000,
                        help="cases per kind (typed, mutated; a fifth as many privileged ops with "
                             "the admin token, a fifth as many frame, routing-id and wire cases)")
    parser.add_argument("--out", help="write the JSON summary here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="trtd-fuzz-") as tmp:
        folder = Path(tmp)
        (folder / "d.toml").write_text(DAEMON_CONFIG)
        with started_daemon(folder, ["--config", str(folder / "d.toml")], log_level="ERROR",
                            log=folder / "d.log") as (endpoint, proc):
            try:
                connect(endpoint, proc, name="fuzzer-check").close()
            except BenchError as exc:
                raise SystemExit(str(exc)) from None
            started = time.monotonic()
            target = FuzzTarget(endpoint, proc.pid)
            try:
                run_campaign(target, args.examples)
            finally:
                summary = target.close()
            summary.update(seconds=round(time.monotonic() - started, 1), examples_per_kind=args.examples,
                           machine=f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus",
                           python=platform.python_version(), date=time.strftime("%Y-%m-%d"),
                           command=command("trtd.bench.fuzz", argv),
                           daemon_alive_at_end=proc.poll() is None)
        summary["daemon_exit_code"] = proc.returncode
    print(json.dumps(summary, indent=2))
    if args.out:
        write_json(args.out, summary)
    return 0 if summary["daemon_exit_code"] == 0 and summary["well_behaved_failures"] == 0 else 1
