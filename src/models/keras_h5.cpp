// Keras HDF5 weight files through libhdf5: reading (in a child process, see
// keras_child.h) and writing. What the layers mean to a torch model is
// keras_mapping.cpp.
#include "cxr/models/keras_h5.h"

#include <hdf5.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "keras_child.h"

namespace cxr::models {

namespace {

using detail::kMaxDatasetValues;
using detail::PipeWriter;
using detail::RawWeight;
using detail::Tag;

// Keras' HDF5_OBJECT_HEADER_LIMIT: attributes larger than this are split.
constexpr size_t kAttributeLimit = 64512;

// HDF5 reports failures through its error stack, which it prints to stderr
// by default; cxr reports them as one exception instead.
void silence_hdf5() {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

// Owns one HDF5 identifier.
class Handle {
 public:
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~Handle() {
    if (id_ >= 0) close_(id_);
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle(Handle&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
  Handle& operator=(Handle&& o) noexcept {
    std::swap(id_, o.id_);
    std::swap(close_, o.close_);
    return *this;
  }
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

bool attr_exists(hid_t obj, const std::string& name) {
  return H5Aexists(obj, name.c_str()) > 0;
}

// Bounds on what a (possibly hostile) header may make us allocate (with
// kMaxDatasetValues): far above any Keras file, far below what would exhaust
// memory.
constexpr hssize_t kMaxStrings = 1 << 20;
constexpr size_t kMaxStringBytes = size_t{64} << 20;

// Reads a string (array) attribute, fixed- or variable-length. An empty
// attribute of any type (h5py stores Keras' empty `weight_names` as a
// zero-length float64 array) is an empty list. Returns false when it cannot
// be read as strings.
bool read_strings(hid_t obj,
                  const std::string& name,
                  std::vector<std::string>* out) {
  Handle attr(H5Aopen(obj, name.c_str(), H5P_DEFAULT), H5Aclose);
  if (!attr.ok()) return false;
  Handle type(H5Aget_type(attr.get()), H5Tclose);
  Handle space(H5Aget_space(attr.get()), H5Sclose);
  if (!type.ok() || !space.ok()) return false;
  if (H5Sget_simple_extent_type(space.get()) == H5S_NULL) return true;
  const hssize_t n = H5Sget_simple_extent_npoints(space.get());
  if (n < 0) return false;
  if (n == 0) return true;
  if (H5Tget_class(type.get()) != H5T_STRING) return false;
  // A header may claim any count and string size; the buffers below are
  // sized from them. Keras writes one name per layer or weight (ResNet50V2:
  // under 600) of well under 1 KiB.
  if (n > kMaxStrings) return false;
  if (H5Tis_variable_str(type.get()) > 0) {
    Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mem.get(), H5T_VARIABLE);
    H5Tset_cset(mem.get(), H5Tget_cset(type.get()));
    std::vector<char*> buf(static_cast<size_t>(n), nullptr);
    if (H5Aread(attr.get(), mem.get(), buf.data()) < 0) return false;
    for (char* s : buf) out->emplace_back(s ? s : "");
#if H5_VERSION_GE(1, 12, 0)
    H5Treclaim(mem.get(), space.get(), H5P_DEFAULT, buf.data());
#else
    H5Dvlen_reclaim(mem.get(), space.get(), H5P_DEFAULT, buf.data());
#endif
    return true;
  }
  const size_t size = H5Tget_size(type.get());
  if (size == 0 || size > kMaxStringBytes / static_cast<size_t>(n)) {
    return false;
  }
  std::vector<char> buf(size * static_cast<size_t>(n));
  if (H5Aread(attr.get(), type.get(), buf.data()) < 0) return false;
  const bool space_pad = H5Tget_strpad(type.get()) == H5T_STR_SPACEPAD;
  for (hssize_t i = 0; i < n; ++i) {
    const char* p = buf.data() + static_cast<size_t>(i) * size;
    std::string s(p, strnlen(p, size));
    if (space_pad) s.erase(s.find_last_not_of(' ') + 1);
    out->push_back(std::move(s));
  }
  return true;
}

// Keras' load_attributes_from_hdf5_group: `name`, or `name0`, `name1`, ...
// when the list was too large for one attribute. Returns false when absent.
bool read_chunked_strings(hid_t obj,
                          const std::string& name,
                          std::vector<std::string>* out,
                          bool* unreadable) {
  *unreadable = false;
  if (attr_exists(obj, name)) {
    *unreadable = !read_strings(obj, name, out);
    return true;
  }
  int chunk = 0;
  while (attr_exists(obj, name + std::to_string(chunk))) {
    if (!read_strings(obj, name + std::to_string(chunk), out)) {
      *unreadable = true;
      return true;
    }
    ++chunk;
  }
  return chunk > 0;
}

// Reads one dataset as float32 (in the reader child: no torch).
RawWeight read_dataset(hid_t group,
                       const std::string& name,
                       const std::string& where) {
  Handle ds(H5Dopen2(group, name.c_str(), H5P_DEFAULT), H5Dclose);
  if (!ds.ok()) throw ModelError(where + ": dataset is missing");
  Handle type(H5Dget_type(ds.get()), H5Tclose);
  const H5T_class_t cls = H5Tget_class(type.get());
  if (cls != H5T_FLOAT && cls != H5T_INTEGER) {
    throw ModelError(where + ": not a numeric dataset");
  }
  Handle space(H5Dget_space(ds.get()), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0 || rank > 8) throw ModelError(where + ": unreadable shape");
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  // Checked before allocating: a claimed dimension beyond int64 or a
  // product past the bound would exhaust memory instead of naming the
  // dataset.
  int64_t values = 1;
  for (hsize_t d : dims) {
    if (d > static_cast<hsize_t>(kMaxDatasetValues) ||
        (d > 0 && values > kMaxDatasetValues / static_cast<int64_t>(d))) {
      throw ModelError(where + ": claims more than " +
                       std::to_string(kMaxDatasetValues) +
                       " values; not a Keras weight (file corrupt?)");
    }
    values *= static_cast<int64_t>(d);
  }
  RawWeight w;
  w.shape.assign(dims.begin(), dims.end());
  w.values.resize(static_cast<size_t>(values));
  if (values > 0 && H5Dread(ds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL,
                            H5P_DEFAULT, w.values.data()) < 0) {
    throw ModelError(where + ": cannot read data (file truncated?)");
  }
  return w;
}

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

// An open Keras weight file: the group holding the layers and their names.
struct WeightsRoot {
  Handle file{-1, H5Fclose};
  Handle root{-1, H5Gclose};
  std::vector<std::string> layer_names;
};

WeightsRoot open_weights(const std::string& path, const std::string& where) {
  silence_hdf5();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw ModelError(where +
                     ": not found (check the path, e.g. "
                     "../shared/weights/mobilenet_v2_1.0_224_imagenet"
                     "_notop.h5)");
  }
  WeightsRoot w;
  w.file = Handle(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!w.file.ok()) {
    throw ModelError(where +
                     ": not an HDF5 file or unreadable (expected a "
                     "Keras .h5 weight file)");
  }
  w.root = Handle(H5Gopen2(w.file.get(), "/", H5P_DEFAULT), H5Gclose);
  bool unreadable = false;
  bool found = w.root.ok() && read_chunked_strings(w.root.get(), "layer_names",
                                                   &w.layer_names, &unreadable);
  // A full-model save keeps the weights in /model_weights (Keras'
  // load_weights looks there when the root has no layer_names).
  if (!found && H5Lexists(w.file.get(), "model_weights", H5P_DEFAULT) > 0) {
    w.root =
        Handle(H5Gopen2(w.file.get(), "model_weights", H5P_DEFAULT), H5Gclose);
    found = w.root.ok() && read_chunked_strings(w.root.get(), "layer_names",
                                                &w.layer_names, &unreadable);
  }
  if (!found) {
    throw ModelError(where +
                     ": no 'layer_names' attribute; not a Keras "
                     "save_weights/model.save HDF5 file");
  }
  if (unreadable) {
    throw ModelError(where + ": attribute 'layer_names' is not a string list");
  }
  return w;
}

// The reading itself (libhdf5), streamed as records: a weight is sent as
// soon as it is read, so the child holds one dataset at a time.
void stream_layer_names(const std::string& path, PipeWriter& out) {
  for (const auto& name :
       open_weights(path, "weights file '" + path + "'").layer_names) {
    out.tag(Tag::kName);
    out.text(name);
  }
}

void stream_weights(const std::string& path, PipeWriter& out) {
  const std::string where = "weights file '" + path + "'";
  WeightsRoot w = open_weights(path, where);
  for (const auto& layer : w.layer_names) {
    const std::string at = where + ", layer '" + layer + "'";
    Handle group(H5Gopen2(w.root.get(), layer.c_str(), H5P_DEFAULT), H5Gclose);
    if (!group.ok()) {
      throw ModelError(at +
                       ": listed in layer_names but has no group (file "
                       "truncated or not written by Keras)");
    }
    std::vector<std::string> weight_names;
    if (attr_exists(group.get(), "weight_names") &&
        !read_strings(group.get(), "weight_names", &weight_names)) {
      throw ModelError(at + ": attribute 'weight_names' is not a string list");
    }
    if (weight_names.empty()) continue;
    out.tag(Tag::kLayer);
    out.text(layer);
    for (const auto& name : weight_names) {
      out.weight(name, read_dataset(group.get(), name,
                                    at + ", dataset '" + name + "'"));
    }
  }
}

}  // namespace

std::vector<std::string> read_keras_layer_names(const std::string& path,
                                                double timeout_s) {
  detail::Records rec =
      detail::read_in_child(path, stream_layer_names, timeout_s);
  std::vector<std::string> names;
  for (Tag t; rec.next(&t);) {
    if (t != Tag::kName) rec.malformed();
    names.push_back(rec.text());
  }
  return names;
}

std::vector<KerasLayerWeights> read_keras_h5(const std::string& path,
                                             double timeout_s) {
  detail::Records rec = detail::read_in_child(path, stream_weights, timeout_s);
  std::vector<KerasLayerWeights> layers;
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
