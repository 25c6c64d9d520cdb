#pragma once
// The decoded-image cache (internal to data/): one file per data root and
// image size holding each image's file stamp, ImageInfo, pixel hash and
// resized uint8 pixels, so a second load skips decoding. Never trusted
// blindly: a foreign, damaged or stale entry is decoded again.
#include <cstdint>
#include <filesystem>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cxr/data/dataset.h"

namespace cxr::data {

struct CacheRecord {
  int64_t file_size = 0;
  int64_t mtime_ns = 0;
  ImageInfo info;
  uint64_t pixel_hash = 0;
  std::vector<uint8_t> pixels;  // size * size
};

/// A file's size and modification time (size -1 when it cannot be read).
struct FileStamp {
  int64_t size = -1;
  int64_t mtime_ns = 0;
};
FileStamp stamp(const std::string& path);

/// The cache file of `root` (absolute) at options.size in options.cache_dir.
std::filesystem::path cache_path(const DatasetOptions& options,
                                 const std::string& root);

/// Reads the cache; a missing, foreign or damaged cache is simply empty
/// (it is rebuilt from the images).
std::unordered_map<std::string, CacheRecord> read_cache(
    const std::filesystem::path& path, int size);

void write_cache(
    const std::filesystem::path& path,
    int size,
    const std::vector<std::pair<std::string, const CacheRecord*>>& records);

}  // namespace cxr::data
