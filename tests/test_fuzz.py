"""Protocol fuzzing against a real daemon (the engine is trtd.bench.fuzz; longer campaigns:
`python -m trtd.bench.fuzz --examples N`, or TRTD_FUZZ_EXAMPLES=N for these tests)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, example, given, settings

from daemon_process import serving
from trtd.bench.fuzz.strategies import FRAMES, admin_request, mutated_frame, typed_request
from trtd.bench.fuzz.target import DAEMON_CONFIG, FuzzTarget

EXAMPLES = int(os.environ.get("TRTD_FUZZ_EXAMPLES", "250"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("fuzz"), DAEMON_CONFIG) as d:
        t = FuzzTarget(d.endpoint, d.pid)
        yield t
        summary = t.close()
        print(f"\nfuzz cases: {summary}")
        assert summary["well_behaved_failures"] == 0
        assert summary["well_behaved_ok"] > 0
        assert d.alive()


@FUZZ
@given(body=typed_request())
def test_typed_requests_with_wrong_and_extreme_fields(target, body):
    target.request(body)


@FUZZ
@given(case=mutated_frame())
def test_mutated_frames(target, case):
    target.mutated(case)


@settings(FUZZ, max_examples=max(EXAMPLES // 5, 10))
@given(body=admin_request())
# Besides what hypothesis draws, each handler once on its success path and load on a file
# that fails, so the counts below are certain to see them.
@example(body={"op": "load", "name": "fz0", "path": "builtin:demo"})
@example(body={"op": "load", "name": "fz1", "path": "/nonexistent/model.onnx"})
@example(body={"op": "unload", "name": "fz0"})
@example(body={"op": "reload"})
def test_privileged_requests_with_the_admin_token(target, body):
    target.admin(body)


@settings(FUZZ, max_examples=max(EXAMPLES // 5, 20))
@given(case=FRAMES)
def test_extra_and_oversized_frames(target, case):
    target.frames(case)


def test_every_kind_ran_and_the_daemon_answered_within_the_contract(target):
    counts = target.summary()
    assert counts["cases"]["typed"] >= EXAMPLES * 0.9, counts
    assert all(counts["cases"][kind] > 0 for kind in ("multi_frame", "oversized", "routing_id", "wire")), counts
    assert sum(v for k, v in counts["cases"].items() if k.startswith("mutated.")) >= EXAMPLES * 0.9
    # Most cases are refused; some plausible infers must succeed, or the checks saw nothing.
    assert counts["replies"].get("ok", 0) > 0 and "INTERNAL" not in counts["replies"], counts
    # With the admin token the handlers themselves answered: never the gate.
    by_kind = counts["replies_by_kind"]
    assert sum(v for k, v in counts["cases"].items() if k.startswith("admin.")) >= EXAMPLES // 5 * 0.9, counts
    assert not any("UNAUTHORIZED" in v for k, v in by_kind.items() if k.startswith("admin")), by_kind
    assert {"ok", "LOAD_FAILED", "BAD_MESSAGE"} <= set(by_kind["admin.load"]), by_kind
    assert "ok" in by_kind["admin.unload"] and "ok" in by_kind["admin.reload"], by_kind
    assert "demo" in [i.name for i in target.victim_client.models()]  # the checks' model stayed
