#!/usr/bin/env bash
# Installs every Debian package cxr needs (Debian 12, as root), then
# configures and builds cxr in ./build. Idempotent: a second run only
# rebuilds what changed.
#   bash scripts/setup.sh            # packages + build
#   CXR_BUILD_TYPE=Debug bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build ccache pkg-config
  libtorch-dev            # LibTorch 1.13 (CPU), the C++ frontend
  libgloo-dev             # Gloo headers: cxr's dist stage uses c10d's ProcessGroupGloo
                          # (compiled into Debian's libtorch; docs/distributed.md)
  libopenblas0-openmp     # BLAS behind LibTorch's matmuls and many convolutions: Debian's
                          # default libblas3 is the unoptimised reference BLAS (6x slower
                          # MobileNetV2 inference here, docs/performance.md)
  libhdf5-dev             # Keras .h5 weights
  libpng-dev libjpeg-dev  # PNG/JPEG decoding (libpng 1.6, libjpeg-turbo)
  libstb-dev              # BMP decoding, PNG writing
  libcairo2-dev fonts-dejavu-core  # figures with text
  libcli11-dev nlohmann-json3-dev libcpp-httplib-dev
  libgtest-dev libgmock-dev libbenchmark-dev clang-format
  python3-torch           # the PyTorch reference of the benchmarks
  chromium                # renders the HTML report in a test
  libdcmtk-dev            # DICOM decoding (DCMTK 3.6: dcmdata/dcmimage/dcmjpeg/dcmjpls)
  dcmtk                   # img2dcm: a test of the OOD sets writes its DICOMs
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
    --no-install-recommends "${missing[@]}"
fi

jobs=$(nproc)
werror=OFF
[ "${CI:-}" = "true" ] && werror=ON
if [ ! -f build/build.ninja ]; then
  cmake -S . -B build -G Ninja \
    -DCMAKE_BUILD_TYPE="${CXR_BUILD_TYPE:-Release}" -DCXR_WERROR="$werror"
fi
cmake --build build -j "$jobs"
