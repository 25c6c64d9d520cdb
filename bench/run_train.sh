#!/usr/bin/env bash
# Baseline training throughput: cxr vs the PyTorch reference, same machine,
# same thread count, one run. Prints both and the ratio.
#   bash bench/run_train.sh [build-dir] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
secs=${2:-10}
export CXR_BENCH_THREADS=${CXR_BENCH_THREADS:-$(nproc)}
cxr_out=$("$build/bench/bench_train" --benchmark_format=csv 2>/dev/null)
ref_out=$(/usr/bin/python3 bench/reference_train.py "$secs")
echo "$cxr_out" | grep -E '^"?BM_'
echo "$ref_out"
python3 - "$cxr_out" "$ref_out" <<'PY'
import csv, io, sys
rows = list(csv.DictReader(io.StringIO("\n".join(l for l in sys.argv[1].splitlines() if l.startswith(("name", '"BM', "BM"))))))
cxr = {r["name"].split("/")[0]: float(r["images_per_s"]) for r in rows}
ref = dict(l.split()[:2] for l in sys.argv[2].splitlines() if l.startswith("reference"))
t_c, t_r = cxr["BM_BaselineTrainStep"], float(ref["reference_train_images_per_s"])
p_c, p_r = cxr["BM_BaselinePredictOne"], float(ref["reference_predict1_images_per_s"])
print(f"train   cxr {t_c:8.1f} img/s  pytorch {t_r:8.1f} img/s  ratio {t_c/t_r:.2f}x")
print(f"predict cxr {p_c:8.1f} img/s  pytorch {p_r:8.1f} img/s  ratio {p_c/p_r:.2f}x")
PY
