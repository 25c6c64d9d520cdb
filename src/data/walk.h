#pragma once
// Folder walking shared by the listing (listing.cpp) and the dataset index
// (dataset.cpp), internal to data/: every std::filesystem call takes an
// error_code, and a problem is either thrown as a DataError or, with
// --skip-bad, kept like a bad image.
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "cxr/data/listing.h"

namespace cxr::data {

/// What is wrong with a path, as the end of a sentence starting with it.
std::string fs_problem(const std::error_code& ec);

/// Where listing problems go: thrown (with `hint` appended) or, with
/// --skip-bad, kept in `bad` and listed like bad images.
struct Problems {
  std::vector<BadFile>* bad = nullptr;  ///< nullptr: throw
  std::string hint;
  void report(const std::string& message, const std::filesystem::path& p) const;
};

/// The visible sub-folders of `dir` (symlinked ones followed), sorted.
std::vector<std::string> subdirs(const std::filesystem::path& dir,
                                 const Problems& problems);

/// The image files in `dir`, or in `dir`/images when that exists, sorted.
std::vector<std::string> image_files(const std::filesystem::path& dir,
                                     const Problems& problems);

}  // namespace cxr::data
