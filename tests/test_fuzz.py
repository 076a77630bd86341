"""Protocol fuzzing against a real daemon (the engine is trtd.bench.fuzz; longer campaigns:
`python -m trtd.bench.fuzz --examples N`, or TRTD_FUZZ_EXAMPLES=N for these tests)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings

from daemon_process import serving
from trtd.bench.fuzz import DAEMON_CONFIG, FRAMES, FuzzTarget, mutated_frame, typed_request

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


@settings(FUZZ, max_examples=max(EXAMPLES // 10, 10))
@given(case=FRAMES)
def test_extra_and_oversized_frames(target, case):
    target.frames(case)


def test_every_kind_ran_and_the_daemon_answered_within_the_contract(target):
    counts = target.summary()
    assert counts["cases"]["typed"] >= EXAMPLES * 0.9, counts
    assert counts["cases"]["multi_frame"] > 0 and counts["cases"]["oversized"] > 0, counts
    assert sum(v for k, v in counts["cases"].items() if k.startswith("mutated.")) >= EXAMPLES * 0.9
    # Most cases are refused; some plausible infers must succeed, or the checks saw nothing.
    assert counts["replies"].get("ok", 0) > 0 and "INTERNAL" not in counts["replies"], counts
