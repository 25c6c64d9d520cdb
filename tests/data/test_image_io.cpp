// Decoding every PNG flavour and refusing malformed files with clear errors.
#include <png.h>
// jpeglib.h needs FILE and size_t first.
#include <jpeglib.h>
#include <cstdio>

#include "cxr/common/error.h"
#include "cxr/data/image_io.h"
#include "jpeg_writer.h"
#include "test_util.h"

namespace {

using cxr::testing::TempDir;
using cxr::testing::write_bytes;

/// Writes a PNG with libpng: any colour type / bit depth. `rows` holds the
/// raw samples of each row (big-endian for 16-bit).
void write_png_raw(const std::string& path,
                   int w,
                   int h,
                   int color_type,
                   int bit_depth,
                   const std::vector<std::vector<uint8_t>>& rows,
                   const std::vector<png_color>& palette = {}) {
  FILE* fp = std::fopen(path.c_str(), "wb");
  ASSERT_NE(fp, nullptr);
  png_structp png =
      png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  png_init_io(png, fp);
  png_set_IHDR(png, info, w, h, bit_depth, color_type, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (!palette.empty()) {
    png_set_PLTE(png, info, palette.data(), static_cast<int>(palette.size()));
  }
  png_write_info(png, info);
  for (const auto& r : rows) png_write_row(png, r.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  std::fclose(fp);
}

using cxr::testing::read_text;

void expect_data_error(const std::string& path, const std::string& needle) {
  try {
    cxr::data::read_gray(path);
    FAIL() << "expected DataError for " << path;
  } catch (const cxr::DataError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find(path), std::string::npos) << m;
    EXPECT_NE(m.find(needle), std::string::npos) << m;
  }
}

TEST(ImageIo, Gray8RoundTripThroughWritePng) {
  TempDir dir;
  auto img = torch::arange(0, 64, torch::kFloat32).reshape({8, 8}) / 63.0f;
  auto p = (dir / "g.png").string();
  cxr::data::write_png(p, img);
  auto g = cxr::data::read_gray(p);
  EXPECT_EQ(g.info.format, "png");
  EXPECT_EQ(g.info.bit_depth, 8);
  EXPECT_EQ(g.info.color, "gray");
  ASSERT_EQ(g.pixels.sizes(), torch::IntArrayRef({8, 8}));
  EXPECT_TRUE(torch::allclose(g.pixels, img, 0, 1.0 / 255.0 + 1e-6));
}

TEST(ImageIo, Gray16KeepsPrecision) {
  TempDir dir;
  std::vector<std::vector<uint8_t>> rows(2, std::vector<uint8_t>(4));
  // Two pixels per row: 0x0000, 0xFFFF / 0x8000, 0x0101.
  rows[0] = {0x00, 0x00, 0xff, 0xff};
  rows[1] = {0x80, 0x00, 0x01, 0x01};
  auto p = (dir / "g16.png").string();
  write_png_raw(p, 2, 2, PNG_COLOR_TYPE_GRAY, 16, rows);
  auto g = cxr::data::read_gray(p);
  EXPECT_EQ(g.info.bit_depth, 16);
  EXPECT_NEAR(g.pixels[0][1].item<float>(), 1.0f, 1e-6);
  EXPECT_NEAR(g.pixels[1][0].item<float>(), 32768.0f / 65535.0f, 1e-6);
  EXPECT_NEAR(g.pixels[1][1].item<float>(), 257.0f / 65535.0f, 1e-6);
}

TEST(ImageIo, RgbRgbaGrayAlphaAndPaletteBecomeGray) {
  TempDir dir;
  // Pure white everywhere in each colour type -> gray 1.0.
  auto rgb = (dir / "rgb.png").string();
  write_png_raw(rgb, 1, 1, PNG_COLOR_TYPE_RGB, 8, {{255, 255, 255}});
  auto rgba = (dir / "rgba.png").string();
  write_png_raw(rgba, 1, 1, PNG_COLOR_TYPE_RGBA, 8, {{255, 255, 255, 255}});
  auto ga = (dir / "ga.png").string();
  write_png_raw(ga, 1, 1, PNG_COLOR_TYPE_GRAY_ALPHA, 8, {{255, 128}});
  auto pal = (dir / "pal.png").string();
  write_png_raw(pal, 2, 1, PNG_COLOR_TYPE_PALETTE, 8, {{0, 1}},
                {{0, 0, 0}, {255, 255, 255}});
  auto g1 = (dir / "g1.png").string();
  write_png_raw(g1, 8, 1, PNG_COLOR_TYPE_GRAY, 1, {{0xF0}});
  EXPECT_NEAR(cxr::data::read_gray(rgb).pixels.item<float>(), 1.0f, 1e-2);
  EXPECT_NEAR(cxr::data::read_gray(rgba).pixels.item<float>(), 1.0f, 1e-2);
  EXPECT_NEAR(cxr::data::read_gray(ga).pixels.item<float>(), 1.0f, 1e-2);
  auto p = cxr::data::read_gray(pal);
  EXPECT_EQ(p.info.color, "palette");
  EXPECT_NEAR(p.pixels[0][0].item<float>(), 0.0f, 1e-2);
  EXPECT_NEAR(p.pixels[0][1].item<float>(), 1.0f, 1e-2);
  auto b = cxr::data::read_gray(g1);
  EXPECT_EQ(b.info.bit_depth, 1);
  EXPECT_NEAR(b.pixels[0][0].item<float>(), 1.0f, 1e-6);
  EXPECT_NEAR(b.pixels[0][7].item<float>(), 0.0f, 1e-6);
  EXPECT_EQ(cxr::data::read_gray(rgba).info.color, "rgba");
  EXPECT_EQ(cxr::data::read_gray(ga).info.color, "gray+alpha");
}

TEST(ImageIo, MalformedFilesGiveOneLineErrorsNamingTheFile) {
  TempDir dir;
  auto empty = (dir / "empty.png").string();
  write_bytes(empty, "");
  expect_data_error(empty, "empty");

  auto text = (dir / "text.png").string();
  write_bytes(text, "this is not an image at all, just text\n");
  expect_data_error(text, "not a readable image");

  auto good = (dir / "good.png").string();
  cxr::data::write_png(good, torch::rand({64, 64}));
  std::string bytes = read_text(good);
  auto trunc = (dir / "trunc.png").string();
  write_bytes(trunc, bytes.substr(0, bytes.size() / 2));
  expect_data_error(trunc, "corrupt or truncated");

  auto tiny = (dir / "tiny.png").string();
  write_bytes(tiny, bytes.substr(0, 20));
  expect_data_error(tiny, "truncated PNG header");

  // A valid-looking PNG header claiming 100000 x 100000 pixels.
  std::string huge = bytes.substr(0, 33);
  auto put32 = [&](size_t off, uint32_t v) {
    huge[off] = static_cast<char>(v >> 24);
    huge[off + 1] = static_cast<char>(v >> 16);
    huge[off + 2] = static_cast<char>(v >> 8);
    huge[off + 3] = static_cast<char>(v);
  };
  put32(16, 100000);
  put32(20, 100000);
  auto huge_path = (dir / "huge.png").string();
  write_bytes(huge_path, huge + bytes.substr(33));
  // Reported as the pixel count it is, from the header, before decoding.
  expect_data_error(huge_path, "100000 x 100000 = ");
  expect_data_error(huge_path, "megapixels; the limit is 64 megapixels");

  expect_data_error((dir / "missing.png").string(), "cannot open");
}

TEST(ImageIo, JpegDecodesAndCorruptJpegIsRefused) {
  TempDir dir;
  // Encode a gray ramp with libjpeg at high quality.
  const int w = 32, h = 16;
  std::vector<uint8_t> px(static_cast<size_t>(w * h));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      px[static_cast<size_t>(y * w + x)] = static_cast<uint8_t>(x * 8);
  auto path = (dir / "ramp.jpg").string();
  write_bytes(path, cxr::testing::jpeg_of(w, h, 1, JCS_GRAYSCALE, px, 98));
  auto g = cxr::data::read_gray(path);
  EXPECT_EQ(g.info.format, "jpeg");
  EXPECT_EQ(g.info.width, w);
  EXPECT_EQ(g.info.height, h);
  EXPECT_NEAR(g.pixels[8][16].item<float>(), 128.0f / 255.0f, 0.03f);

  auto fake = (dir / "x.jpg").string();
  write_bytes(fake, std::string("\xff\xd8\xff\xe0", 4) + "garbage");
  expect_data_error(fake, "x.jpg");
}

TEST(ImageIo, ResizeAntialiasesAndKeepsRank) {
  // One bright column (x = 29) in a dark 64x64 image, shrunk 8x. Plain
  // bilinear samples only columns 8i+3 and 8i+4 (27 and 28 here), so it
  // drops the line entirely; an antialiased resize spreads its energy over
  // the neighbouring output columns and keeps the image's mean (1/64). (A
  // period-2 checkerboard cannot tell them apart: both give 0.5.)
  auto line = torch::zeros({64, 64});
  line.select(1, 29).fill_(1.0f);
  namespace F = torch::nn::functional;
  const auto plain = F::interpolate(line.view({1, 1, 64, 64}),
                                    F::InterpolateFuncOptions()
                                        .size(std::vector<int64_t>{8, 8})
                                        .mode(torch::kBilinear)
                                        .align_corners(false));
  ASSERT_EQ(plain.max().item<float>(), 0.0f);  // the line is lost
  auto small = cxr::data::resize_square(line, 8);
  ASSERT_EQ(small.dim(), 2);
  EXPECT_EQ(small.size(0), 8);
  EXPECT_NEAR(small.mean().item<float>(), 1.0f / 64, 1e-4f);
  // Every row alike, the line's energy in output columns 3 (mostly) and 4.
  EXPECT_GT(small.select(1, 3).min().item<float>(), 0.05f);
  EXPECT_GT(small.select(1, 4).min().item<float>(), 0.0f);
  EXPECT_LT(small.select(1, 4).max().item<float>(),
            small.select(1, 3).min().item<float>());
  auto batch = cxr::data::resize_square(torch::rand({2, 1, 32, 48}), 16);
  EXPECT_EQ(batch.sizes(), torch::IntArrayRef({2, 1, 16, 16}));
  EXPECT_THROW(cxr::data::resize_square(line, 0), cxr::ConfigError);
}

}  // namespace
