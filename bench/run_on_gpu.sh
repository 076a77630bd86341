#!/usr/bin/env bash
# One call on a lent GPU machine (see the device tool's README): install trtd and
# the pyzmq wheel carried in .whl/, run the GPU tests and the CPU suite, then the
# GPU benchmark. Everything it prints also goes to $OUT.
#   usage (repository root): OUT=/some/dir bash bench/run_on_gpu.sh [--bench-only|--tests-only|--harness-only|--gpu-and-bench|--batching|--suite-part K N]
#   --gpu-and-bench: the GPU tests and the benchmark, without the whole CPU suite.
#   --batching: the dynamic batching GPU tests (and the CUDA-graph ones it builds on), then the
#   batching sweep (trtd bench --batching --device cuda:0: ResNet-18 b1 requests, torch backend,
#   graphs off and on, batching off and on).
set -u
OUT=${OUT:-/tmp/trtd-gpu-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export TRTD_CACHE_DIR=/tmp/trtd-cache
{
  date -u
  nvidia-smi || true
  # The CPU matters to the suite too (ONNX Runtime's INT8 kernels differ by instruction set).
  lscpu | grep -E 'Model name|^CPU\(s\)' || true
  grep -o -w -E 'avx2|avx512f|avx512bw|avx512_vnni|avx_vnni|amx_int8' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
  $PY -m pip install --quiet --upgrade --no-deps --target /tmp/site .whl/*.whl
  $PY -m pip install --quiet --upgrade --no-deps --no-build-isolation --target /tmp/site .
  $PY -c "import sys, torch, zmq, trtd.daemon.system.cuda as c; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count()); print('pyzmq', zmq.__version__); print('cuda-python', c.versions(), c.device_count())"
} 2>&1 | tee "$OUT/setup.log"
if [ "${1:-}" = "--batching" ]; then
  $PY -m pytest -p no:cacheprovider -m gpu -v -rs tests/test_gpu_batching.py 2>&1 | tee "$OUT/gpu-batching-tests.log"
  $PY -m pytest -p no:cacheprovider -m gpu -v -rs tests/test_gpu.py -k "graph or outputs_equal or instances" 2>&1 | tee "$OUT/gpu-tests.log"
  $PY -m trtd.bench --batching --device cuda:0 --duration 3 --out "$OUT/batching-gpu" 2>&1 | tee "$OUT/batching-gpu.log"
  exit 0
fi
if [ "${1:-}" = "--suite-part" ]; then
  # The whole CPU suite in parts that each fit one device call: --suite-part K N runs every
  # N-th test file (sorted), starting at the K-th (1-based), and keeps the whole log.
  k=${2:?K}; n=${3:?N}
  files=$(ls tests/test_*.py | sort | awk -v k="$k" -v n="$n" '(NR - k) % n == 0')
  [ "$k" = 1 ] && files="tests/unit $files"  # the in-process unit tests go with the first part
  $PY -m pytest -p no:cacheprovider -q -rfEs $files > "$OUT/suite-part-$k-of-$n-full.log" 2>&1
  tail -n 40 "$OUT/suite-part-$k-of-$n-full.log" | tee "$OUT/suite-part-$k-of-$n.log"
  exit 0
fi
if [ "${1:-}" = "--harness-only" ]; then
  # trtd bench --device: eager vs TorchScript vs TensorRT rows, then the daemon comparison.
  $PY -m trtd.bench --device cuda:0 --out "$OUT/harness-gpu" 2>&1 | tee "$OUT/harness-gpu.log"
  exit 0
fi
if [ "${1:-}" != "--bench-only" ]; then
  # Every GPU-marked file (a plain `-m gpu tests/` would collect files whose test-only
  # dependencies, e.g. tritonclient, the GPU machine lacks).
  $PY -m pytest -p no:cacheprovider -m gpu -v -rs tests/test_gpu.py tests/test_gpu_batching.py \
    tests/test_gpu_metrics.py 2>&1 | tee "$OUT/gpu-tests.log"
  if [ "${1:-}" != "--gpu-and-bench" ]; then
    # The whole log is kept: a failure's name and traceback must survive (a tail once lost them).
    $PY -m pytest -p no:cacheprovider -q -rfEs tests > "$OUT/all-tests-full.log" 2>&1
    tail -n 40 "$OUT/all-tests-full.log" | tee "$OUT/all-tests.log"
  fi
fi
if [ "${1:-}" != "--tests-only" ]; then
  $PY -m trtd.bench.gpu --json "$OUT/gpu-bench.json" --markdown "$OUT/gpu-bench.md" 2>&1 | tee "$OUT/gpu-bench.log"
  {
    echo "## python -m trtd.bench.wakeup -n 300 --delays 0,100,300,600,1000,2000,5000"
    $PY -m trtd.bench.wakeup -n 300 --delays 0,100,300,600,1000,2000,5000
    for m in resnet18 volume3d; do
      echo "## python -m trtd.bench.gpu_profile --socket --model $m -n 200"
      $PY -m trtd.bench.gpu_profile --socket --model $m -n 200 2>&1 | tail -n 1
      echo "## python -m trtd.bench.gpu_profile --model $m (no sockets: DaemonCore in-process)"
      $PY -m trtd.bench.gpu_profile --model $m -n 200 2>&1 | head -n 2
    done
  } 2>&1 | tee "$OUT/gpu-where-time-goes.log"
fi
