// base64 against RFC 4648's test vectors, every padding case, and bytes
// above 127 (PNG data is binary).
#include <gtest/gtest.h>

#include "cxr/common/base64.h"

namespace cxr {
namespace {

TEST(Base64, Rfc4648Vectors) {
  EXPECT_EQ(base64(""), "");
  EXPECT_EQ(base64("f"), "Zg==");
  EXPECT_EQ(base64("fo"), "Zm8=");
  EXPECT_EQ(base64("foo"), "Zm9v");
  EXPECT_EQ(base64("foob"), "Zm9vYg==");
  EXPECT_EQ(base64("fooba"), "Zm9vYmE=");
  EXPECT_EQ(base64("foobar"), "Zm9vYmFy");
}

TEST(Base64, BinaryBytesAndBothOverloads) {
  const std::vector<unsigned char> png = {0x89, 'P', 'N', 'G', 0xff, 0x00};
  EXPECT_EQ(base64(png), "iVBOR/8A");
  EXPECT_EQ(base64(std::string_view(reinterpret_cast<const char*>(png.data()),
                                    png.size())),
            "iVBOR/8A");
  EXPECT_EQ(base64(std::vector<unsigned char>{0xfb, 0xff}), "+/8=");
}

}  // namespace
}  // namespace cxr
