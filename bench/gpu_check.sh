#!/usr/bin/env bash
# One command for a borrowed GPU machine (no network, preinstalled torch/triton, <= 10 minutes):
#
#   bash bench/gpu_check.sh OUTDIR            # install, GPU test tier, full benchmark suite, rest of the tests
#   bash bench/gpu_check.sh OUTDIR --dry-run  # anywhere (CPU): no install, GPU tier (skips), tiny benchmark
#
# Everything lands under OUTDIR: logs/*.log, junit-*.xml, results/<device>.{json,csv,png},
# readme_table.md, status.json (one entry per step: rc, seconds) and summary.txt. On a GPU the
# results are also copied into bench/results/ of this checkout (commit them from there).
#
# Time plan (default total 570 s, GPU_CHECK_TOTAL_S overrides), one budget per phase:
#   1. editable install (<= 120 s; on failure a PYTHONPATH staging tree is used instead, and the
#      log says which);
#   2. precompile (<= 150 s): `fastlift kernels warmup` compiles, on every CPU core, the Triton
#      specialisations the GPU tier and the benchmark launch (the compile check's workloads, for
#      this GPU's own target) into Triton's cache, so a cold cache does not eat the test budget;
#      its plan (counts, estimated time) is in logs/precompile.log and precompile.json, and what
#      does not fit its budget compiles on first use as before;
#   3. `pytest -m gpu` (<= 180 s);
#   4. `fastlift bench --scenario all` with a budget of what is left minus 75 s (the suite skips
#      cases that do not fit and records why; a hard timeout backs the budget up);
#   5. the CPU-visible tests with the remaining time.
# Every step is capped by `timeout`; a step that fails or times out does not stop the later ones.
#
# Environment: PYTHON (default: python, else python3), GPU_CHECK_TOTAL_S, GPU_CHECK_PRECOMPILE_S,
# GPU_CHECK_GPU_TESTS_S, GPU_CHECK_BENCH_ARGS (extra arguments for fastlift bench).
set -u -o pipefail

usage() { echo "usage: $0 OUTDIR [--dry-run] [--no-copy]" >&2; exit 2; }
[ $# -ge 1 ] || usage
OUT=$1; shift
DRY=0; COPY=1
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --no-copy) COPY=0 ;;
    *) usage ;;
  esac
  shift
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$OUT/logs" "$OUT/results" || exit 2
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/logs/gpu_check.log"
: > "$LOG"
exec > >(tee -a "$LOG") 2>&1

TOTAL=${GPU_CHECK_TOTAL_S:-570}
PRECOMPILE_S=${GPU_CHECK_PRECOMPILE_S:-150}
GPU_TESTS_S=${GPU_CHECK_GPU_TESTS_S:-180}
START=$SECONDS
export PYTHONUNBUFFERED=1
STATUS="$OUT/status.json"
STEPS=()

left() { echo $(( TOTAL - (SECONDS - START) )); }
say() { echo "[gpu_check +$(( SECONDS - START ))s] $*"; }
record() {  # name rc seconds note
  STEPS+=("{\"step\": \"$1\", \"rc\": $2, \"seconds\": $3, \"note\": \"$4\"}")
  local IFS=,
  printf '{"dry_run": %s, "install": "%s", "gpu": %s, "steps": [%s]}\n' \
    "$([ $DRY = 1 ] && echo true || echo false)" "${INSTALL:-none}" "${GPU:-false}" "${STEPS[*]}" > "$STATUS"
}
run_step() {  # name cap_seconds command...
  local name=$1 cap=$2; shift 2
  if [ "$cap" -lt 10 ]; then
    say "skip $name: only ${cap}s left"
    record "$name" -1 0 "skipped: time"
    return 0
  fi
  say "$name (cap ${cap}s): $*"
  local t0=$SECONDS rc
  timeout --signal=TERM --kill-after=15 "$cap" "$@" > "$OUT/logs/$name.log" 2>&1
  rc=$?
  tail -n 25 "$OUT/logs/$name.log"
  local note="ok"
  [ $rc -eq 124 ] && note="timed out after ${cap}s"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && note="exit $rc"
  say "$name: $note ($(( SECONDS - t0 ))s, log logs/$name.log)"
  record "$name" $rc $(( SECONDS - t0 )) "$note"
  return 0
}

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif command -v python >/dev/null 2>&1; then PY=python
else PY=python3; fi

say "repo $REPO, out $OUT, python $(command -v "$PY"), total budget ${TOTAL}s, dry-run $DRY"
say "time plan: install <= 120s, precompile <= ${PRECOMPILE_S}s, GPU tests <= ${GPU_TESTS_S}s, benchmark: what is left - 75s, other tests: the rest"
{
  echo "date: $(date -u +%FT%TZ)"; echo "host: $(hostname)"; uname -a
  "$PY" - <<'PYEOF' 2>&1
import importlib, sys
print("python", sys.version.split()[0], sys.executable)
for name in ("torch", "triton", "numpy", "pytest", "hypothesis", "pytest_benchmark", "matplotlib", "nvtx"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "?"))
    except Exception as exc:
        print(name, "MISSING", type(exc).__name__)
try:
    import torch
    print("cuda", torch.version.cuda, "available", torch.cuda.is_available())
    for i in range(torch.cuda.device_count()):
        print("gpu", i, torch.cuda.get_device_name(i))
except Exception as exc:
    print("torch probe failed", exc)
PYEOF
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi 2>&1 | head -20
  (cd "$REPO" && git rev-parse HEAD && git status --short | head -20) 2>&1
} > "$OUT/logs/environment.log" 2>&1
cat "$OUT/logs/environment.log"

GPU=false
if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then GPU=true; fi
if [ "$GPU" != true ]; then
  say "no CUDA GPU is visible to torch on this machine"
  if [ $DRY = 0 ]; then
    say "nothing to measure: rerun on a GPU machine, or with --dry-run to exercise the script on CPU"
    record "gpu-detect" 4 0 "no CUDA GPU"
    echo "no CUDA GPU visible; see logs/environment.log" > "$OUT/summary.txt"
    exit 4
  fi
fi
record "gpu-detect" 0 0 "gpu=$GPU"

# ---------------------------------------------------------------- 1. install (offline)
INSTALL=none
if [ $DRY = 1 ]; then
  say "dry run: not installing (would run: $PY -m pip install --no-deps --no-build-isolation -e $REPO)"
  INSTALL=existing
else
  t0=$SECONDS
  if (cd "$REPO" && timeout 120 "$PY" -m pip install --no-deps --no-build-isolation --no-input -e . ) \
      > "$OUT/logs/install.log" 2>&1; then
    INSTALL=editable
    say "editable install ok ($(( SECONDS - t0 ))s)"
  else
    say "editable install failed ($(tail -n 3 "$OUT/logs/install.log" | tr '\n' ' ')); falling back to PYTHONPATH"
    STAGE="$OUT/pkgroot"
    rm -rf "$STAGE" && mkdir -p "$STAGE/fastlift"
    for f in "$REPO"/fastlift/*; do ln -s "$f" "$STAGE/fastlift/$(basename "$f")"; done
    for sub in kernels train bench; do ln -s "$REPO/$sub" "$STAGE/fastlift/$sub"; done
    export PYTHONPATH="$STAGE${PYTHONPATH:+:$PYTHONPATH}"
    export PYTHONSAFEPATH=1   # keep the checkout's plain fastlift/ folder (cwd) off sys.path
    INSTALL=pythonpath
  fi
  record "install" 0 $(( SECONDS - t0 )) "$INSTALL"
fi
# Import check from outside the checkout, so that what is imported is what was installed/staged.
if (cd "$OUT" && "$PY" -c "import fastlift, fastlift.kernels, fastlift.bench, fastlift.train, fastlift.cli; print('fastlift', fastlift.__version__, 'from', fastlift.__file__, '| kernels', fastlift.kernels.__file__)") \
    > "$OUT/logs/import.log" 2>&1; then
  say "import check ok: $(cat "$OUT/logs/import.log")"
  record "import" 0 0 "$INSTALL"
else
  cat "$OUT/logs/import.log"
  say "fastlift does not import; stopping"
  record "import" 1 0 "import failed"
  exit 1
fi

# pytest-benchmark may be missing on the GPU machines: pyproject's addopts names its flag.
PYTEST_EXTRA=()
if ! "$PY" -c "import pytest_benchmark" >/dev/null 2>&1; then
  PYTEST_EXTRA=(-o "addopts=-ra")
  say "pytest-benchmark not installed: overriding pyproject addopts (--benchmark-disable)"
fi

# ---------------------------------------------------------------- 2. precompile into Triton's cache
# Leaves >= 380 s for the later phases; the warm-up stops starting compiles 20 s before its cap.
NPROC=$(nproc 2>/dev/null || echo 4)
if [ $DRY = 1 ]; then
  # dry run: only the counting pass and the plan, on a small workload (nothing to compile for)
  CAP=90
  WARM_ARGS=(--plan --quick --precision bf16 --kernel stream_layer)
else
  CAP=$(( $(left) - 380 )); [ $CAP -gt "$PRECOMPILE_S" ] && CAP=$PRECOMPILE_S
  WARM_ARGS=(--jobs "$NPROC" --budget-s $(( CAP > 40 ? CAP - 20 : 20 )))
fi
run_step "precompile" "$CAP" bash -c 'cd "$1" && shift && exec "$@"' _ "$OUT" \
  env -u TRITON_INTERPRET "$PY" -m fastlift.cli kernels warmup "${WARM_ARGS[@]}" --json "$OUT/precompile.json" --overwrite

# ---------------------------------------------------------------- 3. GPU test tier
CAP=$(( $(left) - 200 )); [ $CAP -gt "$GPU_TESTS_S" ] && CAP=$GPU_TESTS_S
cd "$REPO" || exit 1
GPU_TEST_PATHS=(tests)
[ $DRY = 1 ] && GPU_TEST_PATHS=(tests/test_gpu.py)   # dry run: exercise the step, skip collecting everything
run_step "pytest-gpu" "$CAP" "$PY" -m pytest -m gpu -q -rs "${PYTEST_EXTRA[@]}" --junitxml="$OUT/junit-gpu.xml" \
  "${GPU_TEST_PATHS[@]}"

# ---------------------------------------------------------------- 4. benchmark suite
BENCH_S=$(( $(left) - 75 ))
if [ $DRY = 1 ]; then
  BENCH_ARGS=(--plan tiny --device cpu --no-merge)
else
  BENCH_ARGS=(--scenario all)
fi
# shellcheck disable=SC2206
EXTRA_BENCH=(${GPU_CHECK_BENCH_ARGS:-})
run_step "bench" $(( BENCH_S + 30 )) bash -c 'cd "$1" && shift && exec "$@"' _ "$OUT" \
  "$PY" -m fastlift.cli bench "${BENCH_ARGS[@]}" --budget-s $(( BENCH_S > 20 ? BENCH_S - 20 : 1 )) \
  --out "$OUT/results" "${EXTRA_BENCH[@]}"
(cd "$OUT" && "$PY" -m fastlift.bench.readme_table --results "$OUT/results") > "$OUT/readme_table.md" 2>&1 || true

# ---------------------------------------------------------------- 5. the rest of the tests
if [ $DRY = 1 ]; then
  say "dry run: skipping the CPU-visible test run (CI covers it)"
  record "pytest-rest" -1 0 "skipped: dry run"
else
  run_step "pytest-rest" $(( $(left) - 15 )) "$PY" -m pytest -m "not gpu and not slow" -q \
    "${PYTEST_EXTRA[@]}" --junitxml="$OUT/junit-rest.xml" tests
fi

# ---------------------------------------------------------------- 6. results into the checkout
if [ $DRY = 0 ] && [ $COPY = 1 ] && [ "$GPU" = true ]; then
  mkdir -p "$REPO/bench/results"
  for f in "$OUT"/results/*.json "$OUT"/results/*.csv "$OUT"/results/*.png; do
    [ -e "$f" ] && cp "$f" "$REPO/bench/results/" && say "copied $(basename "$f") to bench/results/"
  done
fi

{
  echo "gpu_check finished in $(( SECONDS - START ))s (budget ${TOTAL}s), install: $INSTALL, gpu: $GPU, dry-run: $DRY"
  for s in "${STEPS[@]}"; do echo "  $s"; done
  echo "results: $(ls "$OUT/results" 2>/dev/null | tr '\n' ' ')"
} | tee "$OUT/summary.txt"
FAILED=0
for s in "${STEPS[@]}"; do
  case "$s" in *'"rc": 0,'*|*'"rc": -1,'*) ;; *) FAILED=1 ;; esac
done
exit $FAILED
