#!/usr/bin/env bash
# Packs, next to what scripts/device/pack.sh packs, what the issue 17/16 GPU
# session (scripts/device/issue17.sh) needs beyond it. Run here (Debian 12,
# after scripts/setup.sh and pack.sh); carry device-cache with the run.
#
#   device-cache/test-deps.tar.xz  GoogleTest (headers, static libraries,
#                                  CMake config), so that the GPU machine can
#                                  build cxr_unit_tests and run the GpuStep
#                                  test there
#   device-cache/gloo.tar.xz       Debian's Gloo headers (libgloo-dev), used
#                                  only when the machine's PyTorch ships no
#                                  gloo/config.h of its own (then cxr's
#                                  distributed code compiles against headers
#                                  of another Gloo version than the one inside
#                                  that LibTorch: issue17.sh says so)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$root/device-cache"
mkdir -p "$out"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
arch=x86_64-linux-gnu

mkdir -p "$stage/t/usr/include" "$stage/t/usr/lib/$arch/cmake"
cp -a /usr/include/gtest /usr/include/gmock "$stage/t/usr/include/"
cp -a /usr/lib/$arch/libgtest*.a /usr/lib/$arch/libgmock*.a "$stage/t/usr/lib/$arch/"
cp -a /usr/lib/$arch/cmake/GTest "$stage/t/usr/lib/$arch/cmake/"
tar -C "$stage/t" -cJf "$out/test-deps.tar.xz" usr

mkdir -p "$stage/g/usr/include"
cp -a /usr/include/gloo "$stage/g/usr/include/"
tar -C "$stage/g" -cJf "$out/gloo.tar.xz" usr
du -sh "$out/test-deps.tar.xz" "$out/gloo.tar.xz"
