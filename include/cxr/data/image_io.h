#pragma once
/// Image decoding (PNG 1-16 bit in every colour type, JPEG, BMP, DICOM when
/// built with DCMTK) into one grayscale float image, resizing and PNG
/// writing.
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace cxr::data {

/// What a file holds before conversion.
struct ImageInfo {
  int width = 0;
  int height = 0;
  int channels = 0;    ///< channels in the file (1 gray .. 4 RGBA; 3 palette)
  int bit_depth = 0;   ///< bits per channel in the file (1..16; DICOM:
                       ///< Bits Stored, up to 32)
  std::string format;  ///< "png", "jpeg", "bmp", "dicom"
  std::string color;   ///< "gray", "gray+alpha", "rgb", "rgba", "palette"
  /// Mean over pixels of max(R, G, B) - min(R, G, B), in [0, 1]: about 0 for
  /// a gray picture stored in colour, towards 1 for saturated colour. Alpha
  /// is ignored. Set by decode_gray for colour files (rgb, rgba, palette,
  /// colour JPEG/BMP); 0 for gray files.
  double chroma = 0.0;
  /// What the decoder did that the user should know but that is no error,
  /// one line each (e.g. "DICOM with 2 frames: only the first is used").
  std::vector<std::string> notes;
};

/// Limits that protect against hostile headers (a PNG claiming 100000^2 px).
struct DecodeLimits {
  int max_side = 16384;                     ///< pixels per side
  int64_t max_pixels = 64LL * 1024 * 1024;  ///< width * height
};

/// A decoded image: `pixels` is [H, W] float32 in [0, 1].
struct GrayImage {
  ImageInfo info;
  torch::Tensor pixels;
  uint64_t pixel_hash = 0;  ///< hash of the decoded full-resolution pixels
};

/// Decodes an in-memory file; the format is decided by content (PNG, JPEG,
/// BMP magic; DICOM: "DICM" at offset 128). `name` is used in error messages
/// and for one hint: a file with no known magic whose name ends in .dcm or
/// .dicom is read as a DICOM without preamble. DICOM pixels: docs/
/// data-input.md. Throws DataError("image 'name': <reason>") on any problem.
GrayImage decode_gray(const std::vector<unsigned char>& bytes,
                      const std::string& name,
                      const DecodeLimits& limits = {});

/// False when cxr was built without DCMTK: DICOM files are then refused
/// with a DataError saying how to get support.
bool dicom_supported();

/// Reads and decodes a file (see decode_gray).
GrayImage read_gray(const std::string& path, const DecodeLimits& limits = {});

/// Reads an RGB image as [3, H, W] float32 in [0, 1] (for ImageNet checks).
torch::Tensor read_rgb(const std::string& path,
                       const DecodeLimits& limits = {});

/// Antialiased bilinear resize of [H, W], [C, H, W] or [N, C, H, W] float
/// images to `size` x `size`. Returns the same rank as the input.
torch::Tensor resize_square(const torch::Tensor& image, int size);

/// Writes a PNG. `image` is [H, W] (gray) or [3, H, W] / [4, H, W], either
/// uint8 or float in [0, 1]. Atomic. Throws IoError naming the path.
void write_png(const std::string& path, const torch::Tensor& image);

/// Encodes a PNG into memory (same input contract as write_png).
std::vector<unsigned char> encode_png(const torch::Tensor& image);

}  // namespace cxr::data
