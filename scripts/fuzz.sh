#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang, ASan + UBSan) in build-fuzz and
# runs each in turn, seeded from inputs fuzz/make_seeds.cpp generates into
# FUZZ_WORK/seeds/<target>/ (docs/reliability.md).
#   scripts/fuzz.sh                      # every target, 5 minutes each
#   FUZZ_MINUTES=10 scripts/fuzz.sh fuzz_decode_image
#   FUZZ_BUILD_ONLY=1 scripts/fuzz.sh     # build, do not run
#   FUZZ_RUNS=1000000 scripts/fuzz.sh     # stop at 1 M executions instead
#   FUZZ_KEEP_GOING=1 scripts/fuzz.sh     # -fork=1: record a finding, go on
#   FUZZ_FORK=2 scripts/fuzz.sh           # -fork=2: two worker processes
# First every target replays fuzz/regressions/<target>/ (inputs of past
# findings); a replay that fails is reported like a fresh finding.
# Each target's corpus grows in a scratch folder (FUZZ_WORK, default
# /tmp/cxr-fuzz/<target>). Crash, leak
# and timeout inputs land in FUZZ_WORK/<target>/artifacts/. Exit status 1 when
# any target found something.
set -uo pipefail
cd "$(dirname "$0")/.."

minutes=${FUZZ_MINUTES:-5}
work=${FUZZ_WORK:-/tmp/cxr-fuzz}
build=${FUZZ_BUILD_DIR:-build-fuzz}
jobs=${FUZZ_BUILD_JOBS:-$(nproc)}
all=(fuzz_decode_image fuzz_keras_h5 fuzz_run_folder fuzz_tune_space)
targets=("$@")
((${#targets[@]})) || targets=("${all[@]}")

if [ ! -f "$build/build.ninja" ]; then
  # -O1 -g without NDEBUG: assertions stay on, stacks stay readable.
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
    -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" \
    -DCXR_FUZZ=ON -DCXR_BUILD_TESTS=OFF -DCXR_BUILD_BENCH=OFF || exit 2
fi
nice -n 10 ninja -C "$build" -j "$jobs" "${targets[@]}" make_seeds || exit 2
[ -n "${FUZZ_BUILD_ONLY:-}" ] && exit 0

# Leaks are findings (libFuzzer checks each input that allocated more than
# it freed); fuzz/lsan.supp lists the library-lifetime allocations that are
# not (docs/reliability.md). UBSan stops at the first report (the build also
# has -fno-sanitize-recover).
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/fuzz/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

"$build/fuzz/make_seeds" "$work/seeds" || exit 2

status=0
summary=()
for t in "${targets[@]}"; do
  dir="$work/$t"
  mkdir -p "$dir/corpus" "$dir/artifacts"
  cp -n "$work/seeds/$t"/* "$dir/corpus/" 2>/dev/null || true
  log="$dir/fuzz.log"
  limit=(-max_total_time=$((minutes * 60)))
  [ -n "${FUZZ_RUNS:-}" ] && limit+=(-runs="$FUZZ_RUNS")
  asan=$ASAN_OPTIONS
  common=(-rss_limit_mb=2048 -timeout=5 -artifact_prefix="$dir/artifacts/")
  # (The run-folder target no longer needs the slow unwinder, about 5x
  # slower: its suppressed LibTorch leak was in model.pt's zip reader, which
  # it no longer reaches; docs/reliability.md.)
  # (fuzz_keras_h5's libhdf5 runs in the reader program, a process of its
  # own and not instrumented: its crashes and huge allocations end that
  # process, not the fuzzer's; docs/reliability.md.)
  replay=""
  for r in fuzz/regressions/"$t"/*; do
    [ -f "$r" ] || continue
    if ! ASAN_OPTIONS=$asan "$build/fuzz/$t" "${common[@]}" "$r" >"$dir/replay.log" 2>&1; then
      replay+=" $(basename "$r")"
    fi
  done
  [ -n "$replay" ] && echo "fuzz: $t: regression inputs fail:$replay"
  rm -f "$dir"/artifacts/*  # a replayed crash is reported above, not below
  fork=()
  [ -n "${FUZZ_FORK:-}" ] && fork=(-fork="$FUZZ_FORK")
  [ -n "${FUZZ_KEEP_GOING:-}" ] &&
    fork=(-fork="${FUZZ_FORK:-1}" -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1)
  echo "fuzz: $t for up to $minutes min (log $log)"
  start=$(date +%s)
  ASAN_OPTIONS=$asan nice -n 10 "$build/fuzz/$t" "${limit[@]}" "${common[@]}" "${fork[@]}" \
    -print_final_stats=1 "$dir/corpus" >"$log" 2>&1
  rc=$?
  secs=$(($(date +%s) - start))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  # Fork mode: its closing line counts the last job's runs too.
  if [ -z "$execs" ]; then
    execs=$(sed -n 's/^INFO: fuzzed for \([0-9]*\) iterations.*/\1/p' "$log" | tail -1)
  fi
  # A run that dies early: the last status line's count.
  if [ -z "$execs" ]; then
    execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
  fi
  rate=$(( ${execs:-0} / (secs > 0 ? secs : 1) ))
  # Per kind: how many, and the first file (fork mode keeps every one).
  found=$(ls "$dir/artifacts" 2>/dev/null | sed 's/-.*//' | sort | uniq -c |
    while read -r n kind; do
      printf '%s %s (e.g. %s) ' "$n" "$kind" \
        "$(ls "$dir/artifacts" | grep -m1 "^$kind-")"
    done)
  line="$t: rc=$rc execs=${execs:-?} in ${secs}s (${rate} exec/s) corpus=$(ls "$dir/corpus" | wc -l)"
  [ -n "$found" ] && line+=" findings: $found"
  [ -n "$replay" ] && line+=" failing regressions:$replay"
  if [ "$rc" -ne 0 ] || [ -n "$found" ] || [ -n "$replay" ]; then
    status=1
    grep -m1 -E "ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error" \
      "$log" | sed 's/^/    /' || true
  fi
  summary+=("$line")
done
echo "fuzz summary (artifacts under $work/<target>/artifacts):"
printf '  %s\n' "${summary[@]}"
exit $status
