// The parent's half of the Keras HDF5 import: start the reader program
// (keras_child.h), check its records and collect them. No torch and no
// libhdf5 here (libhdf5 runs only in the reader, keras_parse.cpp), so the
// fuzz target fuzz_keras_h5 is a small process; keras_h5.cpp turns the
// result into tensors and writes files.
#include "keras_read.h"

#include "cxr/common/error.h"

namespace cxr::models::detail {

std::vector<std::string> read_keras_names(const std::string& path,
                                          double timeout_s) {
  Records rec = read_in_child(path, "names", timeout_s);
  std::vector<std::string> names;
  for (Tag t; rec.next(&t);) {
    if (t != Tag::kName) rec.malformed();
    names.push_back(rec.text());
  }
  return names;
}

std::vector<RawLayer> read_keras_raw(const std::string& path,
                                     double timeout_s) {
  Records rec = read_in_child(path, "weights", timeout_s);
  std::vector<RawLayer> layers;
  for (Tag t; rec.next(&t);) {
    if (t == Tag::kLayer) {
      layers.push_back({rec.text(), {}});
    } else if (t == Tag::kWeight && !layers.empty()) {
      layers.back().weights.push_back(rec.weight());
    } else {
      rec.malformed();
    }
  }
  return layers;
}

}  // namespace cxr::models::detail
