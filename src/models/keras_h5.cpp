#include "cxr/models/keras_h5.h"

#include <fcntl.h>
#include <hdf5.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/models/classifier.h"

namespace cxr::models {

namespace {

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

std::string shape_str(c10::IntArrayRef shape) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << "]";
  return s.str();
}

bool attr_exists(hid_t obj, const std::string& name) {
  return H5Aexists(obj, name.c_str()) > 0;
}

// Bounds on what a (possibly hostile) header may make us allocate: far above
// any model cxr builds (the largest ResNet50V2 weight holds 2.4 M values), far
// below what would exhaust memory.
constexpr hssize_t kMaxStrings = 1 << 20;
constexpr size_t kMaxStringBytes = size_t{64} << 20;
constexpr int64_t kMaxDatasetValues = int64_t{1} << 26;

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

// A dataset read as float32, row-major. Torch-free: it runs in the reader
// child process (see read_keras_h5), where only libhdf5 and plain C++ are
// safe to call after fork.
struct RawWeight {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

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

// The last path component without Keras' ":0" suffix: "kernel" for
// "block_1_expand/kernel:0".
std::string base_name(const std::string& weight_name) {
  std::string s = weight_name.substr(weight_name.rfind('/') + 1);
  return s.substr(0, s.rfind(':'));
}

std::vector<std::string> expected_names(KerasKind kind, bool bias) {
  switch (kind) {
    case KerasKind::kConv2D:
    case KerasKind::kDense:
      return bias ? std::vector<std::string>{"kernel", "bias"}
                  : std::vector<std::string>{"kernel"};
    case KerasKind::kDepthwiseConv2D:
      return bias ? std::vector<std::string>{"depthwise_kernel", "bias"}
                  : std::vector<std::string>{"depthwise_kernel"};
    case KerasKind::kBatchNorm:
      return {"gamma", "beta", "moving_mean", "moving_variance"};
  }
  return {};
}

// The torch tensors of a module in Keras weight order.
std::vector<torch::Tensor> torch_tensors(const KerasLayerRef& ref) {
  auto* m = ref.module.get();
  if (ref.kind == KerasKind::kBatchNorm) {
    auto* bn = dynamic_cast<torch::nn::BatchNorm2dImpl*>(m);
    TORCH_CHECK(bn, "Keras layer ", ref.name, " is not a BatchNorm2d");
    return {bn->weight, bn->bias, bn->running_mean, bn->running_var};
  }
  torch::Tensor w, b;
  if (ref.kind == KerasKind::kDense) {
    auto* fc = dynamic_cast<torch::nn::LinearImpl*>(m);
    TORCH_CHECK(fc, "Keras layer ", ref.name, " is not a Linear");
    w = fc->weight;
    b = fc->bias;
  } else {
    auto* conv = dynamic_cast<torch::nn::Conv2dImpl*>(m);
    TORCH_CHECK(conv, "Keras layer ", ref.name, " is not a Conv2d");
    w = conv->weight;
    b = conv->bias;
  }
  if (b.defined()) return {w, b};
  return {w};
}

// Keras layout <-> torch layout of the first (kernel) tensor.
torch::Tensor kernel_to_keras(KerasKind kind, const torch::Tensor& w) {
  switch (kind) {
    case KerasKind::kConv2D:  // [out,in,kh,kw] -> [kh,kw,in,out]
      return w.permute({2, 3, 1, 0});
    case KerasKind::kDepthwiseConv2D:  // [C,1,kh,kw] -> [kh,kw,C,1]
      return w.permute({2, 3, 0, 1});
    case KerasKind::kDense:  // [out,in] -> [in,out]
      return w.t();
    case KerasKind::kBatchNorm:
      return w;
  }
  return w;
}

torch::Tensor kernel_from_keras(KerasKind kind, const torch::Tensor& k) {
  switch (kind) {
    case KerasKind::kConv2D:
      return k.permute({3, 2, 0, 1});
    case KerasKind::kDepthwiseConv2D:
      return k.permute({2, 3, 0, 1});
    case KerasKind::kDense:
      return k.t();
    case KerasKind::kBatchNorm:
      return k;
  }
  return k;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
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

}  // namespace

namespace {

// What the reader child sends its parent over a pipe: records of a tag byte
// and fields (u32 lengths and counts, u64 dimensions, float32 values, all
// native byte order: both ends are the same binary on the same machine).
//   'N' name            a layer name (read_keras_layer_names)
//   'L' name            a layer with weights starts (read_keras_h5)
//   'W' name rank dims values   one weight of that layer
//   'E' message         the reader's ModelError (a message naming the file)
//   'X' message         another exception
//   'D'                 done: everything was sent
enum class Tag : char {
  kName = 'N',
  kLayer = 'L',
  kWeight = 'W',
  kError = 'E',
  kOther = 'X',
  kDone = 'D',
};

// The child's output: write(2) only, retried on EINTR. A failed write means
// the parent is gone (or killed the child); the child just ends.
class PipeWriter {
 public:
  explicit PipeWriter(int fd) : fd_(fd) {}
  void bytes(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) ::_exit(3);
      p += w;
      n -= static_cast<size_t>(w);
    }
  }
  void tag(Tag t) { bytes(&t, 1); }
  void u32(uint32_t v) { bytes(&v, 4); }
  void text(const std::string& s) {
    u32(static_cast<uint32_t>(s.size()));
    bytes(s.data(), s.size());
  }

 private:
  int fd_;
};

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
      const RawWeight r =
          read_dataset(group.get(), name, at + ", dataset '" + name + "'");
      out.tag(Tag::kWeight);
      out.text(name);
      out.u32(static_cast<uint32_t>(r.shape.size()));
      for (int64_t d : r.shape) {
        const uint64_t v = static_cast<uint64_t>(d);
        out.bytes(&v, 8);
      }
      out.bytes(r.values.data(), r.values.size() * sizeof(float));
    }
  }
}

}  // namespace
}  // namespace cxr::models

// A sanitizer's death callback (libFuzzer's writes the input as a crash of
// its own) must not run in the reader child: a crash there is contained and
// reported by the parent. Weak: absent outside sanitizer builds.
extern "C" void __sanitizer_set_death_callback(void (*)(void))
    __attribute__((weak));

namespace cxr::models {
namespace {

// The parent's view of the child's records: every length checked against
// what is left.
class RecordReader {
 public:
  explicit RecordReader(const std::string& data) : data_(data) {}
  bool done() const { return pos_ >= data_.size(); }
  bool tag(Tag* t) {
    if (pos_ + 1 > data_.size()) return false;
    *t = static_cast<Tag>(data_[pos_++]);
    return true;
  }
  bool u32(uint32_t* v) { return bytes(v, 4); }
  bool u64(uint64_t* v) { return bytes(v, 8); }
  bool text(std::string* s) {
    uint32_t n = 0;
    if (!u32(&n) || n > data_.size() - pos_) return false;
    s->assign(data_, pos_, n);
    pos_ += n;
    return true;
  }
  bool bytes(void* out, size_t n) {
    if (n > data_.size() - pos_) return false;
    std::memcpy(out, data_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  size_t left() const { return data_.size() - pos_; }

 private:
  const std::string& data_;
  size_t pos_ = 0;
};

struct ChildResult {
  std::string data;  // the records
  bool timed_out = false;
  bool too_large = false;
  int status = 0;  // waitpid's, when reaped
  bool reaped = false;
};

// Runs `stream(path, out)` in a forked child and collects its records:
// libhdf5 1.10 crashes, overflows its heap and loops on some corrupt files
// (docs/reliability.md), so it never runs in cxr's own process. The child
// calls only libhdf5 and plain C++ (no torch: OpenMP and torch's thread
// pools do not survive fork), then _exit (no atexit handlers, no flushing of
// the parent's stdio buffers).
ChildResult run_reader_child(const std::string& path,
                             void (*stream)(const std::string&, PipeWriter&),
                             double timeout_s,
                             uint64_t max_bytes) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    throw ModelError("weights file '" + path +
                     "': cannot start the HDF5 reader process (pipe: " +
                     std::strerror(errno) + "); try again");
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    throw ModelError("weights file '" + path +
                     "': cannot start the HDF5 reader process (fork: " +
                     std::strerror(err) + "); try again");
  }
  if (pid == 0) {
    // The child. Signals the parent handles (Ctrl-C, a fuzzer's crash
    // handlers) take their default action here: the child just dies.
    for (int sig : {SIGINT, SIGTERM, SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE,
                    SIGALRM, SIGUSR1, SIGUSR2, SIGXFSZ, SIGPIPE}) {
      ::signal(sig, SIG_DFL);
    }
    if (__sanitizer_set_death_callback) __sanitizer_set_death_callback(nullptr);
    ::close(fds[0]);
    PipeWriter out(fds[1]);
    try {
      stream(path, out);
      out.tag(Tag::kDone);
    } catch (const Error& e) {
      out.tag(Tag::kError);
      out.text(e.what());
    } catch (const std::exception& e) {
      out.tag(Tag::kOther);
      out.text(e.what());
    }
    ::close(fds[1]);
    ::_exit(0);
  }
  ::close(fds[1]);
  ChildResult r;
  using Clock = std::chrono::steady_clock;
  const auto deadline =
      Clock::now() + std::chrono::milliseconds(
                         static_cast<int64_t>(std::max(0.0, timeout_s) * 1e3));
  char buf[1 << 16];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - Clock::now())
                          .count();
    if (left <= 0) {
      r.timed_out = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    const int ready =
        ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 1 << 30)));
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) continue;  // the deadline is checked above
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // end of the child's output (or a broken pipe)
    if (r.data.size() + static_cast<uint64_t>(n) > max_bytes) {
      r.too_large = true;
      break;
    }
    r.data.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  if (r.timed_out || r.too_large) ::kill(pid, SIGKILL);
  // After its output ends the child only closes and exits; give it the
  // rest of the deadline (at least a second), then kill it.
  const auto reap_by =
      std::max(deadline, Clock::now() + std::chrono::seconds(1));
  for (;;) {
    const pid_t w = ::waitpid(pid, &r.status, WNOHANG);
    if (w == pid) {
      r.reaped = true;
      break;
    }
    if (w < 0 && errno != EINTR) break;  // ECHILD: SIGCHLD ignored
    if (Clock::now() > reap_by) {
      ::kill(pid, SIGKILL);
      r.timed_out = true;
      while (::waitpid(pid, &r.status, 0) < 0 && errno == EINTR) {
      }
      r.reaped = true;
      break;
    }
    ::usleep(1000);
  }
  return r;
}

// The bytes a reader child may send: the weights of a Keras file are its
// float32 datasets, so a multiple of the file's size covers every real file
// (float16 or integer datasets are widened to float32); a file that claims
// more (e.g. datasets of unwritten fill values) is refused at this bound.
uint64_t max_reader_bytes(const std::string& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  const uint64_t file = ec ? 0 : static_cast<uint64_t>(size);
  return (uint64_t(64) << 20) + std::min<uint64_t>(file, uint64_t(1) << 40) * 8;
}

// The records of a finished child, or the ModelError that says why there
// are none: a crash, a timeout, too much data, or the reader's own error.
RecordReader checked_records(const std::string& path,
                             const ChildResult& r,
                             double timeout_s,
                             uint64_t max_bytes) {
  const std::string where = "weights file '" + path + "'";
  const std::string fix =
      "check that it is a Keras .h5 weights file, or download it again";
  if (r.timed_out) {
    throw ModelError(where +
                     ": not a readable Keras HDF5 weights file (the HDF5 "
                     "reader took longer than " +
                     std::to_string(static_cast<int>(timeout_s)) + " s); " +
                     fix);
  }
  if (r.too_large) {
    throw ModelError(where +
                     ": not a readable Keras HDF5 weights file (it holds "
                     "more than " +
                     std::to_string(max_bytes >> 20) + " MiB of weights); " +
                     fix);
  }
  // The reader's own answer (a ModelError naming the layer or dataset) when
  // it got that far and exited normally.
  RecordReader rec(r.data);
  const bool exited =
      r.reaped && WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0;
  if (!exited || r.data.empty()) {
    std::string how = "the HDF5 reader crashed on it";
    if (r.reaped && WIFSIGNALED(r.status)) {
      how += " (signal " + std::to_string(WTERMSIG(r.status)) + ")";
    } else if (r.reaped && WIFEXITED(r.status)) {
      how += " (exit status " + std::to_string(WEXITSTATUS(r.status)) + ")";
    }
    throw ModelError(where + ": not a readable Keras HDF5 weights file (" +
                     how + "); " + fix);
  }
  return rec;
}

[[noreturn]] void malformed(const std::string& path) {
  throw ModelError("weights file '" + path +
                   "': not a readable Keras HDF5 weights file (the HDF5 "
                   "reader process sent malformed data); check that it is a "
                   "Keras .h5 weights file, or download it again");
}

// An 'E' or 'X' record ends the stream with the reader's error.
[[noreturn]] void reader_error(const std::string& path,
                               Tag t,
                               RecordReader& rec) {
  std::string message;
  if (!rec.text(&message)) malformed(path);
  if (t == Tag::kError) throw ModelError(message);
  throw ModelError("weights file '" + path + "': " + message);
}

}  // namespace

std::vector<std::string> read_keras_layer_names(const std::string& path,
                                                double timeout_s) {
  const uint64_t cap = max_reader_bytes(path);
  const ChildResult r =
      run_reader_child(path, stream_layer_names, timeout_s, cap);
  RecordReader rec = checked_records(path, r, timeout_s, cap);
  std::vector<std::string> names;
  for (;;) {
    Tag t;
    if (!rec.tag(&t)) malformed(path);
    if (t == Tag::kDone && rec.done()) return names;
    if (t == Tag::kError || t == Tag::kOther) reader_error(path, t, rec);
    std::string name;
    if (t != Tag::kName || !rec.text(&name)) malformed(path);
    names.push_back(std::move(name));
  }
}

std::vector<KerasLayerWeights> read_keras_h5(const std::string& path,
                                             double timeout_s) {
  const uint64_t cap = max_reader_bytes(path);
  const ChildResult r = run_reader_child(path, stream_weights, timeout_s, cap);
  RecordReader rec = checked_records(path, r, timeout_s, cap);
  std::vector<KerasLayerWeights> layers;
  for (;;) {
    Tag t;
    if (!rec.tag(&t)) malformed(path);
    if (t == Tag::kDone && rec.done()) return layers;
    if (t == Tag::kError || t == Tag::kOther) reader_error(path, t, rec);
    std::string name;
    if (t == Tag::kLayer) {
      if (!rec.text(&name)) malformed(path);
      layers.push_back({name, {}});
      continue;
    }
    uint32_t rank = 0;
    if (t != Tag::kWeight || layers.empty() || !rec.text(&name) ||
        !rec.u32(&rank) || rank > 8) {
      malformed(path);
    }
    std::vector<int64_t> shape;
    uint64_t values = 1;
    for (uint32_t i = 0; i < rank; ++i) {
      uint64_t d = 0;
      if (!rec.u64(&d) || d > uint64_t(kMaxDatasetValues) ||
          (d > 0 && values > uint64_t(kMaxDatasetValues) / d)) {
        malformed(path);
      }
      values *= d;
      shape.push_back(static_cast<int64_t>(d));
    }
    // The values must be in what was received: no allocation beyond it.
    if (values * sizeof(float) > rec.left()) malformed(path);
    torch::Tensor v = torch::empty(shape, torch::kFloat32);
    rec.bytes(v.data_ptr<float>(), values * sizeof(float));
    layers.back().weights.push_back({name, v});
  }
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

std::vector<KerasLayerWeights> to_keras_weights(
    const std::vector<KerasLayerRef>& refs) {
  std::vector<KerasLayerWeights> out;
  for (const auto& ref : refs) {
    auto tensors = torch_tensors(ref);
    auto names = expected_names(ref.kind, tensors.size() == 2);
    KerasLayerWeights lw{ref.name, {}};
    for (size_t i = 0; i < tensors.size(); ++i) {
      torch::Tensor v = tensors[i].detach();
      if (i == 0) v = kernel_to_keras(ref.kind, v);
      lw.weights.push_back({ref.name + "/" + names[i] + ":0",
                            v.to(torch::kCPU, torch::kFloat32).contiguous()});
    }
    out.push_back(std::move(lw));
  }
  return out;
}

void assign_keras_weights(const std::vector<KerasLayerRef>& refs,
                          const std::vector<KerasLayerWeights>& file_layers,
                          const std::string& file,
                          const std::vector<std::string>& ignored) {
  const std::string where = "weights file '" + file + "'";
  std::map<std::string, const KerasLayerWeights*> by_name;
  for (const auto& l : file_layers) {
    if (!by_name.emplace(l.layer, &l).second) {
      throw ModelError(where + ": layer '" + l.layer + "' appears twice");
    }
  }
  std::set<std::string> wanted;
  for (const auto& r : refs) wanted.insert(r.name);
  const std::set<std::string> skip(ignored.begin(), ignored.end());

  size_t overlap = 0;
  for (const auto& l : file_layers) overlap += wanted.count(l.layer);
  if (overlap == 0 && !refs.empty()) {
    throw ModelError(where + ": none of its " +
                     std::to_string(file_layers.size()) + " weighted layers" +
                     (file_layers.empty()
                          ? ""
                          : " (first: '" + file_layers[0].layer + "')") +
                     " is a layer of this model (first: '" + refs[0].name +
                     "'); it holds weights for a different architecture");
  }
  for (const auto& l : file_layers) {
    if (!wanted.count(l.layer) && !skip.count(l.layer)) {
      throw ModelError(where + ": layer '" + l.layer +
                       "' has no counterpart in the model (weights for a "
                       "different architecture or variant?)");
    }
  }

  // Validate everything before copying anything.
  std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;
  for (const auto& ref : refs) {
    auto it = by_name.find(ref.name);
    if (it == by_name.end()) {
      throw ModelError(where + ": layer '" + ref.name +
                       "' is missing (the file has " +
                       std::to_string(file_layers.size()) +
                       " weighted layers, the model needs " +
                       std::to_string(refs.size()) + ")");
    }
    const KerasLayerWeights& lw = *it->second;
    auto tensors = torch_tensors(ref);
    auto names = expected_names(ref.kind, tensors.size() == 2);
    std::vector<std::string> got;
    for (const auto& w : lw.weights) got.push_back(base_name(w.name));
    if (got != names) {
      throw ModelError(where + ": layer '" + ref.name + "' has weights [" +
                       join(got) + "] but the model expects [" + join(names) +
                       "]");
    }
    for (size_t i = 0; i < tensors.size(); ++i) {
      const torch::Tensor& value = lw.weights[i].value;
      const torch::Tensor keras_shape =
          i == 0 ? kernel_to_keras(ref.kind, tensors[i]) : tensors[i];
      if (value.sizes() != keras_shape.sizes()) {
        throw ModelError(where + ": layer '" + ref.name + "' weight '" +
                         lw.weights[i].name + "' has shape " +
                         shape_str(value.sizes()) + " but the model needs " +
                         shape_str(keras_shape.sizes()) + " (Keras layout)");
      }
      copies.emplace_back(tensors[i],
                          i == 0 ? kernel_from_keras(ref.kind, value) : value);
    }
  }
  torch::NoGradGuard no_grad;
  for (auto& [dst, src] : copies) dst.copy_(src);
}

void load_keras_h5(const std::vector<KerasLayerRef>& refs,
                   const std::string& path,
                   const std::vector<std::string>& ignored) {
  assign_keras_weights(refs, read_keras_h5(path), path, ignored);
}

int64_t count_keras_parameters(torch::nn::Module& module) {
  int64_t n = count_parameters(module);
  for (const auto& b : module.named_buffers()) {
    const std::string& key = b.key();
    auto ends_with = [&](const std::string& s) {
      return key.size() >= s.size() &&
             key.compare(key.size() - s.size(), s.size(), s) == 0;
    };
    if (ends_with("running_mean") || ends_with("running_var")) {
      n += b.value().numel();
    }
  }
  return n;
}

}  // namespace cxr::models
