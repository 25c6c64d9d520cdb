#pragma once
/// Small file helpers: atomic writes (write to a temp file, then rename) so
/// an interrupted run never leaves a half-written output behind.
#include <nlohmann/json.hpp>

#include <filesystem>
#include <functional>
#include <string>

namespace cxr {

/// Writes `text` to `path` atomically. Throws IoError naming the path.
void write_text_atomic(const std::filesystem::path& path,
                       const std::string& text);

/// Writes pretty-printed JSON atomically.
void write_json_atomic(const std::filesystem::path& path,
                       const nlohmann::json& j);

/// Calls `writer(tmp_path)` and renames tmp_path to `path` on success.
/// What `path` is decides how: a regular file or a new path is written
/// atomically; a symlink is followed and its target written atomically; a
/// character device, FIFO or socket (/dev/stdout, /dev/null, a pipe) is
/// written through directly (`writer(path)`); a directory or other special
/// file is an IoError naming it. The text writers below go through here.
void write_file_atomic(
    const std::filesystem::path& path,
    const std::function<void(const std::filesystem::path&)>& writer);

/// Reads a whole text file; throws DataError naming the path when missing.
std::string read_text(const std::filesystem::path& path);

/// Reads a JSON file; throws DataError naming the path on parse errors.
nlohmann::json read_json(const std::filesystem::path& path);

/// Creates `dir` (and parents); throws IoError naming it on failure.
void ensure_dir(const std::filesystem::path& dir);

/// 64-bit FNV-1a of a byte range (stable across runs and machines).
uint64_t fnv1a64(const void* data,
                 size_t size,
                 uint64_t seed = 1469598103934665603ULL);

}  // namespace cxr
