#pragma once
// Internal to src/data: the pieces image_io.cpp (sniffing, limits, dispatch,
// gray conversion) shares with one decoder file per library (decode_png.cpp:
// libpng, decode_jpeg.cpp: libjpeg-turbo, decode_bmp.cpp: stb_image,
// decode_dicom.cpp: DCMTK). Not a
// public header: the contract is decode_gray in cxr/data/image_io.h.
#include <cstdint>
#include <string>
#include <vector>

#include "cxr/data/image_io.h"

namespace cxr::data::detail {

/// Pixels as a decoder hands them over: `channels` interleaved samples per
/// pixel (1 gray, 2 gray+alpha, 3 rgb, 4 rgba), 8-bit in `u8` or 16-bit
/// (native byte order) in `u16`. `ycc`: a JPEG's Y, Cb, Cr planes as
/// stored (gray is Y, exactly what stb_image returned for gray requests).
struct Raw {
  int w = 0;
  int h = 0;
  int channels = 0;
  bool sixteen = false;
  bool ycc = false;
  std::vector<uint8_t> u8;
  std::vector<uint16_t> u16;
};

/// Throws DataError("image 'name': why").
[[noreturn]] void fail(const std::string& name, const std::string& why);

/// Throws DataError for a damaged file of `format`, saying to re-copy it.
[[noreturn]] void corrupt(const std::string& name,
                          const std::string& format,
                          const std::string& why);

/// Names what a file that is not a readable image looks like, so the
/// message says what to do (a text file, a TIFF that needs converting...).
std::string describe_unknown(const std::vector<unsigned char>& b);

/// Throws DataError when the header's size is empty or over `limits`.
void check_limits(const ImageInfo& info,
                  const std::string& name,
                  const DecodeLimits& limits);

/// libpng; `info` comes from the sniffed header (limits already checked).
Raw decode_png(const std::vector<unsigned char>& bytes,
               const std::string& name,
               const ImageInfo& info,
               const DecodeLimits& limits);

/// libjpeg-turbo; fills `info`'s size from libjpeg's header parse and checks
/// the limits before decoding. `want_rgb`: RGB out instead of Y, Cb, Cr.
Raw decode_jpeg(const std::vector<unsigned char>& bytes,
                const std::string& name,
                const DecodeLimits& limits,
                bool want_rgb,
                ImageInfo& info);

/// The header of a file starting "BM" (stb_image); throws if unreadable.
ImageInfo sniff_bmp(const std::vector<unsigned char>& bytes,
                    const std::string& name);

/// stb_image (BMP only; gated by the "BM" magic).
Raw decode_bmp(const std::vector<unsigned char>& bytes,
               const std::string& name);

/// True for the DICM magic at offset 128, or (files without the preamble
/// carry no magic) a name ending in .dcm or .dicom.
bool looks_like_dicom(const std::vector<unsigned char>& bytes,
                      const std::string& name);

/// DCMTK (decode_dicom.cpp): first frame, VOI applied, MONOCHROME1 inverted;
/// fills all of `info` and checks the limits from Rows and Columns. Without
/// DCMTK (CXR_HAVE_DCMTK undefined) it throws DataError saying so.
Raw decode_dicom(const std::vector<unsigned char>& bytes,
                 const std::string& name,
                 const DecodeLimits& limits,
                 ImageInfo& info);

}  // namespace cxr::data::detail
