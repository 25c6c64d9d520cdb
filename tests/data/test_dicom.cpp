// DICOM input through decode_gray: each test writes its own files with
// DCMTK's API (8/12/16 bit, signed, rescale, VOI window, MONOCHROME1,
// colour, frames, compressed syntaxes, broken files) and checks the decoded
// pixel values, not only that nothing throws. docs/data-input.md says what
// the pixels are meant to be.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

#include "cxr/common/error.h"
#include "cxr/data/dataset.h"
#include "cxr/data/image_io.h"
#include "cxr/data/listing.h"
#include "cxr/train/run.h"
#include "test_util.h"

#ifdef CXR_HAVE_DCMTK
#include <dcmtk/config/osconfig.h>

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcrleerg.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmjpeg/djencode.h>
#include <dcmtk/dcmjpeg/djrplol.h>
#include <dcmtk/dcmjpeg/djrploss.h>
#include <dcmtk/dcmjpls/djencode.h>
#include <dcmtk/dcmjpls/djrparam.h>
#endif

namespace {

namespace fs = std::filesystem;
using cxr::testing::TempDir;

std::vector<unsigned char> slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

using cxr::testing::contains;

std::string decode_error(const std::vector<unsigned char>& bytes,
                         const std::string& name,
                         const cxr::data::DecodeLimits& limits = {}) {
  return cxr::testing::error_of<cxr::DataError>(
      [&] { cxr::data::decode_gray(bytes, name, limits); });
}

#ifndef CXR_HAVE_DCMTK

TEST(Dicom, WithoutDcmtkADicomFileIsRefusedWithTheFix) {
  std::vector<unsigned char> b(200, 0);
  std::memcpy(b.data() + 128, "DICM", 4);
  const std::string m = decode_error(b, "scan.dcm");
  EXPECT_TRUE(contains(m, "'scan.dcm'")) << m;
  EXPECT_TRUE(contains(m,
                       "built without DICOM support (DCMTK); install "
                       "libdcmtk-dev and rebuild"))
      << m;
}

#else

/// A DICOM image as the tests need it; "" strings leave the tag out.
struct Spec {
  int rows = 2;
  int cols = 3;
  int allocated = 16;
  int stored = 12;
  int spp = 1;
  int frames = 1;
  bool is_signed = false;
  std::string photometric = "MONOCHROME2";
  std::vector<int> samples;  // frames x rows x cols x spp, interleaved
  std::string slope, intercept, center, width;
  bool pixels = true;
};

/// An 8-bit image (BitsAllocated = BitsStored = 8), 2 x 3 unless changed.
Spec eight_bit(std::vector<int> samples) {
  Spec s;
  s.allocated = 8;
  s.stored = 8;
  s.samples = std::move(samples);
  return s;
}

/// A rows x cols gray image (12 of 16 bits) whose i-th pixel is pixel(i).
template <typename F>
Spec gray(int rows, int cols, F pixel) {
  Spec s;
  s.rows = rows;
  s.cols = cols;
  for (int i = 0; i < rows * cols; ++i) s.samples.push_back(pixel(i));
  return s;
}

// Identifying tags that no message may repeat.
const char* kPatientName = "Doe^Jane";
const char* kPatientId = "PID-77123";

std::unique_ptr<DcmFileFormat> build(const Spec& s) {
  auto ff = std::make_unique<DcmFileFormat>();
  DcmDataset* ds = ff->getDataset();
  char uid[100];
  ds->putAndInsertString(DCM_SOPClassUID, UID_SecondaryCaptureImageStorage);
  ds->putAndInsertString(DCM_SOPInstanceUID, dcmGenerateUniqueIdentifier(
                                                 uid, SITE_INSTANCE_UID_ROOT));
  ds->putAndInsertString(DCM_PatientName, kPatientName);
  ds->putAndInsertString(DCM_PatientID, kPatientId);
  ds->putAndInsertString(DCM_Modality, "CR");
  ds->putAndInsertUint16(DCM_Rows, static_cast<Uint16>(s.rows));
  ds->putAndInsertUint16(DCM_Columns, static_cast<Uint16>(s.cols));
  ds->putAndInsertUint16(DCM_BitsAllocated, static_cast<Uint16>(s.allocated));
  ds->putAndInsertUint16(DCM_BitsStored, static_cast<Uint16>(s.stored));
  ds->putAndInsertUint16(DCM_HighBit, static_cast<Uint16>(s.stored - 1));
  ds->putAndInsertUint16(DCM_PixelRepresentation, s.is_signed ? 1 : 0);
  ds->putAndInsertUint16(DCM_SamplesPerPixel, static_cast<Uint16>(s.spp));
  ds->putAndInsertString(DCM_PhotometricInterpretation, s.photometric.c_str());
  if (s.spp > 1) ds->putAndInsertUint16(DCM_PlanarConfiguration, 0);
  if (s.frames > 1) {
    ds->putAndInsertString(DCM_NumberOfFrames,
                           std::to_string(s.frames).c_str());
  }
  if (!s.slope.empty()) {
    ds->putAndInsertString(DCM_RescaleSlope, s.slope.c_str());
  }
  if (!s.intercept.empty()) {
    ds->putAndInsertString(DCM_RescaleIntercept, s.intercept.c_str());
  }
  if (!s.center.empty()) {
    ds->putAndInsertString(DCM_WindowCenter, s.center.c_str());
    ds->putAndInsertString(DCM_WindowWidth, s.width.c_str());
  }
  if (s.pixels) {
    EXPECT_EQ(s.samples.size(),
              size_t(s.frames) * s.rows * s.cols * size_t(s.spp));
    if (s.allocated == 8) {
      std::vector<Uint8> v(s.samples.begin(), s.samples.end());
      ds->putAndInsertUint8Array(DCM_PixelData, v.data(),
                                 static_cast<unsigned long>(v.size()));
    } else {
      std::vector<Uint16> v;
      for (int x : s.samples) v.push_back(static_cast<Uint16>(x & 0xffff));
      ds->putAndInsertUint16Array(DCM_PixelData, v.data(),
                                  static_cast<unsigned long>(v.size()));
    }
  }
  return ff;
}

/// Writes `s` with transfer syntax `xfer` (compressing with DCMTK's
/// encoders when it is a compressed one) and returns the file's bytes.
std::vector<unsigned char> write(
    const Spec& s,
    const fs::path& p,
    E_TransferSyntax xfer = EXS_LittleEndianExplicit,
    const DcmRepresentationParameter* rp = nullptr) {
  static const bool encoders = [] {
    DJEncoderRegistration::registerCodecs();
    DJLSEncoderRegistration::registerCodecs();
    DcmRLEEncoderRegistration::registerCodecs();
    return true;
  }();
  (void)encoders;
  auto ff = build(s);
  if (DcmXfer(xfer).isEncapsulated()) {
    EXPECT_TRUE(ff->getDataset()->chooseRepresentation(xfer, rp).good());
    EXPECT_TRUE(ff->getDataset()->canWriteXfer(xfer));
  }
  EXPECT_TRUE(ff->saveFile(p.c_str(), xfer).good()) << p;
  return slurp(p);
}

std::vector<float> pixels_of(const cxr::data::GrayImage& g) {
  auto t = g.pixels.contiguous();
  return {t.data_ptr<float>(), t.data_ptr<float>() + t.numel()};
}

/// Pixels 0, 1, 2 and 4 at 0, 1/4, 1/2 and 1: the samples' range mapped
/// whole onto [0, 1] (the 16-bit ramps below).
void expect_quarters(const std::vector<float>& px) {
  EXPECT_NEAR(px[0], 0.0f, 1e-6);
  EXPECT_NEAR(px[1], 0.25f, 2e-4);
  EXPECT_NEAR(px[2], 0.5f, 2e-4);
  EXPECT_NEAR(px[4], 1.0f, 1e-6);
}

std::vector<float> decode(const std::vector<unsigned char>& b,
                          const std::string& name = "x.dcm",
                          cxr::data::ImageInfo* info = nullptr) {
  const auto g = cxr::data::decode_gray(b, name);
  if (info) *info = g.info;
  return pixels_of(g);
}

TEST(Dicom, EightBitWithoutWindowSpansTheStoredMinToMax) {
  TempDir dir;
  const Spec s = eight_bit({20, 20, 70, 120, 120, 220});  // min 20, max 220
  cxr::data::ImageInfo info;
  const auto px = decode(write(s, dir / "a.dcm"), "a.dcm", &info);
  EXPECT_EQ(info.format, "dicom");
  EXPECT_EQ(info.bit_depth, 8);
  EXPECT_EQ(info.width, 3);
  EXPECT_EQ(info.height, 2);
  EXPECT_EQ(info.color, "gray");
  EXPECT_EQ(info.chroma, 0.0);
  EXPECT_TRUE(info.notes.empty());
  ASSERT_EQ(px.size(), 6u);
  EXPECT_NEAR(px[0], 0.0f, 1e-6);
  EXPECT_NEAR(px[5], 1.0f, 1e-6);
  EXPECT_NEAR(px[2], 0.25f, 1.5f / 255);  // (70 - 20) / 200
  EXPECT_NEAR(px[3], 0.5f, 1.5f / 255);
}

TEST(Dicom, TwelveAndSixteenBitUnsignedKeepTheirPrecision) {
  TempDir dir;
  Spec s;
  s.stored = 12;
  s.samples = {0, 1024, 2048, 3072, 4095, 4094};
  cxr::data::ImageInfo info;
  auto px = decode(write(s, dir / "a.dcm"), "a.dcm", &info);
  EXPECT_EQ(info.bit_depth, 12);
  EXPECT_NEAR(px[0], 0.0f, 1e-6);
  EXPECT_NEAR(px[4], 1.0f, 1e-6);
  EXPECT_NEAR(px[2], 2048.0f / 4095, 2e-4);
  // One stored step apart stays apart (an 8-bit output would merge them).
  EXPECT_GT(px[4] - px[5], 1.0f / 8192);
  s.stored = 16;
  s.samples = {0, 16384, 32768, 49152, 65535, 65535};
  px = decode(write(s, dir / "b.dcm"), "b.dcm", &info);
  EXPECT_EQ(info.bit_depth, 16);
  expect_quarters(px);
}

TEST(Dicom, SignedPixelsAreOrderedBySignedValue) {
  TempDir dir;
  Spec s;
  s.stored = 16;
  s.is_signed = true;
  s.samples = {-1000, -500, 0, 500, 1000, 0};
  const auto px = decode(write(s, dir / "a.dcm"));
  // Read as unsigned, -1000 would be 64536: the brightest pixel.
  expect_quarters(px);
}

TEST(Dicom, TheFirstWindowIsAppliedToRescaledValues) {
  TempDir dir;
  Spec s;
  s.stored = 12;
  // Window 100 +- 25 in stored units (no rescale).
  s.samples = {0, 75, 100, 125, 4095, 90};
  s.center = "100\\2000";  // two windows: the first one counts
  s.width = "50\\4000";
  auto px = decode(write(s, dir / "a.dcm"));
  EXPECT_NEAR(px[0], 0.0f, 1e-6);
  EXPECT_NEAR(px[1], 0.0f, 1e-6);
  EXPECT_NEAR(px[2], 0.51f, 0.02);  // ((100 - 99.5) / 49 + 0.5)
  EXPECT_NEAR(px[3], 1.0f, 1e-6);
  EXPECT_NEAR(px[4], 1.0f, 1e-6);
  EXPECT_NEAR(px[5], 0.31f, 0.02);  // ((90 - 99.5) / 49 + 0.5)

  // Slope 2, intercept -1000: stored 400, 500, 600 are -200, 0, 200 in
  // modality units, where the window 0 +- 200 lies. Ignoring the rescale
  // would put every pixel above the window (all 1).
  s.samples = {400, 500, 600, 450, 550, 0};
  s.slope = "2";
  s.intercept = "-1000";
  s.center = "0";
  s.width = "400";
  px = decode(write(s, dir / "b.dcm"));
  EXPECT_NEAR(px[0], 0.0f, 1e-6);
  EXPECT_NEAR(px[1], 0.5f, 0.01);
  EXPECT_NEAR(px[2], 1.0f, 1e-6);
  EXPECT_NEAR(px[3], 0.25f, 0.01);
  EXPECT_NEAR(px[4], 0.75f, 0.01);
  EXPECT_NEAR(px[5], 0.0f, 1e-6);
}

TEST(Dicom, MonochromeOneIsTheInverseOfItsMonochromeTwoTwin) {
  TempDir dir;
  for (int bits : {8, 16}) {
    Spec s;
    s.allocated = bits;
    s.stored = bits == 8 ? 8 : 12;
    s.samples = {0, 30, 90, 200, 250, 255};
    const auto two = decode(write(s, dir / "two.dcm"));
    s.photometric = "MONOCHROME1";
    const auto one = decode(write(s, dir / "one.dcm"));
    ASSERT_EQ(one.size(), two.size());
    // High stored values are dark in MONOCHROME1: bone stays bright.
    EXPECT_NEAR(one[0], 1.0f, 1e-6) << bits;
    EXPECT_NEAR(one[5], 0.0f, 1e-6) << bits;
    for (size_t i = 0; i < one.size(); ++i) {
      EXPECT_NEAR(one[i], 1.0f - two[i], 1e-5) << bits << " " << i;
    }
  }
}

TEST(Dicom, ColourBecomesGrayWithTheDecodersLumaAndIsFlagged) {
  TempDir dir;
  Spec s;
  s.rows = 1;
  s.cols = 4;
  s.allocated = 8;
  s.stored = 8;
  s.spp = 3;
  s.photometric = "RGB";
  s.samples = {255, 0, 0, 0, 255, 0, 0, 0, 255, 100, 100, 100};
  cxr::data::ImageInfo info;
  const auto px = decode(write(s, dir / "rgb.dcm"), "rgb.dcm", &info);
  EXPECT_EQ(info.color, "rgb");
  EXPECT_EQ(info.channels, 3);
  // (77 R + 150 G + 29 B) >> 8, as for colour PNGs.
  EXPECT_NEAR(px[0], 76.0f / 255, 1e-6);
  EXPECT_NEAR(px[1], 149.0f / 255, 1e-6);
  EXPECT_NEAR(px[2], 28.0f / 255, 1e-6);
  EXPECT_NEAR(px[3], 100.0f / 255, 1e-6);
  EXPECT_NEAR(info.chroma, 0.75, 1e-6);  // three saturated pixels of four
}

TEST(Dicom, MultiFrameGivesTheFirstFrameAndSaysSo) {
  TempDir dir;
  Spec s = eight_bit({0, 51, 102, 153, 204, 255,    // frame 1
                      255, 204, 153, 102, 51, 0});  // frame 2: reversed
  s.frames = 2;
  cxr::data::ImageInfo info;
  const auto px = decode(write(s, dir / "two.dcm"), "two.dcm", &info);
  ASSERT_EQ(px.size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_NEAR(px[i], i * 0.2f, 1.5f / 255) << i;
  }
  ASSERT_EQ(info.notes.size(), 1u);
  EXPECT_EQ(info.notes[0], "DICOM with 2 frames: only the first is used");
}

TEST(Dicom, LosslessCompressedSyntaxesDecodeToTheSamePixels) {
  TempDir dir;
  const Spec s = gray(16, 16, [](int i) { return (i * 37) % 4096; });
  const auto plain = decode(write(s, dir / "plain.dcm"));
  const DJ_RPLossless jpeg_lossless;
  const DJLSRepresentationParameter jpls_lossless;
  struct Case {
    const char* name;
    E_TransferSyntax xfer;
    const DcmRepresentationParameter* rp;
  };
  for (const Case& c :
       {Case{"rle", EXS_RLELossless, nullptr},
        Case{"jpeg-lossless", EXS_JPEGProcess14SV1, &jpeg_lossless},
        Case{"jpeg-ls", EXS_JPEGLSLossless, &jpls_lossless},
        Case{"big-endian", EXS_BigEndianExplicit, nullptr},
        Case{"implicit", EXS_LittleEndianImplicit, nullptr}}) {
    const auto b = write(s, dir / (std::string(c.name) + ".dcm"), c.xfer, c.rp);
    const auto px = decode(b, c.name);
    ASSERT_EQ(px.size(), plain.size()) << c.name;
    for (size_t i = 0; i < px.size(); ++i) {
      ASSERT_EQ(px[i], plain[i]) << c.name << " pixel " << i;
    }
  }
}

TEST(Dicom, JpegBaselineDecodesCloseToTheOriginal) {
  TempDir dir;
  Spec s = gray(16, 16, [](int i) { return i; });  // smooth ramp
  s.allocated = 8;
  s.stored = 8;
  const auto plain = decode(write(s, dir / "plain.dcm"));
  const DJ_RPLossy q90(90);
  const auto px =
      decode(write(s, dir / "jpeg.dcm", EXS_JPEGProcess1, &q90), "jpeg.dcm");
  double diff = 0;
  for (size_t i = 0; i < px.size(); ++i) diff += std::abs(px[i] - plain[i]);
  EXPECT_LT(diff / px.size(), 3.0 / 255);
}

TEST(Dicom, AFileWithoutPreambleIsReadWhenNamedDcm) {
  TempDir dir;
  const Spec s = eight_bit({0, 50, 100, 150, 200, 250});
  const auto with = decode(write(s, dir / "with.dcm"));
  auto ff = build(s);
  const fs::path bare = dir / "bare.dcm";
  ASSERT_TRUE(ff->getDataset()
                  ->saveFile(bare.c_str(), EXS_LittleEndianExplicit)
                  .good());
  const auto bytes = slurp(bare);
  ASSERT_FALSE(bytes.size() > 132 && std::memcmp(&bytes[128], "DICM", 4) == 0);
  EXPECT_EQ(decode(bytes, "bare.DCM"), with);
  EXPECT_EQ(decode(bytes, "bare.dicom"), with);
  // Under another name nothing says it is DICOM: the usual refusal.
  const std::string m = decode_error(bytes, "bare.raw");
  EXPECT_TRUE(contains(m, "not a readable image")) << m;
  // A DICOM with the magic is read whatever its name.
  EXPECT_EQ(decode(slurp(dir / "with.dcm"), "IM0001"), with);
}

/// Every refusal is one line naming the file, says it is a DICOM file and
/// never repeats an identifying tag.
void expect_refusal(const std::string& m,
                    const std::string& name,
                    const std::string& needle) {
  EXPECT_TRUE(contains(m, "image '" + name + "': a DICOM file, but")) << m;
  EXPECT_TRUE(contains(m, needle)) << m;
  EXPECT_FALSE(contains(m, "\n")) << m;
  EXPECT_FALSE(contains(m, "Doe")) << m;
  EXPECT_FALSE(contains(m, "77123")) << m;
}

TEST(Dicom, BadFilesAreOneLineDataErrorsWithoutPatientData) {
  TempDir dir;
  const Spec s = gray(64, 64, [](int) { return 1000; });
  const auto good = write(s, dir / "good.dcm");
  ASSERT_EQ(decode(good).size(), 64u * 64);

  // Pixel data cut short.
  SCOPED_TRACE("cut.dcm");
  std::vector<unsigned char> cut(good.begin(), good.end() - 4096);
  expect_refusal(decode_error(cut, "cut.dcm"), "cut.dcm",
                 "corrupt or truncated");

  // No pixel data at all.
  Spec none = s;
  none.pixels = false;
  expect_refusal(decode_error(write(none, dir / "none.dcm"), "none.dcm"),
                 "none.dcm", "holds no pixel data");

  // A header element (Modality, explicit VR "CS") whose length claims
  // far more bytes than the file holds.
  std::vector<unsigned char> bad = good;
  const unsigned char modality[] = {0x08, 0x00, 0x60, 0x00, 'C', 'S'};
  const auto at = std::search(bad.begin(), bad.end(), std::begin(modality),
                              std::end(modality));
  ASSERT_NE(at, bad.end());
  at[6] = 0xf0;
  at[7] = 0xff;
  SCOPED_TRACE("bad.dcm");
  expect_refusal(decode_error(bad, "bad.dcm"), "bad.dcm",
                 "corrupt or truncated");

  // Only the magic.
  std::vector<unsigned char> magic(132, 0);
  std::memcpy(magic.data() + 128, "DICM", 4);
  SCOPED_TRACE("magic.png");
  const std::string m = decode_error(magic, "magic.png");
  expect_refusal(m, "magic.png", "");
}

TEST(Dicom, AClaimedLengthIsNotAllocatedBeforeItIsRead) {
  // fuzz/regressions/fuzz_decode_image/dicom-oom-claimed-length: 503
  // bytes whose last element claims ~2 GiB. DCMTK used to allocate the
  // claimed length before reading; under a 1 GiB address-space cap that
  // failed as "Virtual Memory exhausted". Now the value is skipped while
  // parsing and found too long for the file.
  const auto bytes = slurp(fs::path(CXR_SOURCE_DIR) / "fuzz" / "regressions" /
                           "fuzz_decode_image" / "dicom-oom-claimed-length");
  ASSERT_EQ(bytes.size(), 503u);
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(fds[0]);
    rlimit cap{};
    ::getrlimit(RLIMIT_AS, &cap);
    // Room for what is mapped already (LibTorch) plus 1 GiB.
    std::ifstream statm("/proc/self/statm");
    size_t pages = 0;
    statm >> pages;
    cap.rlim_cur = pages * size_t(::sysconf(_SC_PAGESIZE)) + (1ULL << 30);
    ::setrlimit(RLIMIT_AS, &cap);
    const std::string m = decode_error(bytes, "oom.dcm");
    (void)!::write(fds[1], m.data(), m.size());
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string m;
  char buf[512];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) m.append(buf, n);
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  expect_refusal(m, "oom.dcm", "corrupt or truncated");
  EXPECT_FALSE(contains(m, "emory")) << m;
}

TEST(Dicom, RleSegmentOffsetsOutsideTheFragmentAreRefused) {
  // DCMTK 3.6.7's RLE decoder reads wherever the header's offsets point
  // (a SEGV found by fuzz_decode_image); cxr checks them first.
  TempDir dir;
  const Spec s = gray(16, 16, [](int i) { return i * 16; });
  auto b = write(s, dir / "rle.dcm", EXS_RLELossless);
  ASSERT_EQ(decode(b).size(), 256u);
  // 16-bit gray: 2 segments (high and low bytes), the first at 64.
  const unsigned char head[] = {2, 0, 0, 0, 64, 0, 0, 0};
  const auto at =
      std::search(b.begin(), b.end(), std::begin(head), std::end(head));
  ASSERT_NE(at, b.end());
  at[8] = 0x01;  // second offset -> 0x40600001
  at[9] = 0x00;
  at[10] = 0x60;
  at[11] = 0x40;
  expect_refusal(decode_error(b, "rle.dcm"), "rle.dcm",
                 "RLE segment offsets outside the fragment");
}

TEST(Dicom, JpegTwoThousandIsRefusedByName) {
  TempDir dir;
  Spec s;
  s.samples = {0, 1, 2, 3, 4, 5};
  auto ff = build(s);
  DcmDataset* ds = ff->getDataset();
  // An encapsulated pixel sequence: empty offset table + one fragment.
  auto* seq = new DcmPixelSequence(DcmTag(DCM_PixelData, EVR_OB));
  seq->insert(new DcmPixelItem(DcmTag(DCM_Item, EVR_OB)));
  auto* frag = new DcmPixelItem(DcmTag(DCM_Item, EVR_OB));
  const Uint8 junk[8] = {0xff, 0x4f, 0xff, 0x51, 0, 0, 0, 0};
  frag->putUint8Array(junk, 8);
  seq->insert(frag);
  auto* pd = new DcmPixelData(DCM_PixelData);
  pd->putOriginalRepresentation(EXS_JPEG2000LosslessOnly, nullptr, seq);
  ds->insert(pd, true);
  const fs::path p = dir / "j2k.dcm";
  ASSERT_TRUE(ff->saveFile(p.c_str(), EXS_JPEG2000LosslessOnly).good());
  const std::string m = decode_error(slurp(p), "j2k.dcm");
  expect_refusal(m, "j2k.dcm", "JPEG 2000");
  EXPECT_TRUE(contains(m, "1.2.840.10008.1.2.4.90")) << m;
}

TEST(Dicom, PixelCapsAreCheckedFromTheHeader) {
  TempDir dir;
  const Spec s = gray(40, 30, [](int) { return 7; });
  const auto b = write(s, dir / "big.dcm");
  cxr::data::DecodeLimits side;
  side.max_side = 32;
  std::string m = decode_error(b, "big.dcm", side);
  EXPECT_TRUE(contains(m,
                       "'big.dcm' is 30 x 40 pixels; the limit is 32 "
                       "pixels per side"))
      << m;
  cxr::data::DecodeLimits area;
  area.max_pixels = 1000;
  m = decode_error(b, "big.dcm", area);
  EXPECT_TRUE(contains(m, "'big.dcm' is 30 x 40")) << m;
  EXPECT_TRUE(contains(m, "megapixels")) << m;
  EXPECT_EQ(cxr::data::decode_gray(b, "big.dcm").pixels.size(0), 40);
}

TEST(Dicom, ListingCountsDicomFilesByExtensionOrMagic) {
  TempDir dir;
  const Spec s = eight_bit({0, 50, 100, 150, 200, 250});
  const auto b = write(s, dir / "a.dcm");
  const std::string bytes(b.begin(), b.end());
  cxr::testing::write_bytes(dir / "IM0001", bytes);
  cxr::testing::write_bytes(dir / "1.2.840.113619.2.55", bytes);
  cxr::testing::write_bytes(dir / "B.DICOM", "anything");
  cxr::testing::write_bytes(dir / "README", "not an image\n");
  cxr::testing::write_bytes(dir / "scan.txt", bytes);  // wrong extension
  EXPECT_TRUE(cxr::data::is_image_file((dir / "a.dcm").string()));
  EXPECT_TRUE(cxr::data::is_image_file((dir / "B.DICOM").string()));
  EXPECT_TRUE(cxr::data::is_image_file((dir / "IM0001").string()));
  EXPECT_TRUE(cxr::data::is_image_file((dir / "1.2.840.113619.2.55").string()));
  EXPECT_FALSE(cxr::data::is_image_file((dir / "README").string()));
  EXPECT_FALSE(cxr::data::is_image_file((dir / "scan.txt").string()));
  EXPECT_FALSE(cxr::data::is_image_file((dir / "missing").string()));
  const auto files = cxr::data::list_image_files({dir.path().string()});
  EXPECT_EQ(files.size(), 4u);
}

TEST(Dicom, PredictScoresADicomAndSkipsABrokenOne) {
  TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");
  cxr::train::train_run(cxr::testing::tiny_run_options(dir.path(), "run"));
  const Spec s = gray(16, 16, [](int i) { return i * 16; });
  const fs::path in = dir / "in";
  fs::create_directories(in);
  const auto good = write(s, in / "good.dcm");
  Spec two = s;
  two.frames = 2;
  two.samples.insert(two.samples.end(), s.samples.begin(), s.samples.end());
  write(two, in / "multi.dcm");
  cxr::testing::write_bytes(in / "cut.dcm",
                            std::string(good.begin(), good.begin() + 300));
  const std::string predict = std::string(CXR_BINARY) + " predict " +
                              (dir / "run").string() + " " + in.string() +
                              " --device cpu 2>&1";
  std::string log;
  EXPECT_EQ(cxr::testing::run_command(predict, &log), 3) << log;
  EXPECT_TRUE(contains(log, "cxr: error: image '" + (in / "cut.dcm").string() +
                                "': a DICOM file, but"))
      << log;
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << log;
  EXPECT_EQ(cxr::testing::run_command(
                std::string(CXR_BINARY) + " predict " + (dir / "run").string() +
                    " " + in.string() + " --device cpu --skip-bad 2>&1",
                &log),
            0)
      << log;
  EXPECT_TRUE(contains(log, (in / "good.dcm").string() + "  ")) << log;
  // The multi-frame notice reaches the user as a flag on that image.
  EXPECT_TRUE(contains(log, "DICOM with 2 frames: only the first is used"))
      << log;
  EXPECT_FALSE(contains(log, "Doe")) << log;
}

#endif  // CXR_HAVE_DCMTK

}  // namespace
