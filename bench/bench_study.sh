#!/usr/bin/env bash
# The study-time benchmark (issue 17): runs `cxr study` once from scratch and
# prints the minutes of each step (from study.json), their sum, the wall time
# of the whole command and its peak resident memory.
#   bash bench/bench_study.sh [OUT] [cxr study flags...]
#     OUT   study folder to write; "" or "-" = a temporary folder, removed
#           afterwards. It must not hold a study.json already: a resumed
#           study skips its finished steps and would time nothing.
#   CXR_BIN=path   the cxr binary (default build/cxr)
# Examples:
#   bash bench/bench_study.sh - --quick                      (about a minute)
#   bash bench/bench_study.sh /tmp/study-bf16 --precision bf16 --threads 2
# Measure the default study on an idle machine, twice (docs/study.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CXR_BIN:-build/cxr}
out=${1:--}
shift || true
if [[ ! -x "$bin" ]]; then
  echo "bench_study.sh: $bin is not an executable; build it (ninja -C build cxr) or set CXR_BIN" >&2
  exit 2
fi
tmp=""
if [[ -z "$out" || "$out" == "-" ]]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  out="$tmp/study"
elif [[ -e "$out/study.json" ]]; then
  echo "bench_study.sh: $out/study.json exists: a resumed study skips finished steps; give a new folder" >&2
  exit 2
fi
log="${tmp:-$(dirname "$out")}/bench_study.$$.log"
mkdir -p "$(dirname "$log")"
echo "== $bin study --out $out $* ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
start=$(date +%s.%N)
status=0
# GNU time's %M: peak resident set size in KiB.
if [[ -x /usr/bin/time ]]; then
  /usr/bin/time -f "%M" -o "$out.rss" "$bin" study --out "$out" "$@" >"$log" 2>&1 || status=$?
else
  "$bin" study --out "$out" "$@" >"$log" 2>&1 || status=$?
fi
end=$(date +%s.%N)
if [[ $status -ne 0 ]]; then
  tail -n 20 "$log" >&2
  echo "bench_study.sh: cxr study failed (exit $status); log: $log" >&2
  exit "$status"
fi
rss=""
[[ -f "$out.rss" ]] && rss=$(tail -n 1 "$out.rss") && rm -f "$out.rss"
python3 - "$out/study.json" "$start" "$end" "$rss" <<'PY'
import json, sys
sj = json.load(open(sys.argv[1]))
wall = (float(sys.argv[3]) - float(sys.argv[2])) / 60
steps = sj.get("steps", {})
# The order the study runs them in; any other step name afterwards.
order = ["explore", "tune-baseline", "baseline-refit", "transfer",
         "transfer-refit", "evaluate", "ood-sets", "explain", "report"]
names = [s for s in order if s in steps] + sorted(set(steps) - set(order))
print("| step | minutes |")
print("|---|---:|")
total = 0.0
for s in names:
    m = steps[s].get("seconds", 0.0) / 60
    total += m
    print(f"| {s} | {m:.1f} |")
print(f"| **sum of the steps** | **{total:.1f}** |")
print(f"| wall time of `cxr study` | {wall:.1f} |")
if sys.argv[4]:
    print(f"peak resident memory: {int(sys.argv[4]) / 1048576:.2f} GiB")
print(f"device: {sj.get('device', '?')}; options: {json.dumps(sj.get('options', {}), sort_keys=True)}")
PY
[[ -n "$tmp" ]] || echo "log: $log" >&2
