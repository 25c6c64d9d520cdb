// The .npy writer of `cxr explain --save-maps`: header and data read back
// byte by byte, as numpy.load would.
#include <cstring>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/explain/explain.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;

/// Header dict and float data of a .npy file (format 1.0 only).
struct Npy {
  std::string dict;
  std::vector<float> data;
};

Npy read_npy(const fs::path& path) {
  const std::string bytes = cxr::read_text(path);
  EXPECT_GE(bytes.size(), 10u);
  EXPECT_EQ(bytes.substr(0, 6), "\x93NUMPY");
  EXPECT_EQ(bytes[6], '\x01');  // major version
  EXPECT_EQ(bytes[7], '\x00');  // minor version
  const size_t len =
      static_cast<unsigned char>(bytes[8]) |
      (static_cast<size_t>(static_cast<unsigned char>(bytes[9])) << 8);
  EXPECT_EQ((10 + len) % 64, 0u) << "data not aligned";
  Npy out;
  out.dict = bytes.substr(10, len);
  EXPECT_EQ(out.dict.back(), '\n');
  const size_t n = (bytes.size() - 10 - len) / 4;
  EXPECT_EQ((bytes.size() - 10 - len) % 4, 0u);
  for (size_t i = 0; i < n; ++i) {
    // Little-endian float32, assembled byte by byte.
    uint32_t bits = 0;
    for (int b = 0; b < 4; ++b) {
      bits |= static_cast<uint32_t>(
                  static_cast<unsigned char>(bytes[10 + len + 4 * i + b]))
              << (8 * b);
    }
    float v;
    std::memcpy(&v, &bits, sizeof v);
    out.data.push_back(v);
  }
  return out;
}

TEST(ExplainNpy, HeaderAndDataReadBack) {
  cxr::testing::TempDir dir;
  // Not square and not contiguous: rows must come out in C order.
  auto m = torch::arange(15, torch::kFloat32).div(7.0f).view({5, 3}).t();
  const auto path = dir / "m.npy";
  cxr::explain::write_npy(path.string(), m);
  const auto npy = read_npy(path);
  EXPECT_NE(npy.dict.find("'descr': '<f4'"), std::string::npos) << npy.dict;
  EXPECT_NE(npy.dict.find("'fortran_order': False"), std::string::npos);
  EXPECT_NE(npy.dict.find("'shape': (3, 5)"), std::string::npos) << npy.dict;
  ASSERT_EQ(npy.data.size(), 15u);
  for (int64_t r = 0; r < 3; ++r) {
    for (int64_t c = 0; c < 5; ++c) {
      EXPECT_EQ(npy.data[static_cast<size_t>(r * 5 + c)], m[r][c].item<float>())
          << r << "," << c;
    }
  }
  EXPECT_THROW(cxr::explain::write_npy((dir / "x.npy").string(),
                                       torch::zeros({1, 2, 2})),
               cxr::ConfigError);
  // A folder in the way: IoError naming it.
  EXPECT_THROW(cxr::explain::write_npy(dir.path().string(), m), cxr::IoError);
}

}  // namespace
