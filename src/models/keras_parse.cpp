// The reader program's half of the Keras HDF5 import (cxr-keras-reader,
// apps/cxr-keras-reader): libhdf5 parses the file and each weight goes to
// stdout as a record as soon as it is read (keras_child.h). Only this
// program calls libhdf5 on a file to be read; a crash here is a one-line
// error in cxr.
#include <hdf5.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "cxr/common/error.h"
#include "hdf5_handle.h"
#include "keras_child.h"

namespace cxr::models::detail {

namespace {

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
  w.name = name;
  w.shape.assign(dims.begin(), dims.end());
  w.values.resize(static_cast<size_t>(values));
  if (values > 0 && H5Dread(ds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL,
                            H5P_DEFAULT, w.values.data()) < 0) {
    throw ModelError(where + ": cannot read data (file truncated?)");
  }
  return w;
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
      out.weight(
          read_dataset(group.get(), name, at + ", dataset '" + name + "'"));
    }
  }
}

}  // namespace

int reader_main(int argc, char** argv) {
  const std::string mode = argc == 3 ? argv[1] : "";
  if (mode != "names" && mode != "weights") {
    std::fprintf(stderr,
                 "%s: a helper of cxr, not meant to be run by hand: it reads "
                 "a Keras .h5 file for cxr and writes binary records to "
                 "stdout (usage: %s names|weights FILE)\n",
                 kReaderName, kReaderName);
    return 2;
  }
  // libhdf5 loops for good on some corrupt files. cxr kills a reader past
  // its deadline, but a cxr that is itself killed (SIGKILL, a crash) cannot:
  // the reader dies with the thread that started it, and in any case after
  // two minutes of CPU time (cxr's default deadline is one minute of wall
  // time).
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  const rlimit cpu{kReaderCpuSeconds, kReaderCpuSeconds};
  ::setrlimit(RLIMIT_CPU, &cpu);
  PipeWriter out(1);
  try {
    if (mode == "names") {
      stream_layer_names(argv[2], out);
    } else {
      stream_weights(argv[2], out);
    }
    out.tag(Tag::kDone);
  } catch (const Error& e) {
    out.tag(Tag::kError);
    out.text(e.what());
  } catch (const std::exception& e) {
    out.tag(Tag::kOther);
    out.text(e.what());
  }
  return 0;
}

}  // namespace cxr::models::detail
