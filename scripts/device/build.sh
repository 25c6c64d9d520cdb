# shellcheck shell=bash disable=SC2154 # root and out: set by the caller
# Sourced (not run) by scripts/device/run.sh and scripts/device/issue17.sh on
# the lent GPU machine: unpacks the dependencies that scripts/device/pack.sh
# packed, configures cxr against the machine's PyTorch (its LibTorch) and
# builds targets. Expects $root (the checkout) and $out (where logs go).
#
#   device_deps                     unpack device-cache/deps.tar.xz (and, when
#                                   present, device-cache/test-deps.tar.xz,
#                                   from scripts/device/pack-tests.sh);
#                                   sets $deps, $libdir, $prefixes
#   device_configure BUILD [ARGS]   cmake -G Ninja Release into BUILD, extra
#                                   cmake ARGS appended; log $out/configure.log
#   device_build BUILD TARGETS...   ninja; log $out/build.log
# Each returns non-zero on failure (after printing the log's tail); the
# caller decides whether that ends the session.

device_deps() {
  deps=/tmp/cxr-deps
  mkdir -p "$deps" && tar -xJf "$root/device-cache/deps.tar.xz" -C "$deps" || return 1
  libdir="$deps/usr/lib/x86_64-linux-gnu"
  prefixes="$deps/usr"
  if [[ -f "$root/device-cache/test-deps.tar.xz" ]]; then
    mkdir -p /tmp/cxr-test-deps &&
      tar -xJf "$root/device-cache/test-deps.tar.xz" -C /tmp/cxr-test-deps || return 1
    prefixes="$prefixes;/tmp/cxr-test-deps/usr"
  fi
}

device_configure() {
  local build="$1"
  shift
  local torch_prefix
  torch_prefix="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')" || return 1
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$torch_prefix;$prefixes" \
    -DCMAKE_LIBRARY_PATH="$libdir" \
    -DCMAKE_EXE_LINKER_FLAGS="-Wl,--disable-new-dtags -Wl,-rpath,$libdir -Wl,-rpath-link,$libdir" \
    "$@" >"$out/configure.log" 2>&1
  local rc=$?
  tail -25 "$out/configure.log"
  if [[ $rc -ne 0 ]]; then
    tail -60 "$build/CMakeFiles/CMakeError.log" 2>/dev/null
    return 1
  fi
}

device_build() {
  local build="$1"
  shift
  ninja -C "$build" "$@" >"$out/build.log" 2>&1
  local rc=$?
  grep -E "error|Error" "$out/build.log" | head -40
  tail -3 "$out/build.log"
  return $rc
}
