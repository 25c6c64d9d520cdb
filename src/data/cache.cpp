// The decoded-image cache: see cache.h.
#include "cache.h"

#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <fstream>

#include "cxr/common/fs.h"

namespace fs = std::filesystem;

namespace cxr::data {
namespace {

// Version 3 stores ImageInfo::chroma (version 2 dropped it, so a colour file
// read from the cache looked gray to the input checks).
constexpr char kCacheMagic[8] = {'C', 'X', 'R', 'C', 'A', 'C', 'H', '3'};

template <typename T>
void put(std::string& out, const T& v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}
void put_str(std::string& out, const std::string& s) {
  put<uint32_t>(out, static_cast<uint32_t>(s.size()));
  out.append(s);
}

struct Reader {
  const std::string& buf;
  size_t pos = 0;
  bool ok = true;
  template <typename T>
  T get() {
    T v{};
    if (pos + sizeof(T) > buf.size()) {
      ok = false;
      return v;
    }
    std::memcpy(&v, buf.data() + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
  std::string get_str() {
    auto n = get<uint32_t>();
    if (!ok || pos + n > buf.size() || n > (1u << 16)) {
      ok = false;
      return {};
    }
    std::string s = buf.substr(pos, n);
    pos += n;
    return s;
  }
};

}  // namespace

FileStamp stamp(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  return {static_cast<int64_t>(st.st_size),
          static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000LL +
              st.st_mtim.tv_nsec};
}

fs::path cache_path(const DatasetOptions& o, const std::string& root) {
  std::string key = root + "|" + std::to_string(o.size);
  char buf[40];
  std::snprintf(
      buf, sizeof buf, "%016llx",
      static_cast<unsigned long long>(fnv1a64(key.data(), key.size())));
  return fs::path(o.cache_dir) /
         ("decoded-" + std::to_string(o.size) + "px-" + buf + ".bin");
}

std::unordered_map<std::string, CacheRecord> read_cache(const fs::path& p,
                                                        int size) {
  std::unordered_map<std::string, CacheRecord> out;
  std::ifstream in(p, std::ios::binary);
  if (!in) return out;
  std::string buf((std::istreambuf_iterator<char>(in)),
                  std::istreambuf_iterator<char>());
  Reader r{buf};
  if (buf.size() < sizeof kCacheMagic ||
      std::memcmp(buf.data(), kCacheMagic, sizeof kCacheMagic) != 0) {
    return out;
  }
  r.pos = sizeof kCacheMagic;
  if (r.get<int32_t>() != size) return out;
  const auto n = r.get<uint64_t>();
  const size_t px = static_cast<size_t>(size) * size;
  for (uint64_t i = 0; i < n && r.ok; ++i) {
    std::string path = r.get_str();
    CacheRecord rec;
    rec.file_size = r.get<int64_t>();
    rec.mtime_ns = r.get<int64_t>();
    rec.info.width = r.get<int32_t>();
    rec.info.height = r.get<int32_t>();
    rec.info.channels = r.get<int32_t>();
    rec.info.bit_depth = r.get<int32_t>();
    rec.info.format = r.get_str();
    rec.info.color = r.get_str();
    rec.info.chroma = r.get<double>();
    rec.pixel_hash = r.get<uint64_t>();
    if (!r.ok || r.pos + px > buf.size()) {
      out.clear();
      return out;
    }
    rec.pixels.assign(buf.begin() + static_cast<std::ptrdiff_t>(r.pos),
                      buf.begin() + static_cast<std::ptrdiff_t>(r.pos + px));
    r.pos += px;
    out.emplace(std::move(path), std::move(rec));
  }
  if (!r.ok) out.clear();
  return out;
}

void write_cache(
    const fs::path& p,
    int size,
    const std::vector<std::pair<std::string, const CacheRecord*>>& records) {
  std::string out;
  out.reserve(records.size() * (static_cast<size_t>(size) * size + 160));
  out.append(kCacheMagic, sizeof kCacheMagic);
  put<int32_t>(out, size);
  put<uint64_t>(out, records.size());
  for (const auto& [path, rec] : records) {
    put_str(out, path);
    put<int64_t>(out, rec->file_size);
    put<int64_t>(out, rec->mtime_ns);
    put<int32_t>(out, rec->info.width);
    put<int32_t>(out, rec->info.height);
    put<int32_t>(out, rec->info.channels);
    put<int32_t>(out, rec->info.bit_depth);
    put_str(out, rec->info.format);
    put_str(out, rec->info.color);
    put<double>(out, rec->info.chroma);
    put<uint64_t>(out, rec->pixel_hash);
    out.append(reinterpret_cast<const char*>(rec->pixels.data()),
               rec->pixels.size());
  }
  write_text_atomic(p, out);
}

}  // namespace cxr::data
