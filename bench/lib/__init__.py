"""What several benchmarks share; nothing here is a benchmark or has a command of its own.

The benchmarks (the modules and packages beside this one: latency, gpu, soak, fuzz, ...) are
thin: they say what they measure and import the helpers here for how. These modules import
each other, trtd's public names and third-party libraries, never a benchmark, so that a change
to one benchmark cannot break another through a shared import (tests/test_bench_harness.py
checks the rule, and that bench has no import cycle).
"""
