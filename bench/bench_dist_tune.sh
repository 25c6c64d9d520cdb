#!/usr/bin/env bash
# Distributed tuning (docs/distributed.md): the same small grid tuned by
# 1 rank x T threads and by N ranks x T/N threads (the same cores), wall
# time of each, the speed-up and the scaling efficiency (speed-up / N).
# Trials are whole units of work, so the ideal is N-fold while trials >= N.
#   bash bench/bench_dist_tune.sh [build-dir] [data] [ranks]
# data: a dataset folder (default ../shared/data/cxr-seed); it is decoded
# once into a scratch cache before the timed runs.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
data=${2:-../shared/data/cxr-seed}
ranks=${3:-2}
cores=${CXR_BENCH_THREADS:-$(nproc)}
per=$(( cores / ranks )); (( per >= 1 )) || per=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
grid="lr=1e-3,3e-3 dropout=0.2,0.4"
common=(--grid $grid --size ${CXR_BENCH_SIZE:-32} --epochs ${CXR_BENCH_EPOCHS:-2}
        --batch-size 32 --patience 0 --device cpu --cache-dir "$work/cache")
"$build/cxr" explore "$data" --size ${CXR_BENCH_SIZE:-32} --cache-dir "$work/cache" --out "$work/explore" > /dev/null 2>&1 || true
t() { local s=$(date +%s.%N); "$@" > /dev/null 2> "$work/log" || { cat "$work/log"; exit 1; }
      python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$s" "$(date +%s.%N)"; }
# 1 rank x T/N threads is the per-rank baseline (scaling efficiency); 1 rank
# x T threads uses the same cores as the N ranks (skip it with
# CXR_BENCH_SAME_CORES=0: under load, OpenMP teams of several threads lose
# far more than single-threaded processes, which dominates that ratio).
solo=$(t "$build/cxr" tune "$data" "${common[@]}" --threads "$per" --out "$work/solo")
many=$(t "$build/cxr" tune "$data" "${common[@]}" --threads "$per" --nproc "$ranks" --out "$work/many")
one=0
if [[ ${CXR_BENCH_SAME_CORES:-1} == 1 ]]; then
  one=$(t "$build/cxr" tune "$data" "${common[@]}" --threads "$cores" --out "$work/one")
fi
python3 - "$solo" "$many" "$one" "$ranks" "$cores" "$per" <<'PY'
import sys
solo, many, one = (float(x) for x in sys.argv[1:4])
n, cores, per = int(sys.argv[4]), sys.argv[5], sys.argv[6]
print(f"tune, 4 trials: 1 rank x {per} threads {solo:.1f} s;  {n} ranks x {per} threads {many:.1f} s")
print(f"speed-up {solo / many:.2f}x  scaling efficiency {solo / many / n:.0%}")
if one > 0:
    print(f"1 rank x {cores} threads (the same cores as the {n} ranks) {one:.1f} s: "
          f"{n} ranks are {one / many:.2f}x faster")
PY
cmp <(cut -d, -f1-9 "$work/solo/trials.csv") <(cut -d, -f1-9 "$work/many/trials.csv") > /dev/null \
  && echo "trials.csv: the same trials and results as 1 rank x $per threads" \
  || echo "trials.csv: results differ from 1 rank x $per threads"
