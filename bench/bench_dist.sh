#!/usr/bin/env bash
# Data-parallel training throughput (docs/distributed.md): the same training
# on the same cores as 1 rank x T threads and as N ranks x T/N threads, on a
# synthetic dataset (noise images; positives carry a bright square), read
# from the runs' config.json (result.images_per_second: images trained per
# second of the fit loop, validation included, data loading excluded; for N
# ranks the images of all ranks over rank 0's time). Prints both, the
# speed-up and the scaling efficiency (speed-up / N on the same cores).
# Runs alternate (A B A B) so that a drifting machine load hits both alike.
#   bash bench/bench_dist.sh [build-dir] [ranks]
# Environment: CXR_BENCH_THREADS (cores, default nproc), CXR_BENCH_IMAGES
# (training images per class, default 256), CXR_BENCH_SIZE (px, default 64),
# CXR_BENCH_EPOCHS (default 2), CXR_BENCH_BATCH (default 32).
#
# Measured 2026-11-30 on the idle 2-core development VM, baseline CNN 64 px,
# 512 train images, batch 32, 2 epochs, best of two runs (img/s):
#   1 rank x 2 threads   448  (runs 448, 398)
#   1 rank x 1 thread    235  (runs 234, 235)
#   2 ranks x 1 thread   414  (runs 414, 406)
#   scaling efficiency against 2 x (1 rank x 1 thread) 88 %; 0.92x the
#   speed of 1 rank x 2 threads on the same cores (docs/distributed.md).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
ranks=${2:-2}
cores=${CXR_BENCH_THREADS:-$(nproc)}
per=$(( cores / ranks )); (( per >= 1 )) || per=1
images=${CXR_BENCH_IMAGES:-256}
size=${CXR_BENCH_SIZE:-64}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$work/data" "$images" "$size" <<'PY'
import os, random, struct, sys, zlib
root, n, s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(7)
def png(path, pix):
    raw = b"".join(b"\0" + bytes(pix[y * s:(y + 1) * s]) for y in range(s))
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", s, s, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
for split, k in (("train", n), ("val", max(8, n // 4)), ("test", 8)):
    for cls in ("COVID", "Normal"):
        d = os.path.join(root, split, cls)
        os.makedirs(d, exist_ok=True)
        for i in range(k):
            pix = [r.randint(0, 110) for _ in range(s * s)]
            if cls == "COVID":
                for y in range(s // 8, s // 3):
                    for x in range(s // 8, s // 3):
                        pix[y * s + x] = 220
            png(os.path.join(d, f"{i}.png"), pix)
PY
common=(train "$work/data" --size "$size" --epochs "${CXR_BENCH_EPOCHS:-2}"
        --batch-size "${CXR_BENCH_BATCH:-32}" --patience 0 --device cpu
        --quiet --cache-dir "$work/cache" --overwrite)
"$build/cxr" explore "$work/data" --size "$size" --cache-dir "$work/cache" --out "$work/explore" > /dev/null 2>&1 || true
speed() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['result']['images_per_second'])" "$1/config.json"; }
one=(); many=(); single=()
for rep in 1 2; do
  "$build/cxr" "${common[@]}" --threads "$cores" --out "$work/one" > /dev/null
  one+=("$(speed "$work/one")")
  "$build/cxr" "${common[@]}" --threads "$per" --out "$work/single" > /dev/null
  single+=("$(speed "$work/single")")
  "$build/cxr" "${common[@]}" --threads "$per" --nproc "$ranks" --out "$work/many" > /dev/null
  many+=("$(speed "$work/many")")
done
python3 - "$ranks" "$cores" "$per" "${one[*]}" "${many[*]}" "${single[*]}" <<'PY'
import sys
n, cores, per = int(sys.argv[1]), sys.argv[2], sys.argv[3]
runs = [[float(x) for x in a.split()] for a in sys.argv[4:7]]
a, b, c = (max(r) for r in runs)  # best of two: the least disturbed run
fmt = lambda r: ", ".join(f"{x:.0f}" for x in r)
print(f"1 rank x {cores} threads: {a:.0f} img/s (runs {fmt(runs[0])})")
print(f"1 rank x {per} threads: {c:.0f} img/s (runs {fmt(runs[2])})")
print(f"{n} ranks x {per} threads: {b:.0f} img/s (runs {fmt(runs[1])})")
print(f"speed-up over 1 rank x {cores} threads (same cores): {b / a:.2f}x")
print(f"scaling efficiency (N ranks / (N x 1 rank of {per} threads)): {b / (n * c):.0%}")
PY
