#pragma once
// Internal to src/models: the parent's side of the Keras HDF5 reader, which
// read_keras_h5 and read_keras_layer_names (include/cxr/models/keras_h5.h)
// are made of: it starts the reader program and checks what it sends. Its
// own library (cxr_keras_reader: plain C++, no torch, no libhdf5), so the
// fuzz target for this path is a small process (docs/reliability.md,
// "Fuzzing").
#include <string>
#include <vector>

#include "keras_child.h"

namespace cxr::models::detail {

/// One Keras layer with weights, as the reader child sent it.
struct RawLayer {
  std::string layer;
  std::vector<RawWeight> weights;  ///< in `weight_names` order
};

/// read_keras_h5 before the tensors: every layer with weights, in file
/// order, each weight's values.size() the product of its shape. Throws the
/// same ModelErrors.
std::vector<RawLayer> read_keras_raw(const std::string& path, double timeout_s);

/// read_keras_layer_names.
std::vector<std::string> read_keras_names(const std::string& path,
                                          double timeout_s);

}  // namespace cxr::models::detail
