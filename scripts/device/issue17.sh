#!/usr/bin/env bash
# The prepared GPU session for issues 17 (GPU training at benchmark speed,
# the GPU step matches the CPU step, the full-grid study on one GPU) and 16
# (the distributed CUDA path). Prepared on the 2-core CPU box, dry-run there
# with DEVICE=cpu; not yet run on a GPU (docs/gpu-runs.md).
#
# How the lead runs it (device tool), after, here:
#   bash scripts/device/pack.sh        (device-cache/: deps, cxr-seed JPEGs, weights)
#   bash scripts/device/pack-tests.sh  (device-cache/: GoogleTest, Gloo headers)
# then ONE call:
#   run(command="bash scripts/device/issue17.sh", carry=["device-cache"],
#       timeout_s=600)
# It ends by itself well inside 600 s (DEADLINE_S, default 500: steps that
# would start later are skipped, each step is bounded by `timeout`). The
# full-grid study does not fit after the rest in 15 minutes of device time;
# its own call (another session, or this one if >= 9 minutes are left):
#   run(command="bash scripts/device/issue17.sh study", carry=["device-cache"],
#       timeout_s=600)
# Everything printed goes to $OUT/log.txt; $OUT/summary.txt holds the tables,
# $OUT/results.json the numbers, $OUT/logs.tar.gz the other logs (configure,
# build, each run: the tool brings back at most 8 files), $OUT/study.tar.gz
# the study folder without weights.
#
#   usage: bash scripts/device/issue17.sh [all|study]
# Environment (defaults for the GPU; the CPU dry run sets the small ones):
#   DEVICE=cuda      cpu runs the same logic on the CPU (a dry run)
#   BUILD=build-cuda the build folder; SKIP_BUILD=1 uses it as it is
#   DEADLINE_S=500   no step starts after this many seconds
#   SIZE=224 BATCH=64 BENCH_S=3 (seconds per timed benchmark)
#   BENCH_SIZE=$SIZE             bench_backbones has 128 and 224 px only
#   FT_EPOCHS=3 RN_EPOCHS=3      cxr train fine-tuning epochs timed (MobileNetV2
#                                after one frozen epoch, ResNet50V2 alone)
#   DIST_SIZE=64 DIST_EPOCHS=2   the --nproc 2 run
#   STUDY_ARGS="--full-grid"     the study's flags (dry run: --quick)
#   STUDY_LIMIT_S=540            study mode: the study's own bound
set -uo pipefail
mode="${1:-all}"
case "$mode" in all | study) ;; *)
  echo "usage: bash scripts/device/issue17.sh [all|study]" >&2
  exit 2
  ;;
esac
root="$(cd "$(dirname "$0")/../.." && pwd)"
cache="$root/device-cache"
out="${OUT:-/tmp/cxr-issue17-out}"
mkdir -p "$out"
exec > >(tee "$out/log.txt") 2>&1
SECONDS=0
device="${DEVICE:-cuda}"
build="${BUILD:-$root/build-cuda}"
[[ "$build" = /* ]] || build="$root/$build"
deadline="${DEADLINE_S:-500}"
size="${SIZE:-224}"
bench_size="${BENCH_SIZE:-$size}"
batch="${BATCH:-64}"
bench_s="${BENCH_S:-3}"
data="${CXR_DATA:-$cache/cxr-seed}"
weights="${WEIGHTS:-$cache/weights/mobilenet_v2_1.0_224_imagenet.h5}"
python="${PYTHON:-python3}"
work=/tmp/cxr-issue17
rm -rf "$work" && mkdir -p "$work"
results="$out/results.json"
echo "{}" >"$results"
summary="$out/summary.txt"
: >"$summary"

step() { echo; echo "=== [$SECONDS s] $*"; }
# On every exit: all but the main files into logs.tar.gz (8 files come back).
finish() {
  local extra=() f
  for f in "$out"/*; do
    case "${f##*/}" in
      log.txt | summary.txt | results.json | study.tar.gz | logs.tar.gz) ;;
      *) extra+=("${f##*/}") ;;
    esac
  done
  if ((${#extra[@]})); then
    tar -C "$out" -czf "$out/logs.tar.gz" "${extra[@]}" &&
      (cd "$out" && rm -rf "${extra[@]}")
  fi
  ls -la "$out"
  echo "done in $SECONDS s"
}
trap finish EXIT
# bounded SECONDS CMD...: runs CMD under timeout; never past the deadline
# plus a 60 s grace, so that one stuck step cannot eat the session.
bounded() {
  local s="$1"
  shift
  local left=$((deadline + 60 - SECONDS))
  ((left < s)) && s=$left
  if ((s < 5)); then
    echo "skipped (deadline): $*"
    return 124
  fi
  timeout --kill-after=10 "$s" "$@"
}
# late NAME: true (and says so) when the deadline has passed.
late() {
  if ((SECONDS > deadline)); then
    echo "skipped $1: past the ${deadline} s deadline"
    return 0
  fi
  return 1
}
# record KEY VALUE: one number or string into results.json.
record() {
  "$python" - "$results" "$1" "$2" <<'PY'
import json, sys
path, key, value = sys.argv[1:4]
r = json.load(open(path))
try:
    r[key] = float(value)
except ValueError:
    r[key] = value
json.dump(r, open(path, "w"), indent=1, sort_keys=True)
PY
}
# speed RUN_DIR: images/s of a run (config.json: images trained per second
# of the fit loop, validation included, loading excluded).
speed() {
  "$python" -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["result"]["images_per_second"], 1))' \
    "$1/config.json" 2>/dev/null || echo nan
}
# steady RUN_DIR PHASE: train images / median seconds of the phase's epochs
# after its first (no warm-up, cuDNN autotuning or cache fill in it).
steady() {
  "$python" - "$1" "$2" "$data" <<'PY' 2>/dev/null || echo nan
import csv, os, statistics, sys
run, phase, data = sys.argv[1:4]
n = sum(len(fs) for _, _, fs in os.walk(os.path.join(data, "train")))
rows = [r for r in csv.DictReader(open(os.path.join(run, "history.csv")))
        if r["phase"] == phase]
secs = [float(r["seconds"]) for r in rows[1:]] or [float(r["seconds"]) for r in rows]
print(round(n / statistics.median(secs), 1))
PY
}

step "machine ($mode, device $device)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null ||
  echo "no nvidia-smi"
"$python" -c 'import torch, torch.distributed as d; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available(), "nccl", d.is_nccl_available(), "gloo", d.is_gloo_available())'
nproc
g++ --version | head -1
cmake --version | head -1
if [[ ! -d "$data" ]]; then
  echo "no dataset at $data: run scripts/device/pack.sh here and carry device-cache"
  exit 1
fi

# ---- 1. build ----------------------------------------------------------------
if [[ "${SKIP_BUILD:-0}" == 1 ]]; then
  step "build: SKIP_BUILD=1, using $build as it is"
else
  # shellcheck source=scripts/device/build.sh
  source "$root/scripts/device/build.sh"
  step "dependencies"
  device_deps || exit 1
  # Gloo's headers: the PyTorch install's own when it ships them, else
  # Debian's (pack-tests.sh), another Gloo version than the one compiled
  # into that LibTorch: if --nproc then crashes, that is the first suspect.
  torch_inc="$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "include"))')"
  gloo_args=()
  if [[ -f "$torch_inc/gloo/config.h" ]]; then
    echo "gloo headers: PyTorch's ($torch_inc/gloo)"
    gloo_args=(-DCXR_GLOO_INCLUDE="$torch_inc")
  elif [[ -f "$cache/gloo.tar.xz" ]]; then
    mkdir -p /tmp/cxr-gloo && tar -xJf "$cache/gloo.tar.xz" -C /tmp/cxr-gloo
    echo "gloo headers: none in PyTorch; Debian's libgloo-dev headers (another version)"
    gloo_args=(-DCXR_GLOO_INCLUDE=/tmp/cxr-gloo/usr/include)
  else
    echo "gloo headers: none (cxr builds single-process; step 4 will say so)"
  fi
  tests=OFF
  [[ "$mode" == all && -f "$cache/test-deps.tar.xz" ]] && tests=ON
  step "configure (tests $tests)"
  # CXR_WERROR stays off: another compiler than CI's may warn differently.
  # configure BUILD_TESTS: device_configure (build.sh) under timeout.
  configure() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    bounded 180 env root="$root" out="$out" prefixes="$prefixes" libdir="$libdir" \
      bash -c 'source "$root/scripts/device/build.sh" && device_configure "$@"' configure \
      "$build" -DCXR_BUILD_TESTS="$1" -DCXR_WERROR=OFF "${gloo_args[@]}"
  }
  if ! configure "$tests"; then
    [[ $tests == ON ]] || exit 1
    echo "configure with tests failed: again without them (no GpuStep test)"
    tests=OFF
    configure OFF || exit 1
  fi
  step "build"
  targets=(cxr bench_backbones bench_train)
  [[ $tests == ON ]] && targets+=(cxr_unit_tests)
  # -k 0: a test that fails to compile must not stop cxr and the benchmarks.
  # shellcheck disable=SC2016 # expanded by the inner bash
  bounded 360 env root="$root" out="$out" \
    bash -c 'source "$root/scripts/device/build.sh" && device_build "$@"' build \
    "$build" -k 0 "${targets[@]}"
  [[ -x "$build/cxr" && -x "$build/bench/bench_backbones" ]] || exit 1
fi
cxr="$build/cxr"
"$cxr" --version
dist_line="$(grep -h "dist:" "$out/configure.log" 2>/dev/null | tail -1)"
nccl_pg="$(grep -h "^CXR_NCCL_PG:" "$build/CMakeCache.txt" 2>/dev/null)"
echo "distributed: ${dist_line:-unknown (no configure log)}; ${nccl_pg:-CXR_NCCL_PG unset}"
record build_dist "${dist_line:-unknown}"
export CXR_DATA="$data"
# In the build folder (git-ignored): a warm machine keeps it between calls,
# so `issue17.sh study` after a partial study in `all` resumes it (cxr study
# resumes a folder it finds) and reuses the decoded images.
cache_dir="$build/issue17-cache"
study_dir="$build/issue17-study"

if [[ "$mode" == study ]]; then
  # ---- 5. the study on its own ------------------------------------------------
  step "study ${STUDY_ARGS:---full-grid} --device $device (bound ${STUDY_LIMIT_S:-540} s)"
  # A partial study left by `all` on this (warm) machine is resumed: its
  # seconds count towards the total.
  before=0
  [[ -d "$study_dir" && -f "$study_dir.seconds" ]] && before=$(cat "$study_dir.seconds")
  echo "seconds already spent on this study folder: $before"
  t0=$SECONDS
  # shellcheck disable=SC2086 # STUDY_ARGS is a list of flags
  bounded "${STUDY_LIMIT_S:-540}" "$cxr" study ${STUDY_ARGS:---full-grid} --device "$device" \
    --data "$data" --weights "$weights" --shared "$cache" --cache-dir "$cache_dir" \
    --out "$study_dir" 2>&1 | tail -40
  rc=${PIPESTATUS[0]}
  secs=$((SECONDS - t0 + before))
  echo "$secs" >"$study_dir.seconds"
  how="this call $((SECONDS - t0)) s + earlier $before s"
  if [[ $rc -eq 0 ]]; then
    line="study ${STUDY_ARGS:---full-grid} on $device: $secs s ($((secs / 60)) min $((secs % 60)) s; $how); goal < 600 s on one H200"
  else
    line="study ${STUDY_ARGS:---full-grid} on $device: NOT finished (exit $rc) after $secs s ($how)"
  fi
  echo "$line" | tee -a "$summary"
  record study_seconds "$secs"
  record study_exit "$rc"
  # Without weights and OOD statistics (tens of MB each; 16 MiB come back).
  tar -C "$(dirname "$study_dir")" -czf "$out/study.tar.gz" --exclude='*.pt' \
    --exclude='*.safetensors' --exclude='panels' --exclude='thumbs' --exclude='records' \
    "$(basename "$study_dir")"
  exit 0
fi

# ---- 3. numerics: the GPU step matches the CPU step ---------------------------
step "numerics: GpuStep test (cxr_unit_tests)"
if [[ -x "$build/tests/cxr_unit_tests" ]]; then
  bounded 120 "$build/tests/cxr_unit_tests" --gtest_filter='GpuStep*' >"$out/gpu_step.txt" 2>&1
  rc=$?
  tail -8 "$out/gpu_step.txt"
  verdict="exit $rc"
  grep -q "SKIPPED \]" "$out/gpu_step.txt" && verdict="SKIPPED (no CUDA)"
  [[ $rc -eq 0 ]] && grep -q "PASSED  \] 1 test" "$out/gpu_step.txt" && verdict="PASSED"
  echo "GpuStep (CUDA step vs CPU step, |dw| <= 1e-4 after 2 SGD steps): $verdict" |
    tee -a "$summary"
  record gpu_step_exit "$rc"
else
  echo "GpuStep: cxr_unit_tests not built (see build.log / test-deps.tar.xz)" | tee -a "$summary"
fi

# ---- 2. benchmark: backbones, cxr train, PyTorch eager --------------------------
step "bench_backbones fwd+bwd, $device, batch $batch, $bench_size px"
late bench_backbones ||
  CXR_BENCH_DEVICE="$device" CXR_BENCH_BATCH="$batch" bounded 120 \
    "$build/bench/bench_backbones" --benchmark_filter="BM_Transfer/(mobilenetv2|resnet50v2)_fwd_bwd/$bench_size" \
    --benchmark_min_time="$bench_s" --benchmark_format=json \
    --benchmark_out="$out/bench_backbones.json" --benchmark_out_format=json >/dev/null
bench_of() {
  "$python" - "$out/bench_backbones.json" "$1" <<'PY' 2>/dev/null || echo nan
import json, sys
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    if b["name"].startswith("BM_Transfer/%s_fwd_bwd/" % sys.argv[2]):
        print(round(b["images/s"], 1))
        break
else:
    print("nan")
PY
}
bench_mn=$(bench_of mobilenetv2)
bench_rn=$(bench_of resnet50v2)
echo "bench fwd+bwd img/s: mobilenetv2 $bench_mn, resnet50v2 $bench_rn"

step "cxr train on $device: MobileNetV2 $size px fine-tuning, batch $batch"
mn_run="$work/train-mnv2"
late "cxr train mnv2" ||
  bounded 180 "$cxr" train "$data" --out "$mn_run" --device "$device" --quiet --overwrite \
    --model mobilenetv2 --weights "$weights" --size "$size" --batch-size "$batch" \
    --epochs 1 --fine-tune-epochs "${FT_EPOCHS:-3}" --patience 0 --cache-dir "$cache_dir"
cxr_mn=$(steady "$mn_run" fine-tune)
echo "cxr train mnv2: steady fine-tune $cxr_mn img/s (run average $(speed "$mn_run"))"

# No ImageNet weights for ResNet50V2 here: random weights, --epochs 0 (cxr's
# phase 1 freezes the backbone even without weights), all epochs in the
# fine-tuning phase, which trains it all with batch norm in training mode
# (as scripts/device/experiments-1.sh did).
step "cxr train on $device: ResNet50V2 $size px, random weights, batch $batch"
rn_run="$work/train-rn50"
late "cxr train rn50" ||
  bounded 180 "$cxr" train "$data" --out "$rn_run" --device "$device" --quiet --overwrite \
    --model resnet50v2 --size "$size" --batch-size "$batch" \
    --epochs 0 --fine-tune-epochs "${RN_EPOCHS:-3}" --fine-tune-lr 1e-3 --patience 0 \
    --cache-dir "$cache_dir"
cxr_rn=$(steady "$rn_run" fine-tune)
echo "cxr train rn50: steady $cxr_rn img/s (run average $(speed "$rn_run"))"

step "PyTorch eager training loop on $device (same models, batch, augmentation)"
late "reference" ||
  bounded 150 "$python" "$root/scripts/device/reference_train_cuda.py" --device "$device" \
    --size "$size" --batch "$batch" --seconds "$bench_s" | tee "$out/reference_train.jsonl"
ref_of() {
  "$python" - "$out/reference_train.jsonl" "$1" "$2" <<'PY' 2>/dev/null || echo nan
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["arch"] == sys.argv[2] and r["loop"] == sys.argv[3]:
        print(r["images_per_s"])
        break
else:
    print("nan")
PY
}

"$python" - "$results" >>"$summary" <<PY
import json, math
rows = [("mobilenetv2", "$bench_mn", "$cxr_mn", "$(ref_of mobilenetv2 sync)", "$(ref_of mobilenetv2 nosync)"),
        ("resnet50v2", "$bench_rn", "$cxr_rn", "$(ref_of resnet50v2 sync)", "$(ref_of resnet50v2 nosync)")]
r = json.load(open("$results"))
f = lambda s: float(s) if s not in ("", "nan") else math.nan
print("issue 17 GPU goals, $device, $size px (bench $bench_size px), batch $batch (img/s; cxr train = steady fine-tuning epoch,"
      " validation included; ref = PyTorch eager, best of its sync / no-sync loops)")
print("%-12s %9s %9s %9s %9s %12s %12s" % ("model", "bench", "cxr", "ref-sync", "ref-nosync",
                                            "cxr/bench", "cxr/ref"))
for arch, b, c, rs, rn in rows:
    b, c, rs, rn = map(f, (b, c, rs, rn))
    ref = max(x for x in (rs, rn, -1.0) if not math.isnan(x))
    vs_bench = c / b if b > 0 else math.nan
    vs_ref = c / ref if ref > 0 else math.nan
    print("%-12s %9.1f %9.1f %9.1f %9.1f %11.0f%% %11.2fx" % (arch, b, c, rs, rn,
                                                          100 * vs_bench, vs_ref))
    r.update({arch + "_bench": b, arch + "_cxr": c, arch + "_ref_sync": rs,
              arch + "_ref_nosync": rn, arch + "_cxr_over_bench": vs_bench,
              arch + "_cxr_over_ref": vs_ref})
print("goals: cxr/bench >= 80 %, cxr/ref >= 1.2x (ResNet50V2: cxr trains batch norm,"
      " the bench keeps it in inference mode)")
json.dump(r, open("$results", "w"), indent=1, sort_keys=True)
PY
tail -5 "$summary"

# ---- 4. distributed on one device (issue 16) -------------------------------------
step "distributed: cxr train --nproc 2 --device $device, ${DIST_SIZE:-64} px, ${DIST_EPOCHS:-2} epochs"
dist_common=(train "$data" --size "${DIST_SIZE:-64}" --epochs "${DIST_EPOCHS:-2}" --patience 0
  --batch-size 32 --device "$device" --quiet --overwrite --cache-dir "$cache_dir")
# dist_run NAME ARGS...: one run; prints its images/s or "failed".
dist_run() {
  local name="$1"
  shift
  if late "$name"; then echo skipped; return; fi
  if bounded 120 "$cxr" "${dist_common[@]}" --out "$work/$name" "$@" >"$out/$name.log" 2>&1; then
    speed "$work/$name"
  else
    echo "failed: $(grep -h "error" "$out/$name.log" | tail -1)"
  fi
}
# best NAME ARGS...: the better of two runs (the first of a kind pays CUDA
# and cuDNN start-up; alternating with the other kind, as bench/bench_dist.sh).
best() {
  "$python" -c 'import sys
v = [float(a) for a in sys.argv[1:] if a.replace(".", "", 1).isdigit()]
print(max(v) if v else sys.argv[-1])' "$@"
}
one_a=$(dist_run dist-1)
two_a=$(dist_run dist-2 --nproc 2 --dist-timeout 60)
one_b=$(dist_run dist-1)
two_b=""
[[ "$two_a" == failed* ]] || two_b=$(dist_run dist-2 --nproc 2 --dist-timeout 60)
one=$(best "$one_a" "$one_b")
two=$(best "$two_a" ${two_b:+"$two_b"})
echo "runs: 1 rank $one_a, $one_b; 2 ranks $two_a${two_b:+, $two_b}"
backend="default build ($(grep -q 'Gloo and NCCL' "$out/configure.log" 2>/dev/null && echo NCCL || echo Gloo))"
if [[ "$two" == failed* && "$device" == cuda* && "${SKIP_BUILD:-0}" != 1 ]] &&
  grep -q 'Gloo and NCCL' "$out/configure.log"; then
  # NCCL refuses two ranks on one GPU ("Duplicate GPU detected"), and
  # src/dist picks NCCL for every CUDA device: the same source built without
  # NCCL (the cache variable pre-set, so CMake does not look for it) runs the
  # ranks over Gloo, whose collectives take CUDA tensors.
  echo "2 ranks on NCCL: $two"
  record dist_2_nccl "$two"
  step "rebuild cxr without NCCL (Gloo on CUDA) for the one-GPU run"
  cp "$out/configure.log" "$out/configure-nccl.log"
  if bounded 60 cmake "$build" -DCXR_NCCL_PG=OFF >"$out/configure.log" 2>&1 &&
    bounded 180 ninja -C "$build" cxr >"$out/build-gloo.log" 2>&1; then
    two_a=$(dist_run dist-2-gloo --nproc 2 --dist-timeout 60)
    two_b=$(dist_run dist-2-gloo --nproc 2 --dist-timeout 60)
    echo "2 ranks over Gloo: $two_a, $two_b"
    two=$(best "$two_a" "$two_b")
    backend="Gloo on CUDA (rebuilt with -DCXR_NCCL_PG=OFF)"
  else
    tail -20 "$out/configure.log" "$out/build-gloo.log"
  fi
fi
{
  echo "issue 16, one device ($device), baseline ${DIST_SIZE:-64} px, batch 32/rank, ${DIST_EPOCHS:-2} epochs:"
  echo "  1 rank: $one img/s; 2 ranks ($backend): $two img/s"
  "$python" -c 'import sys
try:
    a, b = float(sys.argv[1]), float(sys.argv[2])
    print("  2 ranks / 1 rank: %.2fx (scaling efficiency on the one device %.0f %%)" % (b / a, 50 * b / a))
except ValueError:
    print("  no ratio (a run failed or was skipped)")' "$one" "$two"
} | tee -a "$summary"
record dist_1 "$one"
record dist_2 "$two"
record dist_backend "$backend"

# ---- 5. the study, with what time is left ----------------------------------------
left=$((deadline - SECONDS))
if ((left >= 120)); then
  step "study ${STUDY_ARGS:---full-grid} --device $device with the $left s left (partial unless it ends)"
  before=0
  [[ -d "$study_dir" && -f "$study_dir.seconds" ]] && before=$(cat "$study_dir.seconds")
  t0=$SECONDS
  # shellcheck disable=SC2086 # STUDY_ARGS is a list of flags
  bounded "$left" "$cxr" study ${STUDY_ARGS:---full-grid} --device "$device" \
    --data "$data" --weights "$weights" --shared "$cache" --cache-dir "$cache_dir" \
    --out "$study_dir" >"$out/study.log" 2>&1
  rc=$?
  echo "$((SECONDS - t0 + before))" >"$study_dir.seconds"
  tail -15 "$out/study.log"
  echo "study ${STUDY_ARGS:---full-grid}: exit $rc after $((SECONDS - t0)) s (124: stopped at the bound;" \
    "run 'issue17.sh study' in a call of its own)" | tee -a "$summary"
  record study_seconds_in_all "$((SECONDS - t0))"
  record study_exit_in_all "$rc"
else
  echo "study: not started ($left s left before the deadline); run 'bash scripts/device/issue17.sh study'" |
    tee -a "$summary"
fi

step "summary"
cat "$summary"
