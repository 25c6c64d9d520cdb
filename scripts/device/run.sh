#!/usr/bin/env bash
# One GPU session of cxr, on the lent machine (PyTorch + CUDA, no apt):
# builds cxr against that PyTorch's LibTorch with the dependencies packed by
# scripts/device/pack.sh, checks --device cuda end to end, runs the backbone
# benchmark against PyTorch on the GPU, trains ResNet50V2 from scratch and
# compares training configurations on validation. Everything it prints goes
# to $OUT/log.txt; per-run metrics to $OUT/results.jsonl.
#
#   usage (there): bash scripts/device/run.sh [DEADLINE_S] [EXPERIMENTS] [CHECKS]
# DEADLINE_S (default 480): no new experiment starts after this many seconds.
# EXPERIMENTS (default scripts/device/experiments-1.sh): calls of `train`.
# CHECKS (default 1): 0 skips the --device cuda sanity run and the benchmark.
set -uo pipefail
deadline="${1:-480}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
experiments="${2:-$root/scripts/device/experiments-1.sh}"
checks="${3:-1}"
cache="$root/device-cache"
out="${OUT:-/tmp/cxr-device-out}"
mkdir -p "$out"
exec > >(tee "$out/log.txt") 2>&1
SECONDS=0
step() { echo; echo "=== [$SECONDS s] $*"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'
nproc; g++ --version | head -1; cmake --version | head -1

# shellcheck source=scripts/device/build.sh
source "$root/scripts/device/build.sh"

step "dependencies"
device_deps || exit 1

step "configure"
build="$root/build-cuda"
device_configure "$build" -DCXR_BUILD_TESTS=OFF || exit 1

step "build"
device_build "$build" cxr bench_backbones || exit 1
cxr="$build/cxr"
"$cxr" --version

data="$cache/cxr-seed"
weights="$cache/weights/mobilenet_v2_1.0_224_imagenet.h5"
runs=/tmp/cxr-runs
mkdir -p "$runs"
export CXR_DATA="$data"

# train NAME ARGS...: trains on cuda, evaluates val and test, appends a
# line to results.jsonl.
train() {
  local name="$1"
  shift
  if ((SECONDS > deadline)); then
    echo "skipped $name: past the ${deadline}s deadline"
    return
  fi
  step "train $name: $*"
  local t0=$SECONDS
  local left=$((deadline + 90 - SECONDS))
  timeout "$((left < 240 ? left : 240))" "$cxr" train "$data" --out "$runs/$name" --device cuda --quiet "$@" ||
    { echo "train $name failed"; return; }
  local t1=$SECONDS
  for split in val test; do
    "$cxr" evaluate "$runs/$name" --split "$split" --data "$data" \
      --device cuda --bootstrap 200 --out "$runs/$name/eval-$split" >/dev/null ||
      echo "evaluate $name $split failed"
  done
  python3 - "$runs/$name" "$name" "$((t1 - t0))" "$*" >>"$out/results.jsonl" <<'PY'
import json, sys, csv
run, name, secs, args = sys.argv[1:5]
r = {"name": name, "args": args, "train_seconds": int(secs)}
for split in ("val", "test"):
    try:
        m = json.load(open("%s/eval-%s/metrics.json" % (run, split)))
    except Exception as e:
        r[split] = str(e)
        continue
    r[split] = {k: round(m[k]["value"], 4) for k in
                ("accuracy", "recall", "specificity", "auc")}
hist = list(csv.DictReader(open(run + "/history.csv")))
r["epochs"] = len(hist)
best = min(hist, key=lambda h: float(h["val_loss"] or "inf"))
r["best_epoch"] = best["epoch"]
print(json.dumps(r))
PY
  tail -1 "$out/results.jsonl"
}

if [[ $checks == 1 ]]; then
step "cuda sanity: tiny baseline train, evaluate, predict, explain"
"$cxr" train "$data" --out "$runs/sanity" --device cuda --quiet --size 64 \
  --epochs 2 --filters 8,16 && \
"$cxr" predict "$runs/sanity" "$data/test/COVID" --device cuda --csv "$runs/sanity/pred.csv" | tail -3 && \
"$cxr" explain "$runs/sanity" "$data/test/COVID" --device cuda --out "$runs/sanity/explain" 2>&1 | tail -3

step "benchmark: backbones on cuda, LibTorch vs PyTorch, batch 64"
PYTHON=python3 bash "$root/bench/run_backbones.sh" "$build" 8 1 cuda 64 \
  2>&1 | tee "$out/bench_backbones_cuda.txt"
fi

# The experiments: calls of train (above), from a file.
# shellcheck source=/dev/null
source "$experiments"

step "collect"
tar -C "$runs" -czf "$out/runs.tar.gz" --exclude='*.pt' --exclude='panels' \
  --exclude='thumbs' --exclude='records' .
ls -la "$out"
echo "done in $SECONDS s"
