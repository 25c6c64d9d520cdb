// Finding image files: image names (PACS-style DICOM names included) and
// folder walking for `cxr predict`/`explain` inputs and the dataset index.
#include "cxr/data/listing.h"

#include <algorithm>
#include <cstring>
#include <fstream>

#include "cxr/common/error.h"
#include "walk.h"

namespace fs = std::filesystem;

namespace cxr::data {
namespace {

bool hidden(const fs::path& p) {
  auto n = p.filename().string();
  return !n.empty() && n[0] == '.';
}

enum class Kind { kFolder, kFile, kOther, kBad };

/// The kind of a folder entry, following file symlinks. Problems (a
/// symlink loop, an entry that cannot be stat'ed, a dangling symlink with
/// an image name) are reported; a dangling symlink with another name is
/// ignored like any other non-image file.
Kind kind_of(const fs::directory_entry& e, const Problems& problems) {
  std::error_code ec;
  const fs::file_status st = e.status(ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory &&
        !is_image_file(e.path().string())) {
      return Kind::kOther;
    }
    problems.report("'" + e.path().string() + "' " + fs_problem(ec), e.path());
    return Kind::kBad;
  }
  if (fs::is_directory(st)) return Kind::kFolder;
  if (fs::is_regular_file(st)) return Kind::kFile;
  return Kind::kOther;
}

/// Entries of one folder (not recursive), or nothing after reporting a
/// folder that cannot be listed.
std::vector<fs::directory_entry> entries(const fs::path& dir,
                                         const Problems& problems) {
  std::vector<fs::directory_entry> out;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
    out.push_back(*it);
  }
  if (ec) {
    problems.report("folder '" + dir.string() + "' " + fs_problem(ec), dir);
    out.clear();
  }
  return out;
}

}  // namespace

/// What is wrong with a path, as the end of a sentence starting with it.
std::string fs_problem(const std::error_code& ec) {
  if (ec == std::errc::too_many_symbolic_link_levels) {
    return "is a symlink loop (too many levels of symbolic links)";
  }
  if (ec == std::errc::permission_denied) {
    return "cannot be read (permission denied)";
  }
  if (ec == std::errc::no_such_file_or_directory) {
    return "is a dangling symlink or was removed while listing";
  }
  return "cannot be read (" + ec.message() + ")";
}

void Problems::report(const std::string& message, const fs::path& p) const {
  if (!bad) throw DataError(message + hint);
  bad->push_back({p.string(), message});
}

std::vector<std::string> subdirs(const fs::path& dir,
                                 const Problems& problems) {
  std::vector<std::string> out;
  for (const auto& e : entries(dir, problems)) {
    if (!hidden(e.path()) && kind_of(e, problems) == Kind::kFolder) {
      out.push_back(e.path().filename().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> image_files(const fs::path& dir,
                                     const Problems& problems) {
  fs::path d = dir;
  std::error_code ec;
  if (fs::is_directory(dir / "images", ec)) d = dir / "images";
  std::vector<std::string> out;
  for (const auto& e : entries(d, problems)) {
    if (hidden(e.path())) continue;
    const Kind k = kind_of(e, problems);
    if (k == Kind::kFile && is_image_file(e.path().string())) {
      out.push_back(e.path().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool is_image_file(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
  if (ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp" ||
      ext == ".dcm" || ext == ".dicom") {
    return true;
  }
  // PACS exports name DICOM files without an extension ("IM0001") or by
  // their UID ("1.2.840.113619.2.55.3.604688119"): those names, and only
  // those, are worth reading 132 bytes for the DICM magic.
  const bool uid_like =
      ext.size() > 1 && std::all_of(ext.begin() + 1, ext.end(), [](char c) {
        return c >= '0' && c <= '9';
      });
  if (!ext.empty() && !uid_like) return false;
  std::ifstream in(path, std::ios::binary);
  char head[132];
  return in.read(head, sizeof head) && std::memcmp(head + 128, "DICM", 4) == 0;
}

std::vector<std::string> list_image_files(
    const std::vector<std::string>& inputs, std::vector<BadFile>* skipped) {
  const Problems problems{skipped, " (pass --skip-bad to predict the rest)"};
  std::vector<std::string> files;
  for (const auto& in : inputs) {
    std::error_code ec;
    const fs::file_status st = fs::status(in, ec);
    if (ec && ec != std::errc::no_such_file_or_directory) {
      problems.report("'" + in + "' " + fs_problem(ec), in);
      continue;
    }
    if (!fs::exists(st)) {
      throw DataError("'" + in +
                      "' does not exist; give image files or folders");
    }
    if (!fs::is_directory(st)) {
      files.push_back(in);
      continue;
    }
    // Depth-first over real folders; symlinked folders are not followed
    // (a link back up would loop), symlinked files are.
    const size_t bad_before = skipped ? skipped->size() : 0;
    std::vector<std::string> found;
    std::vector<fs::path> todo = {in};
    while (!todo.empty()) {
      const fs::path dir = todo.back();
      todo.pop_back();
      for (const auto& e : entries(dir, problems)) {
        std::error_code lec;
        const bool link = e.is_symlink(lec);
        const Kind k = kind_of(e, problems);
        if (k == Kind::kFolder && !link) {
          todo.push_back(e.path());
        } else if (k == Kind::kFile && is_image_file(e.path().string())) {
          found.push_back(e.path().string());
        }
      }
    }
    std::sort(found.begin(), found.end());
    const bool had_bad = skipped && skipped->size() > bad_before;
    if (found.empty() && !had_bad) {
      throw DataError("folder '" + in + "' holds no PNG/JPEG/BMP images");
    }
    files.insert(files.end(), found.begin(), found.end());
  }
  return files;
}

}  // namespace cxr::data
