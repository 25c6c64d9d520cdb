// DICOM decoding with DCMTK, from memory (uploads to `cxr serve` are never
// written to disk). What the pixels are (docs/data-input.md, "DICOM"):
// modality LUT (rescale slope/intercept) applied, then the first VOI window
// of the file, else its first VOI LUT, else the min-max of the modality
// values (dcm2pnm's +Wm, what the OOD sets used before); MONOCHROME1 is
// inverted by DCMTK's presentation step so bone is bright; colour comes out
// as RGB and becomes gray with the other decoders' luma weights. Only the
// first frame is decoded. Messages name the file and the problem, never a
// tag value (patient names, IDs and dates must not reach logs).
#include <algorithm>
#include <cctype>
#include <cstring>

#include "decoders.h"

#ifdef CXR_HAVE_DCMTK
#include <dcmtk/config/osconfig.h>  // first, as DCMTK requires

#include <dcmtk/dcmdata/dccodec.h>
#include <dcmtk/dcmdata/dcdatset.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmimage/diregist.h>  // colour models for DicomImage
#include <dcmtk/dcmimgle/dcmimage.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>
#include <dcmtk/oflog/oflog.h>
#endif

namespace cxr::data {

bool dicom_supported() {
#ifdef CXR_HAVE_DCMTK
  return true;
#else
  return false;
#endif
}

namespace detail {

bool looks_like_dicom(const std::vector<unsigned char>& b,
                      const std::string& name) {
  if (b.size() >= 132 && std::memcmp(b.data() + 128, "DICM", 4) == 0) {
    return true;
  }
  // Files without the 128-byte preamble and magic (old ACR-NEMA style
  // exports) carry no signature at all; the extension is the only hint.
  std::string ext = name.substr(std::min(name.size(), name.rfind('.')));
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return ext == ".dcm" || ext == ".dicom";
}

#ifndef CXR_HAVE_DCMTK

Raw decode_dicom(const std::vector<unsigned char>&,
                 const std::string& name,
                 const DecodeLimits&,
                 ImageInfo&) {
  fail(name,
       "a DICOM file, but this cxr was built without DICOM support (DCMTK); "
       "install libdcmtk-dev and rebuild");
}

#else

namespace {

/// Registers the decompression codecs once per process (a function-local
/// static is initialised thread-safely) and turns DCMTK's logging off: it
/// prints warnings to stderr by default, which would break the one-line
/// error contract and could echo header contents.
void init_dcmtk() {
  struct Init {
    Init() {
      OFLog::configure(OFLogger::OFF_LOG_LEVEL);
      DJDecoderRegistration::registerCodecs();    // JPEG 8/12/16 bit
      DJLSDecoderRegistration::registerCodecs();  // JPEG-LS
      DcmRLEDecoderRegistration::registerCodecs();
    }
  };
  static const Init once;
  (void)once;
}

/// Every DICOM message starts "a DICOM file, but": the user learns what the
/// file is even when the reason is DCMTK's.
/// A DICOM input stream over memory that, unlike DcmInputBufferStream, can
/// make a factory. Without one DCMTK loads every value while parsing and
/// first allocates the length its header claims: 4 GiB for a 500-byte file
/// (found by fuzz_decode_image). With one, values longer than
/// DCM_MaxReadLength are skipped while parsing (a value longer than the
/// rest of the file is then a parse error) and read from the same bytes
/// when DCMTK needs them, so nothing is allocated that the file does not
/// hold.
class MemoryStream : public DcmInputBufferStream {
 public:
  MemoryStream(const unsigned char* data, size_t size)
      : data_(data), size_(size) {
    setBuffer(data, static_cast<offile_off_t>(size));
    setEos();
  }
  DcmInputStreamFactory* newFactory() const override;

 private:
  const unsigned char* data_;
  size_t size_;
};

class MemoryStreamFactory : public DcmInputStreamFactory {
 public:
  MemoryStreamFactory(const unsigned char* data, size_t size, offile_off_t at)
      : data_(data), size_(size), at_(at) {}
  DcmInputStream* create() const override {
    auto* s = new MemoryStream(data_, size_);
    s->skip(at_);
    return s;
  }
  DcmInputStreamFactory* clone() const override {
    return new MemoryStreamFactory(*this);
  }
  // Only "temp file" factories get special treatment (their file is
  // deleted); a memory one behaves like a file one.
  DcmInputStreamFactoryType ident() const override {
    return DFT_DcmInputFileStreamFactory;
  }

 private:
  const unsigned char* data_;
  size_t size_;
  offile_off_t at_;
};

DcmInputStreamFactory* MemoryStream::newFactory() const {
  return new MemoryStreamFactory(data_, size_, tell());
}

/// DCMTK 3.6.7's RLE decoder trusts the segment offsets of each fragment's
/// 64-byte RLE header and reads wherever they point (a SEGV found by
/// fuzz_decode_image). Returns "" when every fragment's header is sane:
/// 1..15 segments, the first at byte 64, offsets increasing and inside
/// the fragment; else what is wrong.
std::string check_rle_headers(DcmDataset* ds) {
  DcmElement* el = nullptr;
  if (ds->findAndGetElement(DCM_PixelData, el).bad() || el == nullptr) {
    return "";  // "no pixel data" is reported elsewhere
  }
  DcmPixelSequence* seq = nullptr;
  auto* pd = static_cast<DcmPixelData*>(el);
  if (pd->getEncapsulatedRepresentation(EXS_RLELossless, nullptr, seq).bad() ||
      seq == nullptr) {
    return "no RLE fragments";
  }
  // Item 0 is the offset table; each frame is one fragment after it.
  for (unsigned long i = 1; i < seq->card(); ++i) {
    DcmPixelItem* item = nullptr;
    Uint8* p = nullptr;
    if (seq->getItem(item, i).bad() || item->getUint8Array(p).bad()) {
      return "unreadable RLE fragment";
    }
    const Uint32 len = item->getLength();
    auto le32 = [&](size_t at) {
      return Uint32(p[at]) | Uint32(p[at + 1]) << 8 | Uint32(p[at + 2]) << 16 |
             Uint32(p[at + 3]) << 24;
    };
    if (p == nullptr || len < 64) return "RLE fragment shorter than its header";
    const Uint32 n = le32(0);
    if (n < 1 || n > 15)
      return "RLE header with " + std::to_string(n) + " segments";
    Uint32 prev = 0;
    for (Uint32 k = 0; k < n; ++k) {
      const Uint32 off = le32(4 + 4 * size_t(k));
      if ((k == 0 && off != 64) || off < prev || off >= len) {
        return "RLE segment offsets outside the fragment";
      }
      prev = off;
    }
  }
  return "";
}

[[noreturn]] void refuse(const std::string& name, const std::string& why) {
  fail(name, "a DICOM file, but " + why);
}

[[noreturn]] void damaged(const std::string& name, const std::string& why) {
  refuse(name,
         "corrupt or truncated (" + why + "); re-copy or remove the file");
}

}  // namespace

Raw decode_dicom(const std::vector<unsigned char>& bytes,
                 const std::string& name,
                 const DecodeLimits& limits,
                 ImageInfo& info) {
  init_dcmtk();
  MemoryStream in(bytes.data(), bytes.size());
  DcmFileFormat file;
  file.transferInit();
  // Values over 4 KiB (pixel data) are read lazily from `bytes`, which
  // outlives `file` and the DicomImage below.
  OFCondition c = file.read(in, EXS_Unknown, EGL_noChange, DCM_MaxReadLength);
  file.transferEnd();
  if (c.bad()) {
    damaged(name, std::string("DCMTK: ") + c.text());
  }
  DcmDataset* ds = file.getDataset();
  if (!ds->tagExists(DCM_PixelData) && !ds->tagExists(DCM_FloatPixelData) &&
      !ds->tagExists(DCM_DoubleFloatPixelData)) {
    refuse(name,
           "it holds no pixel data (not an image: e.g. a report or a "
           "presentation state)");
  }
  const E_TransferSyntax xfer = ds->getOriginalXfer();
  const DcmXfer x(xfer);
  if (x.isEncapsulated() &&
      !DcmCodecList::canChangeCoding(xfer, EXS_LittleEndianExplicit)) {
    refuse(name, std::string("its transfer syntax ") + x.getXferName() + " (" +
                     x.getXferID() + ") cannot be decoded by this cxr (DCMTK " +
                     "has no decoder for it); convert the file to " +
                     "uncompressed DICOM or PNG");
  }
  if (xfer == EXS_RLELossless) {
    const std::string bad = check_rle_headers(ds);
    if (!bad.empty()) damaged(name, bad);
  }
  Uint16 rows = 0, cols = 0, stored = 0;
  if (ds->findAndGetUint16(DCM_Rows, rows).bad() ||
      ds->findAndGetUint16(DCM_Columns, cols).bad()) {
    damaged(name, "the header lacks Rows or Columns");
  }
  ds->findAndGetUint16(DCM_BitsStored, stored);
  info.format = "dicom";
  info.width = cols;
  info.height = rows;
  info.bit_depth = stored;
  // Before DCMTK allocates the decoded frame.
  check_limits(info, name, limits);

  // First frame only (fcount 1); partial access decompresses only it.
  DicomImage img(
      ds, xfer,
      CIF_UsePartialAccessToPixelData | CIF_NeverAccessEmbeddedOverlays, 0, 1);
  const EI_Status st = img.getStatus();
  if (st != EIS_Normal) {
    const bool broken = st == EIS_InvalidImage || st == EIS_OtherError;
    const std::string what = DicomImage::getString(st);
    if (broken) damaged(name, "DCMTK: " + what);
    refuse(name, "its image cannot be decoded (DCMTK: " + what +
                     "); convert it to PNG with the viewer that reads it");
  }
  if (img.getWidth() != cols || img.getHeight() != rows) {
    damaged(name, "decoded size differs from Rows x Columns");
  }
  const unsigned long frames = img.getNumberOfFrames();
  if (frames > 1) {
    info.notes.push_back("DICOM with " + std::to_string(frames) +
                         " frames: only the first is used");
  }
  Raw raw;
  raw.w = cols;
  raw.h = rows;
  // 8 bits out for up to 8 stored bits (no precision to keep), else 16.
  const int out_bits = stored > 0 && stored <= 8 ? 8 : 16;
  raw.sixteen = out_bits == 16;
  if (img.isMonochrome()) {
    info.channels = 1;
    info.color = "gray";
    raw.channels = 1;
    if (!(img.getWindowCount() > 0 && img.setWindow(0)) &&
        !(img.getVoiLutCount() > 0 && img.setVoiLut(0))) {
      img.setMinMaxWindow(0);
    }
  } else {
    info.channels = 3;
    const EP_Interpretation pi = img.getPhotometricInterpretation();
    info.color = pi == EPI_PaletteColor ? "palette" : "rgb";
    raw.channels = 3;
  }
  const size_t n = size_t(cols) * size_t(rows) * size_t(raw.channels);
  const void* px = img.getOutputData(out_bits, 0, 0);  // interleaved
  if (px == nullptr || img.getOutputDataSize(out_bits) < n * (out_bits / 8)) {
    damaged(name, "DCMTK produced no pixels for the first frame");
  }
  if (raw.sixteen) {
    const auto* p = static_cast<const uint16_t*>(px);
    raw.u16.assign(p, p + n);
  } else {
    const auto* p = static_cast<const uint8_t*>(px);
    raw.u8.assign(p, p + n);
  }
  return raw;
}

#endif  // CXR_HAVE_DCMTK

}  // namespace detail
}  // namespace cxr::data
