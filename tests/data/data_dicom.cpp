// The real DICOM files in ../shared/data/dicom (README.md there says what
// each must show): every file decodes or is refused with one line, the
// MONOCHROME1 twin is the photometric inverse, the MR transfer syntaxes give
// the same pixels, and the CLI predicts on a DICOM and refuses a truncated
// one with exit 3. Skips when the folder is absent.
#include <algorithm>
#include <chrono>
#include <fstream>

#include "cxr/common/error.h"
#include "cxr/data/image_io.h"
#include "cxr/train/run.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;

fs::path dicom_dir() {
  return fs::path(cxr::testing::shared_dir()) / "data" / "dicom";
}

#define NEED_DICOM_FILES()                                                  \
  do {                                                                      \
    if (!cxr::data::dicom_supported()) {                                    \
      GTEST_SKIP() << "cxr was built without DCMTK";                        \
    }                                                                       \
    if (!fs::is_regular_file(dicom_dir() / "siim-cxr-jpeg-baseline.dcm")) { \
      GTEST_SKIP() << dicom_dir() << " is absent";                          \
    }                                                                       \
  } while (0)

bool contains(const std::string& s, const std::string& needle) {
  return s.find(needle) != std::string::npos;
}

cxr::data::GrayImage read(const std::string& rel) {
  return cxr::data::read_gray((dicom_dir() / rel).string());
}

std::string refusal(const std::string& rel) {
  return cxr::testing::error_of<cxr::DataError>([&] { read(rel); });
}

TEST(DicomData, ChestRadiographsDecodeAtFullSize) {
  NEED_DICOM_FILES();
  for (const char* f :
       {"siim-cxr-jpeg-baseline.dcm", "siim-cxr-monochrome1.dcm",
        "nih-cxr-uncompressed.dcm"}) {
    const auto g = read(f);
    EXPECT_EQ(g.info.format, "dicom") << f;
    EXPECT_EQ(g.info.width, 1024) << f;
    EXPECT_EQ(g.info.height, 1024) << f;
    EXPECT_EQ(g.info.bit_depth, 8) << f;
    EXPECT_EQ(g.info.color, "gray") << f;
    // A radiograph, not a blank: real contrast.
    EXPECT_GT(g.pixels.std().item<float>(), 0.1f) << f;
  }
  const auto a = read("nhsx-sample.dcm");
  EXPECT_EQ(a.info.width, 512);
  EXPECT_EQ(a.info.height, 512);
}

TEST(DicomData, MonochromeOneTwinIsThePhotometricInverse) {
  NEED_DICOM_FILES();
  const auto two = read("siim-cxr-jpeg-baseline.dcm").pixels;
  const auto one = read("siim-cxr-monochrome1.dcm").pixels;
  const auto diff = (one - (1.0f - two)).abs();
  EXPECT_LT(diff.mean().item<float>(), 1.0f / 255) << diff.mean();
  EXPECT_LE(diff.max().item<float>(), 2.0f / 255) << diff.max();
  // The lungs (dark in MONOCHROME2) are dark in both after decoding: the
  // centre of the left and right lung fields versus the spine.
  EXPECT_LT(one.mean().item<float>() + two.mean().item<float>(), 1.5f);
}

TEST(DicomData, MrTransferSyntaxesGiveTheSamePixels) {
  NEED_DICOM_FILES();
  const auto ref = read("pydicom/MR_small.dcm");
  EXPECT_EQ(ref.info.width, 64);
  EXPECT_EQ(ref.info.bit_depth, 16);
  for (const char* f :
       {"pydicom/MR_small_bigendian.dcm", "pydicom/MR_small_RLE.dcm",
        "pydicom/MR_small_jpeg_ls_lossless.dcm"}) {
    const auto g = read(f);
    EXPECT_TRUE(torch::equal(g.pixels, ref.pixels)) << f;
    EXPECT_EQ(g.pixel_hash, ref.pixel_hash) << f;
  }
}

TEST(DicomData, OtherPydicomFilesDecodeOrAreRefusedAsTheReadmeSays) {
  NEED_DICOM_FILES();
  const auto ct = read("pydicom/CT_small.dcm");
  EXPECT_EQ(ct.info.width, 128);
  EXPECT_GT(ct.pixels.std().item<float>(), 0.05f);
  const auto nm = read("pydicom/JPEG-lossy.dcm");
  EXPECT_EQ(nm.info.width, 256);
  EXPECT_EQ(nm.info.height, 1024);
  EXPECT_EQ(nm.info.bit_depth, 12);
  const auto rgb = read("pydicom/SC_rgb_jpeg_dcmtk.dcm");
  EXPECT_EQ(rgb.info.color, "rgb");
  EXPECT_GT(rgb.info.chroma, 0.04);  // the input check calls it colour
  const auto two = read("pydicom/SC_rgb_rle_16bit_2frame.dcm");
  EXPECT_EQ(two.info.width, 100);
  EXPECT_GT(two.info.chroma, 0.04);
  ASSERT_EQ(two.info.notes.size(), 1u);
  EXPECT_TRUE(contains(two.info.notes[0], "2 frames")) << two.info.notes[0];

  std::string m = refusal("pydicom/MR_small_jp2klossless.dcm");
  EXPECT_TRUE(contains(m,
                       "MR_small_jp2klossless.dcm': a DICOM file, but its "
                       "transfer syntax JPEG 2000"))
      << m;
  m = refusal("pydicom/MR_truncated.dcm");
  EXPECT_TRUE(contains(m,
                       "MR_truncated.dcm': a DICOM file, but corrupt or "
                       "truncated"))
      << m;
  // badVR.dcm: an invalid VR in the header; DCMTK reads past it (the RT dose
  // grid is 10x10), or it is a one-line refusal. Either way no crash.
  try {
    const auto g = read("pydicom/badVR.dcm");
    EXPECT_EQ(g.info.format, "dicom");
  } catch (const cxr::DataError& e) {
    EXPECT_TRUE(contains(e.what(), "badVR.dcm': a DICOM file, but"))
        << e.what();
  }
}

TEST(DicomData, PredictReadsADicomAndRefusesATruncatedOne) {
  NEED_DICOM_FILES();
  cxr::testing::TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");
  cxr::train::train_run(cxr::testing::tiny_run_options(dir.path(), "run"));
  const std::string predict = std::string(CXR_BINARY) + " predict " +
                              (dir / "run").string() + " --device cpu ";
  const std::string good =
      (dicom_dir() / "siim-cxr-jpeg-baseline.dcm").string();
  const std::string cut =
      (dicom_dir() / "pydicom" / "MR_truncated.dcm").string();
  std::string log;
  EXPECT_EQ(cxr::testing::run_command(predict + good + " 2>&1", &log), 0)
      << log;
  EXPECT_TRUE(contains(log, good)) << log;
  EXPECT_EQ(cxr::testing::run_command(predict + cut + " 2>&1", &log), 3) << log;
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << log;
  EXPECT_TRUE(contains(log, "cxr: error: image '" + cut +
                                "': a DICOM file, but corrupt or truncated"))
      << log;
  // A folder holding it: --skip-bad predicts the rest.
  const fs::path in = dir / "in";
  fs::create_directories(in);
  fs::copy_file(cut, in / "MR_truncated.dcm");
  fs::copy_file(dicom_dir() / "pydicom" / "MR_small.dcm", in / "MR_small.dcm");
  EXPECT_EQ(cxr::testing::run_command(
                predict + in.string() + " --skip-bad 2>&1", &log),
            0)
      << log;
  EXPECT_TRUE(contains(log, (in / "MR_small.dcm").string())) << log;
  EXPECT_TRUE(contains(log, "MR_truncated.dcm")) << log;
}

/// Not a test: decode times for the report (run with
/// --gtest_also_run_disabled_tests --gtest_filter='*DecodeTimes*').
TEST(DicomData, DISABLED_DecodeTimes) {
  NEED_DICOM_FILES();
  using clock = std::chrono::steady_clock;
  auto median_ms = [](const std::vector<unsigned char>& b,
                      const std::string& name) {
    std::vector<double> t;
    for (int i = 0; i < 20; ++i) {
      const auto t0 = clock::now();
      cxr::data::decode_gray(b, name);
      t.push_back(
          std::chrono::duration<double, std::milli>(clock::now() - t0).count());
    }
    std::sort(t.begin(), t.end());
    return (t[9] + t[10]) / 2;
  };
  for (const char* f :
       {"nih-cxr-uncompressed.dcm", "siim-cxr-jpeg-baseline.dcm"}) {
    std::ifstream in(dicom_dir() / f, std::ios::binary);
    const std::vector<unsigned char> dcm{std::istreambuf_iterator<char>(in),
                                         std::istreambuf_iterator<char>()};
    const auto png =
        cxr::data::encode_png(cxr::data::decode_gray(dcm, f).pixels);
    std::printf(
        "%s: DICOM %.2f ms (%zu bytes), same pixels as PNG %.2f ms "
        "(%zu bytes)\n",
        f, median_ms(dcm, f), dcm.size(), median_ms(png, "x.png"), png.size());
  }
}

}  // namespace
