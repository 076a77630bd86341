"""`trtd bench`: the daemon side by side with in-process execution and peer servers (see cli.py).

`from trtd.bench.harness import main` is what `trtd bench` calls (daemon/commands/cli.py).
"""

from .cli import main

__all__ = ["main"]
