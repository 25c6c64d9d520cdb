/// Keras HDF5 import: any bytes as a .h5 file into read_keras_h5 and
/// read_keras_layer_names (the file goes to /dev/shm: both take a path, and
/// libhdf5 reads through its own file driver). A ModelError is the expected
/// answer. libhdf5 is not instrumented, so coverage guidance comes from
/// keras_h5.cpp; a crash inside libhdf5 still shows (ASan's SEGV handler).
#include <unistd.h>

#include <cstdint>
#include <string>

#include "cxr/common/error.h"
#include "cxr/models/keras_h5.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  cxr::fuzz::init_torch();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = cxr::fuzz::scratch("weights.h5");
  cxr::fuzz::write_file(path, data, size);
  try {
    cxr::models::read_keras_layer_names(path);
  } catch (const cxr::Error&) {
  }
  try {
    for (const auto& layer : cxr::models::read_keras_h5(path)) {
      for (const auto& w : layer.weights) {
        if (!w.value.defined() || w.value.scalar_type() != torch::kFloat32) {
          std::abort();  // the header promises float32 tensors
        }
      }
    }
  } catch (const cxr::Error&) {
  }
  ::unlink(path.c_str());
  return 0;
}
