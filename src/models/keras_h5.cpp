// Keras HDF5 weight files: reading (keras_read.cpp, libhdf5 in a child
// process) into tensors, and writing through libhdf5. What the layers mean to a
// torch model is keras_mapping.cpp.
#include "cxr/models/keras_h5.h"

#include <hdf5.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "hdf5_handle.h"
#include "keras_read.h"

namespace cxr::models {

namespace {

using detail::Handle;
using detail::silence_hdf5;

// Keras' HDF5_OBJECT_HEADER_LIMIT: attributes larger than this are split.
constexpr size_t kAttributeLimit = 64512;

// Writes a string list attribute: fixed-length NUL-padded (numpy "S") or
// variable-length. An empty list is h5py's empty float64 array.
void write_strings(hid_t obj,
                   const std::string& name,
                   const std::vector<std::string>& values,
                   bool variable,
                   const std::string& path) {
  const hsize_t n = values.size();
  Handle space(H5Screate_simple(1, &n, nullptr), H5Sclose);
  herr_t rc = 0;
  if (values.empty()) {
    Handle attr(H5Acreate2(obj, name.c_str(), H5T_IEEE_F64LE, space.get(),
                           H5P_DEFAULT, H5P_DEFAULT),
                H5Aclose);
    rc = attr.ok() ? 0 : -1;
  } else if (variable) {
    Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(type.get(), H5T_VARIABLE);
    H5Tset_cset(type.get(), H5T_CSET_UTF8);
    std::vector<const char*> ptrs;
    for (const auto& v : values) ptrs.push_back(v.c_str());
    Handle attr(H5Acreate2(obj, name.c_str(), type.get(), space.get(),
                           H5P_DEFAULT, H5P_DEFAULT),
                H5Aclose);
    rc = attr.ok() ? H5Awrite(attr.get(), type.get(), ptrs.data()) : -1;
  } else {
    size_t size = 1;
    for (const auto& v : values) size = std::max(size, v.size());
    std::vector<char> buf(size * values.size(), '\0');
    for (size_t i = 0; i < values.size(); ++i) {
      std::copy(values[i].begin(), values[i].end(), buf.begin() + i * size);
    }
    Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(type.get(), size);
    H5Tset_strpad(type.get(), H5T_STR_NULLPAD);
    Handle attr(H5Acreate2(obj, name.c_str(), type.get(), space.get(),
                           H5P_DEFAULT, H5P_DEFAULT),
                H5Aclose);
    rc = attr.ok() ? H5Awrite(attr.get(), type.get(), buf.data()) : -1;
  }
  if (rc < 0) {
    throw IoError("cannot write '" + path + "': HDF5 failed on attribute '" +
                  name + "' (disk full?)");
  }
}

// Keras' save_attributes_to_hdf5_group: split into equal chunks until each
// fits the object header limit.
void write_chunked_strings(hid_t obj,
                           const std::string& name,
                           const std::vector<std::string>& values,
                           bool variable,
                           const std::string& path) {
  size_t longest = 1;
  for (const auto& v : values) longest = std::max(longest, v.size());
  // Variable-length strings live in the global heap; only their 16-byte
  // references count against the header.
  const size_t per_item = variable ? 16 : longest;
  size_t chunks = 1;
  while ((values.size() + chunks - 1) / chunks * per_item > kAttributeLimit) {
    ++chunks;
  }
  if (chunks == 1) {
    write_strings(obj, name, values, variable, path);
    return;
  }
  const size_t per_chunk = (values.size() + chunks - 1) / chunks;
  for (size_t c = 0; c * per_chunk < values.size(); ++c) {
    const auto begin = values.begin() + c * per_chunk;
    const auto end =
        values.begin() + std::min(values.size(), (c + 1) * per_chunk);
    write_strings(obj, name + std::to_string(c), {begin, end}, variable, path);
  }
}

}  // namespace

std::vector<std::string> read_keras_layer_names(const std::string& path,
                                                double timeout_s) {
  return detail::read_keras_names(path, timeout_s);
}

std::vector<KerasLayerWeights> read_keras_h5(const std::string& path,
                                             double timeout_s) {
  std::vector<KerasLayerWeights> layers;
  for (auto& raw : detail::read_keras_raw(path, timeout_s)) {
    KerasLayerWeights l{std::move(raw.layer), {}};
    for (auto& w : raw.weights) {
      // The reader checked that the values fill the shape exactly.
      torch::Tensor t = torch::empty(w.shape, torch::kFloat32);
      if (!w.values.empty()) {
        std::memcpy(t.data_ptr<float>(), w.values.data(),
                    w.values.size() * sizeof(float));
      }
      l.weights.push_back({std::move(w.name), std::move(t)});
    }
    layers.push_back(std::move(l));
  }
  return layers;
}

void write_keras_h5(const std::string& path,
                    const std::vector<KerasLayerWeights>& layers,
                    const KerasH5WriteOptions& options) {
  silence_hdf5();
  write_file_atomic(path, [&](const std::filesystem::path& tmp) {
    auto fail = [&](const std::string& what) {
      throw IoError("cannot write '" + path + "': " + what +
                    " (check the folder is writable and the disk not full)");
    };
    Handle file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT),
                H5Fclose);
    if (!file.ok()) fail("HDF5 cannot create the file");
    Handle root(options.model_weights_group
                    ? H5Gcreate2(file.get(), "model_weights", H5P_DEFAULT,
                                 H5P_DEFAULT, H5P_DEFAULT)
                    : H5Gopen2(file.get(), "/", H5P_DEFAULT),
                H5Gclose);
    if (!root.ok()) fail("HDF5 cannot create the root group");
    const bool vl = options.variable_length_strings;
    std::vector<std::string> names;
    for (const auto& l : layers) names.push_back(l.layer);
    write_chunked_strings(root.get(), "layer_names", names, vl, path);
    write_strings(root.get(), "backend", {"tensorflow"}, vl, path);
    write_strings(root.get(), "keras_version", {"2.x"}, vl, path);

    // Weight names contain '/', e.g. "Conv1/kernel:0" under group "Conv1".
    Handle lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
    H5Pset_create_intermediate_group(lcpl.get(), 1);
    std::set<std::string> seen;
    for (const auto& l : layers) {
      if (l.layer.empty() || !seen.insert(l.layer).second) {
        fail("layer name '" + l.layer + "' is empty or repeated");
      }
      Handle group(H5Gcreate2(root.get(), l.layer.c_str(), H5P_DEFAULT,
                              H5P_DEFAULT, H5P_DEFAULT),
                   H5Gclose);
      if (!group.ok()) fail("HDF5 cannot create group '" + l.layer + "'");
      std::vector<std::string> weight_names;
      for (const auto& w : l.weights) weight_names.push_back(w.name);
      write_strings(group.get(), "weight_names", weight_names, vl, path);
      for (const auto& w : l.weights) {
        torch::Tensor t =
            w.value.detach().to(torch::kCPU, torch::kFloat32).contiguous();
        std::vector<hsize_t> dims(t.sizes().begin(), t.sizes().end());
        Handle space(t.dim() == 0
                         ? H5Screate(H5S_SCALAR)
                         : H5Screate_simple(t.dim(), dims.data(), nullptr),
                     H5Sclose);
        Handle ds(H5Dcreate2(group.get(), w.name.c_str(), H5T_IEEE_F32LE,
                             space.get(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT),
                  H5Dclose);
        if (!ds.ok() || H5Dwrite(ds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL,
                                 H5P_DEFAULT, t.data_ptr<float>()) < 0) {
          fail("HDF5 cannot write dataset '" + l.layer + "/" + w.name + "'");
        }
      }
    }
    if (H5Fflush(file.get(), H5F_SCOPE_GLOBAL) < 0) fail("HDF5 flush failed");
  });
}

}  // namespace cxr::models
