#include "cxr/models/weights_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"

namespace fs = std::filesystem;

namespace cxr::models {

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "weights_file.cpp writes tensors as they lie in memory: little-endian"
#endif

namespace {

struct DtypeName {
  torch::ScalarType type;
  const char* name;
};

// The safetensors names of the dtypes torch has (its Dtype enum).
const DtypeName kDtypes[] = {
    {torch::kFloat64, "F64"}, {torch::kFloat32, "F32"},
    {torch::kFloat16, "F16"}, {torch::kBFloat16, "BF16"},
    {torch::kInt64, "I64"},   {torch::kInt32, "I32"},
    {torch::kInt16, "I16"},   {torch::kInt8, "I8"},
    {torch::kUInt8, "U8"},    {torch::kBool, "BOOL"},
};

bool dtype_from_name(const std::string& name, torch::ScalarType* out) {
  for (const auto& d : kDtypes) {
    if (name == d.name) {
      *out = d.type;
      return true;
    }
  }
  return false;
}

/// A name from a file, printable on one line (a tensor name is any JSON
/// string: it may hold newlines or be very long).
std::string printable(const std::string& s) {
  std::string out;
  for (char c : s.substr(0, 120)) {
    out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
  }
  if (s.size() > 120) out += "...";
  return out;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    s += (i ? ", " : "") + std::to_string(shape[i]);
  }
  return s + "]";
}

/// Reads exactly `n` bytes at `offset`; false on a short read or error.
bool read_at(int fd, void* buf, uint64_t n, uint64_t offset) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(n, 1u << 30));
    const ssize_t got = ::pread(fd, p, chunk, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    p += got;
    n -= static_cast<uint64_t>(got);
    offset += static_cast<uint64_t>(got);
  }
  return true;
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

/// One tensor's entry in the header, checked.
struct Entry {
  std::string name;
  torch::ScalarType type = torch::kFloat32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

}  // namespace

std::string safetensors_dtype(torch::ScalarType t) {
  for (const auto& d : kDtypes) {
    if (d.type == t) return d.name;
  }
  return "";
}

void write_tensor_file(const std::string& path,
                       const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  std::vector<torch::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__" || header.contains(name)) {
      throw ConfigError("'" + path + "': tensor name '" + printable(name) +
                        "' is reserved or given twice");
    }
    const std::string dtype = safetensors_dtype(t.scalar_type());
    if (dtype.empty()) {
      throw ConfigError("'" + path + "': tensor '" + printable(name) +
                        "' has dtype " +
                        std::string(c10::toString(t.scalar_type())) +
                        ", which safetensors cannot hold");
    }
    // contiguous() also turns a channels-last tensor into row-major order.
    auto c = t.detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(c.nbytes());
    header[name] = {{"dtype", dtype},
                    {"shape", c.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(std::move(c));
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  // nlohmann orders the keys by name; the data above is in the caller's
  // order, which the offsets record (safetensors allows any order).
  std::string text = header.dump();
  // The data starts 8-byte aligned, as safetensors' own writer pads it.
  text.append((8 - text.size() % 8) % 8, ' ');
  write_file_atomic(path, [&](const fs::path& tmp) {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    uint8_t len[8];
    for (int i = 0; i < 8; ++i)
      len[i] = uint8_t(uint64_t(text.size()) >> (8 * i));
    f.write(reinterpret_cast<const char*>(len), 8);
    f.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& c : data) {
      f.write(static_cast<const char*>(c.data_ptr()),
              static_cast<std::streamsize>(c.nbytes()));
    }
    f.close();
    if (!f) {
      throw IoError("cannot write '" + path +
                    "'; check the disk space and permissions");
    }
  });
}

namespace {

constexpr char kNotSafetensors[] = "is not a safetensors weights file";

// Refuses the file being read: ModelError "'PATH' WHAT; FIX".
struct Refuse {
  const std::string& path;
  const std::string& fix;
  [[noreturn]] void operator()(const std::string& what) const {
    throw ModelError("'" + path + "' " + what + "; " + fix);
  }
};

// The file opened for reading, and its size; refused unless a regular file.
uint64_t open_regular(const Refuse& fail, Fd& f) {
  f.fd = ::open(fail.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0)
    fail(std::string("cannot be read (") + std::strerror(errno) + ")");
  struct stat st {};
  if (::fstat(f.fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    fail("is not a regular file");
  }
  return static_cast<uint64_t>(st.st_size);
}

// The JSON header's text: its 8-byte little-endian length checked against
// the file's size and kMaxWeightsHeaderBytes before it is read.
std::string read_header_text(const Refuse& fail, int fd, uint64_t size) {
  const std::string kind = kNotSafetensors;
  if (size < 8) fail(kind + " (" + std::to_string(size) + " bytes)");
  uint8_t len_bytes[8];
  if (!read_at(fd, len_bytes, 8, 0)) fail("cannot be read (short read)");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(len_bytes[i]) << (8 * i);
  if (n > size - 8) {
    fail(kind + " (header of " + std::to_string(n) + " bytes in a file of " +
         std::to_string(size) + ")");
  }
  if (n > kMaxWeightsHeaderBytes) {
    fail(kind + " (header of " + std::to_string(n) + " bytes, limit " +
         std::to_string(kMaxWeightsHeaderBytes) + ")");
  }
  std::string text(static_cast<size_t>(n), '\0');
  if (n > 0 && !read_at(fd, text.data(), n, 8)) {
    fail("cannot be read (short read)");
  }
  if (text.empty() || text[0] != '{') {
    fail(kind + " (the header is not a JSON object)");
  }
  return text;
}

// The header parsed as a JSON object. Duplicate keys: nlohmann keeps the
// last one silently; safetensors (and this reader) refuse them. A stack of
// the keys seen per open object, and a nesting limit (the format nests
// three levels).
nlohmann::json parse_header(const Refuse& fail, const std::string& text) {
  const std::string kind = kNotSafetensors;
  std::vector<std::set<std::string>> keys;
  std::string duplicate;
  auto callback = [&](int depth, nlohmann::json::parse_event_t event,
                      nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (depth > 4) fail(kind + " (the header nests deeper than 4 levels)");
    if (event == E::object_start || event == E::array_start) {
      keys.emplace_back();
    } else if (event == E::object_end || event == E::array_end) {
      if (!keys.empty()) keys.pop_back();
    } else if (event == E::key && !keys.empty()) {
      const std::string k = parsed.get<std::string>();
      if (!keys.back().insert(k).second && duplicate.empty()) duplicate = k;
    }
    return true;
  };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text, callback);
  } catch (const nlohmann::json::exception& e) {
    std::string why = e.what();
    fail(kind + " (header: " + printable(why) + ")");
  }
  if (!duplicate.empty()) {
    fail("names '" + printable(duplicate) + "' twice in its header");
  }
  if (!header.is_object()) fail(kind + " (the header is not a JSON object)");
  if (header.size() > kMaxWeightsTensors + 1) {
    fail("holds " + std::to_string(header.size()) + " tensors (limit " +
         std::to_string(kMaxWeightsTensors) + ")");
  }
  return header;
}

// The header's __metadata__: an object of strings.
std::map<std::string, std::string> parse_metadata(const Refuse& fail,
                                                  const nlohmann::json& v) {
  if (!v.is_object()) fail("has a __metadata__ that is not an object");
  std::map<std::string, std::string> out;
  for (const auto& [k, s] : v.items()) {
    if (!s.is_string()) {
      fail("has __metadata__ entry '" + printable(k) +
           "' that is not a string");
    }
    out[k] = s.get<std::string>();
  }
  return out;
}

// One tensor's header entry: exactly dtype, shape and data_offsets, a known
// dtype, a shape whose byte count matches the offsets.
Entry parse_entry(const Refuse& fail,
                  const std::string& name,
                  const nlohmann::json& v) {
  const std::string where = "tensor '" + printable(name) + "' ";
  if (!v.is_object() || v.size() != 3 || !v.contains("dtype") ||
      !v.contains("shape") || !v.contains("data_offsets")) {
    fail("has a malformed entry for " + where +
         "(expected exactly dtype, shape and data_offsets)");
  }
  Entry e;
  e.name = name;
  const auto& dt = v.at("dtype");
  if (!dt.is_string() || !dtype_from_name(dt.get<std::string>(), &e.type)) {
    fail("has " + where + "of unknown dtype " + printable(dt.dump()));
  }
  const auto& shape = v.at("shape");
  if (!shape.is_array() || shape.size() > kMaxWeightsRank) {
    fail("has " + where + "with a bad shape " + printable(shape.dump()));
  }
  // Each dimension and the element count stay below 2^40, so the byte
  // count below cannot overflow.
  constexpr uint64_t kMaxCount = uint64_t(1) << 40;
  uint64_t count = 1;
  for (const auto& d : shape) {
    if (!d.is_number_unsigned() || d.get<uint64_t>() > kMaxCount) {
      fail("has " + where + "with a bad shape " + printable(shape.dump()));
    }
    const uint64_t dim = d.get<uint64_t>();
    e.shape.push_back(static_cast<int64_t>(dim));
    if (dim != 0 && count > kMaxCount / dim) {
      fail("has " + where + "with a bad shape " + printable(shape.dump()));
    }
    count *= dim;
  }
  const auto& off = v.at("data_offsets");
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
      !off[1].is_number_unsigned() ||
      off[0].get<uint64_t>() > off[1].get<uint64_t>()) {
    fail("has " + where + "with bad data_offsets " + printable(off.dump()));
  }
  e.begin = off[0].get<uint64_t>();
  e.end = off[1].get<uint64_t>();
  const uint64_t bytes = count * c10::elementSize(e.type);
  if (e.end - e.begin != bytes) {
    fail("has " + where + "of " + std::to_string(bytes) +
         " bytes whose data_offsets span " + std::to_string(e.end - e.begin));
  }
  return e;
}

// Sorts `entries` by offset and checks that they cover the data exactly:
// from 0, each tensor where the one before ends, the last at the end of
// the file. So no two overlap, and the tensors hold at most the file's
// bytes.
void check_coverage(const Refuse& fail,
                    std::vector<Entry>& entries,
                    uint64_t data_size) {
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t at = 0;
  for (const auto& e : entries) {
    if (e.begin != at) {
      fail(std::string(e.begin < at ? "has overlapping" : "has a gap between") +
           " tensors at byte " + std::to_string(e.begin) + " (tensor '" +
           printable(e.name) + "')");
    }
    at = e.end;
  }
  if (at != data_size) {
    fail("holds " + std::to_string(data_size) +
         " bytes of tensor data but its header accounts for " +
         std::to_string(at) + " (truncated or padded)");
  }
}

}  // namespace

TensorFile read_tensor_file(const std::string& path, const std::string& fix) {
  const Refuse fail{path, fix};
  Fd f;
  const uint64_t size = open_regular(fail, f);
  const std::string text = read_header_text(fail, f.fd, size);
  const nlohmann::json header = parse_header(fail, text);
  TensorFile out;
  std::vector<Entry> entries;
  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      out.metadata = parse_metadata(fail, v);
    } else {
      entries.push_back(parse_entry(fail, name, v));
    }
  }
  const uint64_t data_start = 8 + text.size();
  check_coverage(fail, entries, size - data_start);
  for (const auto& e : entries) {
    auto t = torch::empty(e.shape, torch::TensorOptions().dtype(e.type));
    if (e.end > e.begin &&
        !read_at(f.fd, t.data_ptr(), e.end - e.begin, data_start + e.begin)) {
      fail("cannot be read (short read in tensor '" + printable(e.name) + "')");
    }
    out.tensors.emplace_back(e.name, std::move(t));
  }
  return out;
}

void save_module_weights(const std::string& path,
                         torch::nn::Module& module,
                         const std::map<std::string, std::string>& metadata) {
  NamedTensors tensors;
  for (const auto& p : module.named_parameters()) {
    tensors.emplace_back(p.key(), p.value());
  }
  for (const auto& b : module.named_buffers()) {
    tensors.emplace_back(b.key(), b.value());
  }
  write_tensor_file(path, tensors, metadata);
}

std::map<std::string, std::string> load_module_weights(
    const std::string& path,
    torch::nn::Module& module,
    const std::string& fix,
    const std::string& model_source) {
  std::map<std::string, torch::Tensor> expected;
  for (const auto& p : module.named_parameters()) {
    expected[p.key()] = p.value();
  }
  for (const auto& b : module.named_buffers()) expected[b.key()] = b.value();
  TensorFile file = read_tensor_file(path, fix);
  auto fail = [&](const std::string& what) -> void {
    throw ModelError("'" + path + "' does not match " + model_source + ": " +
                     what + "; " + fix);
  };
  std::set<std::string> seen;
  for (const auto& [name, t] : file.tensors) {
    const auto it = expected.find(name);
    if (it == expected.end()) {
      fail("it holds tensor '" + printable(name) + "', which the model lacks");
    }
    seen.insert(name);
    const auto& want = it->second;
    if (t.scalar_type() != want.scalar_type()) {
      fail("tensor '" + name + "' is " + safetensors_dtype(t.scalar_type()) +
           ", the model needs " + safetensors_dtype(want.scalar_type()));
    }
    if (t.sizes() != want.sizes()) {
      fail("tensor '" + name + "' is " + shape_text(t.sizes().vec()) +
           ", the model needs " + shape_text(want.sizes().vec()));
    }
  }
  for (const auto& [name, t] : expected) {
    if (!seen.count(name)) fail("it lacks tensor '" + name + "'");
  }
  torch::NoGradGuard no_grad;
  for (const auto& [name, t] : file.tensors) expected[name].copy_(t);
  return file.metadata;
}

}  // namespace cxr::models
