/// Keras HDF5 import: any bytes as a .h5 file into the reader behind
/// read_keras_h5 and read_keras_layer_names (the file goes to /dev/shm: both
/// take a path, and libhdf5 reads through its own file driver). Both parse
/// the file in a forked child process and check its answer over a pipe, so
/// this target fuzzes the whole path: a crash, a hang or a leak in the
/// parent (cxr's process) is a finding; a crash inside the child (libhdf5
/// 1.10.8 on a corrupt file) must come back as a ModelError, the expected
/// answer. libhdf5 is not instrumented, and the child's coverage stays in the
/// child, so guidance comes from the parent's code and the seed corpus.
///
/// The target links the torch-free reader (cxr_keras_reader) and libhdf5,
/// not cxr_core: a fork per input copies the page tables of this process,
/// which with LibTorch under ASan made the target 30x slower
/// (docs/reliability.md). What it leaves out is read_keras_h5's last step,
/// a copy of each checked weight into a tensor of its shape.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "../src/models/keras_read.h"
#include "cxr/common/error.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = cxr::fuzz::scratch("weights.h5");
  cxr::fuzz::write_file(path, data, size);
  // One reader per input (each starts the reader program, the cost of this
  // target): the input's last bit picks which, so mutations reach both. A
  // deadline of 0.05 s per reader (cxr's is 60 s): the corpus' valid files
  // read in under 25 ms, and libhdf5 loops for good on some corrupt ones
  // (libFuzzer's -timeout=5 would count them as hangs), so a short deadline
  // keeps those inputs from setting the pace. A killed reader is refused,
  // which is the behaviour under test.
  constexpr double kTimeout = 0.05;
  namespace d = cxr::models::detail;
  try {
    if (size > 0 && (data[size - 1] & 1)) {
      d::read_keras_names(path, kTimeout);
    } else {
      for (const auto& layer : d::read_keras_raw(path, kTimeout)) {
        for (const auto& w : layer.weights) {
          // read_keras_h5 copies values.size() floats into a tensor of this
          // shape: they must agree.
          uint64_t n = 1;
          for (int64_t dim : w.shape) {
            if (dim < 0) std::abort();
            n *= static_cast<uint64_t>(dim);
          }
          if (n != w.values.size()) std::abort();
        }
      }
    }
  } catch (const cxr::Error&) {
  }
  ::unlink(path.c_str());
  return 0;
}
