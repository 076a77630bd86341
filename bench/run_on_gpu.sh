#!/usr/bin/env bash
# One call on a lent GPU machine (see the device tool's README): install trtd and
# the pyzmq wheel carried in .whl/, run the GPU tests and the CPU suite, then the
# GPU benchmark. Everything it prints also goes to $OUT.
#   usage (repository root): OUT=/some/dir bash bench/run_on_gpu.sh [--bench-only|--tests-only|--harness-only|--gpu-and-bench|--batching|--suite-part K N|--rtx]
#   --gpu-and-bench: the GPU tests and the benchmark, without the whole CPU suite.
#   --batching: the dynamic batching GPU tests (and the CUDA-graph ones it builds on), then the
#   batching sweep (trtd bench --batching --device cuda:0: ResNet-18 b1 requests, torch backend,
#   graphs off and on, batching off and on).
#   --rtx: TensorRT-RTX on this GPU (the H200: compute capability 9.0, which it does not support):
#   `trtd doctor` (default and with RTX models), `trtd build` under auto (refused, and why) and
#   with --library tensorrt-rtx (builds for RTX GPUs), a daemon with an RTX engine and `trtd
#   status`, then the RTX tests (tests/test_rtx_*.py), all into $OUT/rtx/. Needs the TensorRT-RTX
#   wheels for this Python in .whl/; the libs wheel (95 MB) is more than one call carries (64 MiB),
#   so it comes split in two: build/rtx-a/NAME.part-00 (carried by a first call, kept on the
#   machine as an ignored path) and build/rtx-b/NAME.part-01 (carried with .whl/ by this one).
set -u
OUT=${OUT:-/tmp/trtd-gpu-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export TRTD_CACHE_DIR=/tmp/trtd-cache
for part in build/rtx-b/*.whl.part-01; do  # the split TensorRT-RTX libs wheel, joined (see --rtx)
  [ -e "$part" ] || continue
  name=$(basename "$part" .part-01)
  mkdir -p .whl && cat "build/rtx-a/$name.part-00" "$part" > ".whl/$name"
done
{
  date -u
  nvidia-smi || true
  sha256sum .whl/*.whl || true
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
if [ "${1:-}" = "--rtx" ]; then
  R="$OUT/rtx"
  mkdir -p "$R"
  export TRTD_RUNTIME_DIR="$R/run" TRTD_CACHE_DIR="$R/cache" XDG_CONFIG_HOME="$R/xdg"
  MODEL=$($PY -c "from trtd.daemon.builtin.onnx_models import builtin_model_path as p; print(p('resnet18'))")
  PROFILE=x:1x3x224x224,4x3x224x224,8x3x224x224
  say() { echo "## $*"; "$@"; echo "## exit $?"; }
  {
    nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv || true
    $PY -c "import tensorrt_rtx as t; print('tensorrt_rtx', t.__version__)"
    say $PY -m trtd.daemon doctor
    say $PY -m trtd.daemon build "$MODEL" --profile "$PROFILE"   # auto: neither library runs on this GPU
    say $PY -m trtd.daemon build "$MODEL" --library tensorrt-rtx --profile "$PROFILE" -o "$R/resnet18.engine" --inspect
  } > "$R/doctor-build.log" 2>&1
  cat > "$R/rtx.toml" <<TOML
[models.seg]
path = "builtin:resnet18"
backend = "tensorrt"
device = 0
[models.shipped]
path = "$R/resnet18.engine"
backend = "tensorrt"
device = 0
[models.demo]
path = "builtin:demo"
TOML
  {
    say $PY -m trtd.daemon doctor --config "$R/rtx.toml"
    $PY -m trtd.daemon serve --config "$R/rtx.toml" --endpoint "ipc://$R/d.sock" > "$R/daemon.log" 2>&1 &
    daemon=$!
    for _ in $(seq 60); do  # until the seg model's engine build has said how it ended
      $PY -m trtd.daemon status --endpoint "ipc://$R/d.sock" 2>/dev/null | grep -q "seg.*engine build: \(unavailable\|failed\|passed\|rejected\)" && break
      sleep 2
    done
    say $PY -m trtd.daemon status --endpoint "ipc://$R/d.sock"
    kill -TERM "$daemon"; wait "$daemon"; echo "## daemon exit $?"
  } > "$R/doctor-status.log" 2>&1
  $PY -m pytest -p no:cacheprovider -v -rs --durations=15 tests/test_rtx_gpu.py tests/test_rtx_runtime.py \
    tests/test_rtx_build.py tests/test_rtx_library.py > "$R/rtx-tests.log" 2>&1
  tail -n 25 "$R/rtx-tests.log"; tail -n 40 "$R/doctor-build.log" "$R/doctor-status.log"
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
