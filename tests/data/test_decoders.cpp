// The decoders (libpng, libjpeg-turbo, stb_image for BMP only) on damaged
// and hostile files: each is one DataError naming the file and what is
// wrong, from the library and through the CLI (exit 3, one line).
#include <cstdio>  // FILE and size_t, which jpeglib.h needs first

#include <jpeglib.h>
#include <png.h>
#include <zlib.h>

#include "cxr/common/error.h"
#include "cxr/data/image_io.h"
#include "jpeg_writer.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using cxr::testing::TempDir;
using cxr::testing::write_bytes;

std::string png_of(const torch::Tensor& image) {
  const auto b = cxr::data::encode_png(image);
  return {b.begin(), b.end()};
}

uint32_t get32(const std::string& s, size_t at) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data() + at);
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) |
         (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
          static_cast<char>(v >> 8), static_cast<char>(v)};
}

/// A PNG chunk with its length and (correct) CRC.
std::string chunk(const std::string& type, const std::string& data) {
  const std::string body = type + data;
  const auto crc = static_cast<uint32_t>(
      crc32(0, reinterpret_cast<const Bytef*>(body.data()),
            static_cast<uInt>(body.size())));
  return be32(static_cast<uint32_t>(data.size())) + body + be32(crc);
}

/// Offset of the first chunk of `type` (its length field); npos if none.
size_t find_chunk(const std::string& png, const std::string& type) {
  for (size_t at = 8; at + 12 <= png.size();) {
    const uint32_t len = get32(png, at);
    if (png.compare(at + 4, 4, type) == 0) return at;
    at += 12 + len;
  }
  return std::string::npos;
}

/// A PNG whose IHDR claims w x h and that holds no image data: the limits
/// must be checked from the header, before anything is allocated.
std::string png_header_only(uint32_t w, uint32_t h) {
  const std::string ihdr =
      be32(w) + be32(h) + std::string("\x08\x00\x00\x00\x00", 5);
  return std::string("\x89PNG\r\n\x1a\n", 8) + chunk("IHDR", ihdr) +
         chunk("IEND", "");
}

std::string gray_noise_jpeg(int w, int h) {
  std::vector<uint8_t> px(size_t(w) * size_t(h));
  uint32_t s = 12345;
  for (auto& v : px) {
    s = s * 1664525u + 1013904223u;
    v = static_cast<uint8_t>(s >> 24);
  }
  return cxr::testing::jpeg_of(w, h, 1, JCS_GRAYSCALE, px);
}

/// The DataError message of decoding `path`, or "" (and a failure) if none.
std::string error_of(const std::string& path,
                     const cxr::data::DecodeLimits& limits = {}) {
  try {
    cxr::data::read_gray(path, limits);
  } catch (const cxr::DataError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << path << ": not a DataError: " << e.what();
    return e.what();
  }
  ADD_FAILURE() << "expected a DataError for " << path;
  return "";
}

using cxr::testing::contains;

TEST(Decoders, PngWithAWrongCrcIsRefused) {
  TempDir dir;
  const std::string good = png_of(torch::rand({16, 16}));
  const size_t idat = find_chunk(good, "IDAT");
  ASSERT_NE(idat, std::string::npos);
  std::string bad = good;
  bad[idat + 8 + get32(good, idat) + 3] ^= 0x01;  // last CRC byte of IDAT
  const auto p = (dir / "crc.png").string();
  write_bytes(p, bad);
  const std::string m = error_of(p);
  EXPECT_TRUE(contains(m, p)) << m;
  EXPECT_TRUE(contains(m, "IDAT: CRC error")) << m;
  EXPECT_TRUE(contains(m, "checksum")) << m;
}

TEST(Decoders, AncillaryChunkWithAWrongCrcIsAnErrorToo) {
  TempDir dir;
  const std::string good = png_of(torch::rand({8, 8}));
  const size_t idat = find_chunk(good, "IDAT");
  ASSERT_NE(idat, std::string::npos);
  const std::string text = chunk("tEXt", std::string("Comment\0hello", 13));
  // With a correct CRC the extra chunk is fine...
  const auto ok = (dir / "text-ok.png").string();
  write_bytes(ok, good.substr(0, idat) + text + good.substr(idat));
  EXPECT_EQ(cxr::data::read_gray(ok).info.width, 8);
  // ...with a damaged one libpng's default would drop it with a warning.
  std::string bad_text = text;
  bad_text.back() ^= 0x55;
  const auto bad = (dir / "text-bad.png").string();
  write_bytes(bad, good.substr(0, idat) + bad_text + good.substr(idat));
  const std::string m = error_of(bad);
  EXPECT_TRUE(contains(m, bad)) << m;
  EXPECT_TRUE(contains(m, "tEXt: CRC error")) << m;
}

/// Writes a one-row palette PNG of `width` pixels at `bit_depth` bits per
/// index with libpng itself; `row` holds the packed indices. `check_index`
/// false lets libpng write indices past the palette.
void write_palette_png(const std::string& path,
                       int width,
                       int bit_depth,
                       std::vector<png_color> palette,
                       std::vector<uint8_t> row,
                       bool check_index = true) {
  FILE* fp = std::fopen(path.c_str(), "wb");
  ASSERT_NE(fp, nullptr);
  png_structp png =
      png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (!check_index) png_set_check_for_invalid_index(png, 0);
  png_init_io(png, fp);
  png_set_IHDR(png, info, static_cast<png_uint_32>(width), 1, bit_depth,
               PNG_COLOR_TYPE_PALETTE, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_set_PLTE(png, info, palette.data(), static_cast<int>(palette.size()));
  png_write_info(png, info);
  png_write_row(png, row.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  std::fclose(fp);
}

TEST(Decoders, PaletteIndexOutOfRangeIsRefused) {
  TempDir dir;
  const auto p = (dir / "pal.png").string();
  // 7: past the 2 colours (libpng's own check is off to write it).
  write_palette_png(p, 4, 8, {{0, 0, 0}, {255, 255, 255}}, {0, 1, 7, 1},
                    /*check_index=*/false);
  const std::string m = error_of(p);
  EXPECT_TRUE(contains(m, p)) << m;
  EXPECT_TRUE(contains(m, "palette index 7 is out of range")) << m;
}

TEST(Decoders, PngWithoutIendIsRefused) {
  TempDir dir;
  const std::string good = png_of(torch::rand({8, 8}));
  const size_t iend = find_chunk(good, "IEND");
  ASSERT_EQ(iend, good.size() - 12);
  const auto p = (dir / "no-iend.png").string();
  write_bytes(p, good.substr(0, iend));
  const std::string m = error_of(p);
  EXPECT_TRUE(contains(m, p)) << m;
  EXPECT_TRUE(contains(m, "ends before its IEND chunk")) << m;
}

TEST(Decoders, TruncatedJpegSaysWhatIsWrong) {
  TempDir dir;
  const std::string good = gray_noise_jpeg(64, 64);
  const auto full = (dir / "full.jpg").string();
  write_bytes(full, good);
  EXPECT_EQ(cxr::data::read_gray(full).info.width, 64);
  // Cut in the middle of the scan, and cut just the end marker: libjpeg pads
  // both with gray and only warns; both must be errors.
  for (size_t keep : {good.size() / 2, good.size() - 2}) {
    const auto p = (dir / ("cut" + std::to_string(keep) + ".jpg")).string();
    write_bytes(p, good.substr(0, keep));
    const std::string m = error_of(p);
    EXPECT_TRUE(contains(m, p)) << m;
    EXPECT_TRUE(contains(m, "corrupt or truncated JPEG")) << m;
    EXPECT_TRUE(contains(m, "Premature end of JPEG file")) << m;
    EXPECT_FALSE(contains(m, "()")) << m;
  }
}

TEST(Decoders, EmptyTextAndOtherFormatsAreNamed) {
  TempDir dir;
  struct Case {
    std::string file, bytes, needle;
  };
  const std::vector<Case> cases = {
      {"empty.png", "", "file is empty (0 bytes)"},
      {"notes.png", "patient 17: see report\nsecond line\n",
       "the file is a text file (starts \"patient 17: see report\")"},
      {"bm.png", "BMW is a car, not a bitmap\n", "a text file"},
      {"anim.png", "GIF89a\x01\x00\x01\x00", "a GIF image"},
      {"scan.png", std::string(128, '\0') + "DICM" + std::string(64, '\0'),
       "a DICOM file"},
      {"blob.jpg", std::string("\x01\x02\x03\x04\x00", 5),
       "unknown format (first bytes 01 02 03 04)"},
  };
  for (const auto& c : cases) {
    const auto p = (dir / c.file).string();
    write_bytes(p, c.bytes);
    const std::string m = error_of(p);
    EXPECT_TRUE(contains(m, p)) << m;
    EXPECT_TRUE(contains(m, c.needle)) << m;
  }
  // A .png that is really a JPEG decodes by its content.
  const auto disguised = (dir / "photo.png").string();
  write_bytes(disguised, gray_noise_jpeg(16, 8));
  const auto g = cxr::data::read_gray(disguised);
  EXPECT_EQ(g.info.format, "jpeg");
  EXPECT_EQ(g.info.width, 16);
}

TEST(Decoders, PixelCapIsReportedInMegapixelsFromTheHeader) {
  TempDir dir;
  // 10000 x 10000: each side is under 16384 but the picture is 95.4 MiP.
  const auto big = (dir / "big.png").string();
  write_bytes(big, png_header_only(10000, 10000));
  std::string m = error_of(big);
  EXPECT_TRUE(contains(m, "'" + big +
                              "' is 10000 x 10000 = 95.4 megapixels; "
                              "the limit is 64 megapixels"))
      << m;
  EXPECT_FALSE(contains(m, "per side")) << m;
  // A long thin strip is over the side limit only.
  const auto strip = (dir / "strip.png").string();
  write_bytes(strip, png_header_only(20000, 2));
  m = error_of(strip);
  EXPECT_TRUE(contains(m,
                       "is 20000 x 2 pixels; the limit is 16384 pixels "
                       "per side"))
      << m;
  // A JPEG claiming 10000 x 10000 in its SOF, with 8 x 8 pixels of data.
  std::string jpg = gray_noise_jpeg(8, 8);
  const size_t sof = jpg.find("\xff\xc0");
  ASSERT_NE(sof, std::string::npos);
  for (size_t at : {sof + 5, sof + 7}) {  // height, width (big-endian 16)
    jpg[at] = static_cast<char>(10000 >> 8);
    jpg[at + 1] = static_cast<char>(10000 & 0xff);
  }
  const auto jbig = (dir / "big.jpg").string();
  write_bytes(jbig, jpg);
  m = error_of(jbig);
  EXPECT_TRUE(contains(m, "is 10000 x 10000 = 95.4 megapixels")) << m;
  // Custom limits are the ones reported.
  cxr::data::DecodeLimits small;
  small.max_pixels = 32LL * 1024 * 1024;
  const auto mid = (dir / "mid.png").string();
  write_bytes(mid, png_header_only(6000, 6000));
  m = error_of(mid, small);
  EXPECT_TRUE(contains(m, "34.3 megapixels; the limit is 32 megapixels")) << m;
}

TEST(Decoders, InterlacedSixteenBitColourAndPaletteDecode) {
  TempDir dir;
  // Adam7 interlaced gray equals the same picture stored plainly.
  const int w = 13, h = 7;
  std::vector<uint8_t> px(size_t(w) * h);
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(i * 5);
  auto write = [&](const std::string& path, int interlace, int color_type,
                   int depth, const std::vector<uint8_t>& data, int bpp) {
    FILE* fp = std::fopen(path.c_str(), "wb");
    ASSERT_NE(fp, nullptr);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr,
                                              nullptr, nullptr);
    png_infop info = png_create_info_struct(png);
    png_init_io(png, fp);
    png_set_IHDR(png, info, w, h, depth, color_type, interlace,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    std::vector<png_bytep> rows(h);
    for (int y = 0; y < h; ++y) {
      rows[y] = const_cast<uint8_t*>(data.data()) + size_t(y) * w * bpp;
    }
    png_write_image(png, rows.data());
    png_write_end(png, nullptr);
    png_destroy_write_struct(&png, &info);
    std::fclose(fp);
  };
  const auto plain = (dir / "plain.png").string();
  const auto adam7 = (dir / "adam7.png").string();
  write(plain, PNG_INTERLACE_NONE, PNG_COLOR_TYPE_GRAY, 8, px, 1);
  write(adam7, PNG_INTERLACE_ADAM7, PNG_COLOR_TYPE_GRAY, 8, px, 1);
  const auto a = cxr::data::read_gray(plain);
  const auto b = cxr::data::read_gray(adam7);
  EXPECT_TRUE(torch::equal(a.pixels, b.pixels));
  EXPECT_EQ(a.pixel_hash, b.pixel_hash);
  EXPECT_NEAR(a.pixels[1][0].item<float>(), 65.0f / 255.0f, 1e-6);

  // 16-bit RGB, big-endian samples: pure red 0xFFFF.
  std::vector<uint8_t> red16(size_t(w) * h * 6, 0);
  for (size_t i = 0; i < size_t(w) * h; ++i)
    red16[i * 6] = red16[i * 6 + 1] = 0xff;
  const auto r16 = (dir / "red16.png").string();
  write(r16, PNG_INTERLACE_NONE, PNG_COLOR_TYPE_RGB, 16, red16, 6);
  const auto r = cxr::data::read_gray(r16);
  EXPECT_EQ(r.info.bit_depth, 16);
  EXPECT_NEAR(r.info.chroma, 1.0, 1e-12);
  // stb's weights on 16 bits: (65535 * 77) >> 8 = 19711.
  EXPECT_NEAR(r.pixels[0][0].item<float>(), 19711.0f / 65535.0f, 1e-6);
  const torch::Tensor rgb = cxr::data::read_rgb(r16);
  ASSERT_EQ(rgb.sizes(), torch::IntArrayRef({3, h, w}));
  EXPECT_NEAR(rgb[0].min().item<float>(), 1.0f, 1e-6);
  EXPECT_NEAR(rgb[1].max().item<float>(), 0.0f, 1e-6);
}

TEST(Decoders, ReadRgbOfPaletteGrayJpegAndCmykJpeg) {
  TempDir dir;
  const auto pal = (dir / "pal.png").string();
  // 1-bit indices 0, 1 (0x40) into red and blue.
  write_palette_png(pal, 2, 1, {{255, 0, 0}, {0, 0, 255}}, {0x40});
  const torch::Tensor p = cxr::data::read_rgb(pal);
  EXPECT_FLOAT_EQ(p[0][0][0].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(p[2][0][0].item<float>(), 0.0f);
  EXPECT_FLOAT_EQ(p[2][0][1].item<float>(), 1.0f);
  const auto g = cxr::data::read_gray(pal);
  EXPECT_EQ(g.info.color, "palette");
  EXPECT_NEAR(g.pixels[0][0].item<float>(), 76.0f / 255.0f, 1e-6);
  EXPECT_NEAR(g.pixels[0][1].item<float>(), 28.0f / 255.0f, 1e-6);

  const auto gj = (dir / "gray.jpg").string();
  write_bytes(gj, gray_noise_jpeg(8, 8));
  const torch::Tensor gr = cxr::data::read_rgb(gj);
  EXPECT_TRUE(torch::equal(gr[0], gr[1]) && torch::equal(gr[1], gr[2]));
  EXPECT_TRUE(torch::allclose(gr[0], cxr::data::read_gray(gj).pixels));

  // CMYK as libjpeg writes it (Adobe marker): C = K = 255, M = Y = 0 is red
  // under the inverted-CMYK rule R = C * K / 255.
  std::vector<uint8_t> cmyk(16 * 16 * 4);
  for (size_t i = 0; i < 16 * 16; ++i) {
    cmyk[4 * i] = 255;
    cmyk[4 * i + 3] = 255;
  }
  const auto cj = (dir / "cmyk.jpg").string();
  write_bytes(cj, cxr::testing::jpeg_of(16, 16, 4, JCS_CMYK, cmyk));
  const auto c = cxr::data::read_gray(cj);
  EXPECT_EQ(c.info.channels, 3);
  EXPECT_GT(c.info.chroma, 0.9);
  EXPECT_NEAR(c.pixels.mean().item<float>(), 76.0f / 255.0f, 0.02f);
  const torch::Tensor cr = cxr::data::read_rgb(cj);
  EXPECT_GT(cr[0].mean().item<float>(), 0.95f);
  EXPECT_LT(cr[1].mean().item<float>(), 0.05f);
}

TEST(Decoders, BmpStillDecodesThroughStbAndIsCapped) {
  TempDir dir;
  // 2 x 2, 24-bit, bottom-up rows padded to 4 bytes: white, black / gray.
  auto le32 = [](uint32_t v) {
    return std::string{static_cast<char>(v), static_cast<char>(v >> 8),
                       static_cast<char>(v >> 16), static_cast<char>(v >> 24)};
  };
  auto bmp = [&](uint32_t w, uint32_t h) {
    const std::string rows = std::string("\x80\x80\x80\x80\x80\x80\0\0", 8) +
                             std::string("\xff\xff\xff\0\0\0\0\0", 8);
    return std::string("BM") + le32(54 + 16) + le32(0) + le32(54) + le32(40) +
           le32(w) + le32(h) + std::string("\x01\0\x18\0", 4) + le32(0) +
           le32(16) + le32(2835) + le32(2835) + le32(0) + le32(0) + rows;
  };
  const auto ok = (dir / "ok.bmp").string();
  write_bytes(ok, bmp(2, 2));
  const auto g = cxr::data::read_gray(ok);
  EXPECT_EQ(g.info.format, "bmp");
  EXPECT_NEAR(g.pixels[0][0].item<float>(), 1.0f, 1e-6);
  EXPECT_NEAR(g.pixels[0][1].item<float>(), 0.0f, 1e-6);
  EXPECT_NEAR(g.pixels[1][0].item<float>(), 128.0f / 255.0f, 1e-6);
  const auto big = (dir / "big.bmp").string();
  write_bytes(big, bmp(10000, 10000));
  EXPECT_TRUE(contains(error_of(big), "95.4 megapixels"));
}

/// Runs `cxr explore` on a tiny dataset holding one bad file: exit 3 and
/// one error line naming the file and the problem.
TEST(Decoders, CliRefusesEachBadFileWithExit3AndOneLine) {
  TempDir dir;
  const std::string good = png_of(torch::rand({16, 16}));
  std::string crc = good;
  crc[find_chunk(good, "IDAT") + 8 + get32(good, find_chunk(good, "IDAT"))] ^=
      1;
  struct Case {
    std::string name, bytes, needle;
  };
  const std::vector<Case> cases = {
      {"crc.png", crc, "CRC error"},
      {"cut.jpg", gray_noise_jpeg(32, 32).substr(0, 200),
       "corrupt or truncated JPEG (Premature end of JPEG file)"},
      {"no-iend.png", good.substr(0, good.size() - 12), "IEND"},
      {"empty.png", "", "empty (0 bytes)"},
      {"text.png", "not an image\n", "text file"},
      {"huge.png", png_header_only(9000, 9000), "the limit is 64 megapixels"},
  };
  const std::string bin = CXR_BINARY;
  for (const auto& c : cases) {
    const fs::path data = dir / ("data-" + c.name);
    cxr::testing::make_tiny_dataset(data);
    const fs::path bad = data / "train" / "COVID" / c.name;
    write_bytes(bad, c.bytes);
    std::string log;
    const int rc = cxr::testing::run_command(
        bin + " explore " + data.string() + " --size 16 --no-cache --out " +
            (dir / ("out-" + c.name)).string() + " 2>&1",
        &log);
    EXPECT_EQ(rc, 3) << c.name << "\n" << log;
    const size_t at = log.find("cxr: error: ");
    ASSERT_NE(at, std::string::npos) << log;
    const std::string line = log.substr(at, log.find('\n', at) - at);
    EXPECT_TRUE(contains(line, bad.string())) << line;
    EXPECT_TRUE(contains(line, c.needle)) << line;
    EXPECT_EQ(log.find("cxr: error", at + 1), std::string::npos) << log;
  }
}

}  // namespace
