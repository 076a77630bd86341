"""trtd's benchmarks (`python -m trtd.bench.NAME`; `trtd bench` is trtd.bench.harness).

Each benchmark is a thin module or package here that says what it measures; how (timing and
statistics, the daemon it starts, the floor, in-process runners, result files, plots) is
shared in trtd.bench.lib, which imports no benchmark. tests/test_bench_harness.py checks that
bench has no import cycle and imports no private name of trtd.daemon.
"""
