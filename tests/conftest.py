from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from daemon_process import serving  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _model_cache(tmp_path_factory):
    # Built-in models are generated once per test session, outside the user's cache.
    cache = tmp_path_factory.mktemp("model-cache")
    os.environ["TRTD_CACHE_DIR"] = str(cache)
    yield cache


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, _model_cache):
    """One daemon serving demo and volume3d, with fast reclaim and no region limits but /dev/shm's."""
    with serving(tmp_path_factory.mktemp("daemon"),
                 "reclaim_interval_s = 0.2\n"
                 "client_timeout_s = 1.5\n"
                 f"max_region_bytes = {1 << 50}\n"
                 f"max_bytes_per_client = {1 << 50}\n"
                 "max_regions_per_client = 16\n"
                 "[models.demo]\npath = \"builtin:demo\"\n"
                 "[models.volume3d]\npath = \"builtin:volume3d\"\n") as d:
        yield d
