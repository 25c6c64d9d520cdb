#!/usr/bin/env bash
# Runs bench_backbones (LibTorch) and reference_backbones.py (PyTorch) with
# the same thread count and prints images/s of both and their ratio.
#
# usage: bench/run_backbones.sh [BUILD_DIR] [THREADS] [MIN_TIME_S] [DEVICE] [BATCH]
#   BUILD_DIR   folder holding bench/bench_backbones (default: build)
#   THREADS     intra-op threads for both (default: nproc)
#   MIN_TIME_S  timed seconds per configuration (default: 1)
#   DEVICE      cpu or cuda (default: cpu)
#   BATCH       images per step (default: 16)
# PYTHON (environment) names the interpreter with torch (default /usr/bin/python3).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
build="${1:-build}"
threads="${2:-$(nproc)}"
min_time="${3:-1}"
device="${4:-cpu}"
batch="${5:-16}"
bin="$build/bench/bench_backbones"
if [[ ! -x "$bin" ]]; then
  echo "run_backbones.sh: $bin not found; build it with" \
       "'ninja -C $build bench_backbones'" >&2
  exit 2
fi
python="${PYTHON:-/usr/bin/python3}"
if ! "$python" -c "import torch" 2>/dev/null; then
  echo "run_backbones.sh: $python cannot import torch;" \
       "install python3-torch" >&2
  exit 2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads"
export CXR_BENCH_DEVICE="$device" CXR_BENCH_BATCH="$batch"

echo "== LibTorch (device=$device, batch=$batch, threads=$threads, min_time=${min_time}s)" >&2
"$bin" --benchmark_min_time="$min_time" --benchmark_format=json \
  --benchmark_out="$tmp/cpp.json" --benchmark_out_format=json >/dev/null
echo "== PyTorch $("$python" -c 'import torch; print(torch.__version__)')" >&2
# cxr (and the benchmark) set glibc malloc to keep freed memory
# (cxr::configure_allocator); REF_MALLOC=cxr gives the reference the same
# settings through GLIBC_TUNABLES, REF_MALLOC=default (default) leaves it as
# Python runs.
ref_env=()
if [[ "${REF_MALLOC:-default}" == cxr ]]; then
  ref_env=(env GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647)
  echo "== reference with cxr's malloc settings" >&2
fi
"${ref_env[@]}" "$python" "$here/reference_backbones.py" --threads "$threads" \
  --min-time "$min_time" --device "$device" --batch "$batch" >"$tmp/py.jsonl"

"$python" - "$tmp/cpp.json" "$tmp/py.jsonl" <<'EOF'
import json
import sys

cpp = {}
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    # "BM_Transfer/mobilenetv2_fwd/128/real_time"
    _, what, size = b["name"].split("/")[:3]
    arch, mode = what.split("_", 1)
    cpp["%s/%s/%s/%d" % (arch, mode, size, b["batch"])] = b["images/s"]
py = {}
for line in open(sys.argv[2]):
    r = json.loads(line)
    py[r["name"]] = r["images_per_s"]

print("%-28s %12s %12s %8s" % ("config (arch/mode/px/batch)", "libtorch",
                               "pytorch", "ratio"))
for name in sorted(cpp):
    p = py.get(name)
    ratio = "%.2f" % (cpp[name] / p) if p else "n/a"
    print("%-28s %12.1f %12s %8s" % (name, cpp[name],
                                     "%.1f" % p if p else "n/a", ratio))
print("images/s; ratio = libtorch / pytorch (> 1: C++ faster)")
EOF
