#!/usr/bin/env bash
# Packs what a GPU run of cxr needs into device-cache/ (git-ignored), for
# the lent GPU machine, which has PyTorch + CUDA + CMake but no apt and no
# ../shared. Run here (Debian 12, after scripts/setup.sh); carry
# device-cache with the run, then run scripts/device/run.sh there.
#
#   device-cache/deps.tar.xz  headers, CMake configs and shared libraries of
#                             cairo, HDF5, stb, CLI11, nlohmann-json and
#                             Google Benchmark (with their runtime closure,
#                             minus glibc and the C++ runtime), Debian layout
#   device-cache/cxr-seed/    cxr-seed as JPEG quality 95 (to fit the 64 MiB
#                             the tool carries; PNG would be 51 MB alone)
#   device-cache/weights/     the Keras MobileNetV2 ImageNet weights
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
shared="${CXR_SHARED:-$root/../shared}"
out="$root/device-cache"
mkdir -p "$out"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
arch=x86_64-linux-gnu
lib="$stage/usr/lib/$arch"
mkdir -p "$lib" "$stage/usr/include/hdf5" "$stage/usr/share/cmake" "$lib/cmake"
for d in cairo stb CLI nlohmann benchmark; do
  cp -a "/usr/include/$d" "$stage/usr/include/"
done
cp -a /usr/include/hdf5/serial "$stage/usr/include/hdf5/"
cp -a /usr/share/cmake/CLI11 /usr/share/cmake/nlohmann_json "$stage/usr/share/cmake/"
cp -a "/usr/lib/$arch/cmake/benchmark" "$lib/cmake/"
cp -a /usr/lib/$arch/libbenchmark* "$lib/"
ln -s libcairo.so.2 "$lib/libcairo.so"
ln -s libhdf5_serial.so.103 "$lib/libhdf5_serial.so"
ln -s libstb.so.0 "$lib/libstb.so"
# Runtime closure of the four libraries, without glibc and the C++ runtime
# (the GPU machine's newer ones serve).
for l in libcairo.so.2 libhdf5_serial.so.103 libstb.so.0 libbenchmark.so.1debian; do
  ldd "/usr/lib/$arch/$l" | awk '$3 ~ /^\// {print $3}'
  echo "/usr/lib/$arch/$l"
done | sort -u | grep -Ev '/(libc|libm|libdl|librt|libpthread|libresolv|libgcc_s|libstdc\+\+|ld-linux-x86-64)\.so' |
  while read -r f; do cp -L "$f" "$lib/$(basename "$f")"; done
tar -C "$stage" -cJf "$out/deps.tar.xz" usr

# cxr-seed as JPEG q95 (stb's encoder, through a throw-away converter).
if [[ ! -d "$out/cxr-seed" ]]; then
  conv="$stage/tojpg"
  cat >"$stage/tojpg.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>
int main(int argc, char** argv) {
  for (int i = 1; i + 1 < argc; i += 2) {
    int w, h, c;
    unsigned char* p = stbi_load(argv[i], &w, &h, &c, 1);
    if (!p || !stbi_write_jpg(argv[i + 1], w, h, 1, p, 95)) {
      fprintf(stderr, "tojpg: %s failed\n", argv[i]);
      return 1;
    }
    stbi_image_free(p);
  }
  return 0;
}
C
  gcc -O2 "$stage/tojpg.c" -lstb -o "$conv"
  args=()
  while read -r f; do
    rel="${f#"$shared/data/cxr-seed/"}"
    mkdir -p "$out/cxr-seed/$(dirname "$rel")"
    args+=("$f" "$out/cxr-seed/${rel%.png}.jpg")
  done < <(find "$shared/data/cxr-seed" -name '*.png' | sort)
  "$conv" "${args[@]}"
fi
mkdir -p "$out/weights"
cp -u "$shared/weights/mobilenet_v2_1.0_224_imagenet.h5" "$out/weights/"
du -sh "$out"/*
