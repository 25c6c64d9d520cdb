/// Keras HDF5 import: any bytes as a .h5 file into read_keras_h5 and
/// read_keras_layer_names (the file goes to /dev/shm: both take a path, and
/// libhdf5 reads through its own file driver). Both parse the file in a
/// forked child process and read its answer over a pipe, so this target
/// fuzzes the whole path: a crash, a hang or a leak in the parent (cxr's
/// process) is a finding; a crash inside the child (libhdf5 1.10.8 on a
/// corrupt file) must come back as a ModelError, the expected answer.
/// libhdf5 is not instrumented, and the child's coverage stays in the child,
/// so guidance comes from the parent's code and the seed corpus.
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
  // One reader per input (each forks a child, the cost of this target): the
  // input's last bit picks which, so mutations reach both. 2 s per reader,
  // under libFuzzer's -timeout=5 (a slower child is killed and refused,
  // which is the behaviour under test).
  constexpr double kTimeout = 2;
  try {
    if (size > 0 && (data[size - 1] & 1)) {
      cxr::models::read_keras_layer_names(path, kTimeout);
    } else {
      for (const auto& layer : cxr::models::read_keras_h5(path, kTimeout)) {
        for (const auto& w : layer.weights) {
          if (!w.value.defined() || w.value.scalar_type() != torch::kFloat32) {
            std::abort();  // the header promises float32 tensors
          }
        }
      }
    }
  } catch (const cxr::Error&) {
  }
  ::unlink(path.c_str());
  return 0;
}
