#!/usr/bin/env bash
# Baseline training throughput: cxr vs the PyTorch reference, same machine,
# same thread count, one run. Prints both and the ratios.
#   bash bench/run_train.sh [build-dir] [seconds]
# cxr sets glibc malloc to keep freed memory (cxr::configure_allocator); the
# reference runs twice: as Python runs it by default, and with the same
# malloc settings through GLIBC_TUNABLES, so the ratio is shown both ways.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
secs=${2:-10}
export CXR_BENCH_THREADS=${CXR_BENCH_THREADS:-$(nproc)}
tuned="glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647"
cxr_out=$("$build/bench/bench_train" --benchmark_format=csv 2>/dev/null)
ref_out=$(/usr/bin/python3 bench/reference_train.py "$secs")
ref_tuned=$(GLIBC_TUNABLES=$tuned /usr/bin/python3 bench/reference_train.py "$secs")
echo "$cxr_out" | grep -E '^"?BM_'
echo "$ref_out"
python3 - "$cxr_out" "$ref_out" "$ref_tuned" <<'PY'
import csv, io, sys
rows = list(csv.DictReader(io.StringIO("\n".join(l for l in sys.argv[1].splitlines() if l.startswith(("name", '"BM', "BM"))))))
cxr = {r["name"].split("/")[0]: float(r["images_per_s"]) for r in rows}
def ref(text):
    return dict(l.split()[:2] for l in text.splitlines() if l.startswith("reference"))
r, rt = ref(sys.argv[2]), ref(sys.argv[3])
for what, key_c, key_r in (("train  ", "BM_BaselineTrainStep", "reference_train_images_per_s"),
                           ("predict", "BM_BaselinePredictOne", "reference_predict1_images_per_s")):
    c, p, pt = cxr[key_c], float(r[key_r]), float(rt[key_r])
    print(f"{what} cxr {c:8.1f} img/s  pytorch {p:8.1f} img/s  ratio {c/p:.2f}x"
          f"  | pytorch with cxr's malloc settings {pt:8.1f} img/s  ratio {c/pt:.2f}x")
PY
