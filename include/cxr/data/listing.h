#pragma once
/// Finding image files: which names are images (PACS-style DICOM names
/// included) and expanding files and folders into image files, with
/// symlink loops and unreadable folders reported, never thrown as a
/// std::filesystem_error.
#include <string>
#include <vector>

namespace cxr::data {

/// A file or folder that could not be used, and why (one line naming it).
struct BadFile {
  std::string path;
  std::string reason;
};

/// True for .png, .jpg, .jpeg, .bmp, .dcm and .dicom (any case), and for a
/// file named without an extension or with an all-digit one (a DICOM UID)
/// whose bytes 128..131 are the DICOM magic "DICM" (132 bytes are read).
bool is_image_file(const std::string& path);

/// Expands files and folders (searched recursively, sorted; symlinked
/// folders are not followed) into image files. Throws DataError naming a
/// missing path or an image-less folder. A symlink loop or a folder that
/// cannot be read throws DataError naming it, or with `skipped` is appended
/// there (path + one-line reason) and the listing goes on.
std::vector<std::string> list_image_files(
    const std::vector<std::string>& inputs,
    std::vector<BadFile>* skipped = nullptr);

}  // namespace cxr::data
