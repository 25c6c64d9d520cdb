#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer build of cxr and its unit
# tests in build-asan (CXR_SANITIZE=ON, -O1 -g -fno-omit-frame-pointer), then
# `ctest -L unit` there (docs/reliability.md).
#   scripts/sanitize.sh                          # full build + unit tests
#   SANITIZE_TARGETS=cxr_core SANITIZE_NO_TEST=1 scripts/sanitize.sh
#   SANITIZE_CC=clang SANITIZE_CXX=clang++ scripts/sanitize.sh
#   SANITIZE_JOBS=2 CTEST_ARGS="-R Keras" scripts/sanitize.sh
# A full build is ~30 CPU-minutes; it runs under nice -n 10.
set -uo pipefail
cd "$(dirname "$0")/.."

build=${SANITIZE_BUILD_DIR:-build-asan}
jobs=${SANITIZE_JOBS:-$(nproc)}
cc=${SANITIZE_CC:-gcc}
cxx=${SANITIZE_CXX:-g++}

if [ ! -f "$build/build.ninja" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
    -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" \
    -DCXR_SANITIZE=ON -DCXR_BUILD_BENCH=OFF || exit 2
fi
# shellcheck disable=SC2086  # SANITIZE_TARGETS is a list
nice -n 10 ninja -C "$build" -j "$jobs" ${SANITIZE_TARGETS:-cxr tests/cxr_unit_tests} || exit 2
[ -n "${SANITIZE_NO_TEST:-}" ] && exit 0

# Leak checking: see docs/reliability.md "Sanitizers" for why it is on and
# what fuzz/lsan.supp suppresses. The tests spawn the cxr binary; the same
# options reach it through the environment.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=0}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/fuzz/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# shellcheck disable=SC2086  # CTEST_ARGS is a list
nice -n 10 ctest --test-dir "$build" -L unit -j "$jobs" --output-on-failure \
  --timeout 600 ${CTEST_ARGS:-}
