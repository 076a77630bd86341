"""What the soak samples of the daemon while its clients run: process, status and /dev/shm."""

from __future__ import annotations

import os
import time
from typing import Any


def sample(client: Any, proc: Any, prefix: str, t0: float) -> dict[str, Any]:
    """RSS, descriptors and threads (psutil), the daemon's own counts, and its files in /dev/shm."""
    status = client.status()
    with proc.oneshot():
        row = {"t": time.time() - t0, "rss": proc.memory_info().rss, "fds": proc.num_fds(),
               "threads": proc.num_threads()}
    shm = [n for n in os.listdir("/dev/shm") if n.startswith(prefix)] if os.path.isdir("/dev/shm") else []
    row.update(regions=status.regions, region_bytes=status.region_bytes, shm_files=len(shm),
               clients=status.clients, pinned_bytes=status.pinned_bytes,
               device_used=sum(d.total_bytes - d.free_bytes for d in status.devices))
    return row
