/// Writes the seed corpora of the fuzz targets into ROOT/<target>/
/// (build-fuzz/fuzz/make_seeds ROOT; scripts/fuzz.sh does it). Seeds are
/// small valid inputs, so the fuzzers start past the magic numbers: images
/// in each PNG colour type and depth the decoder handles (libpng), JPEG
/// baseline and progressive (libjpeg), a 24-bit BMP (by hand), DICOM files
/// in the layouts and transfer syntaxes DCMTK decodes (with DCMTK); Keras files
/// from write_keras_h5, a run folder from save_run, search spaces by hand.
#include <png.h>
// jpeglib.h needs FILE and size_t first.
#include <jpeglib.h>
#include <cstdio>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#ifdef CXR_HAVE_DCMTK
#include <dcmtk/config/osconfig.h>

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcrleerg.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmjpeg/djencode.h>
#include <dcmtk/dcmjpeg/djrplol.h>
#include <dcmtk/dcmjpeg/djrploss.h>
#include <dcmtk/dcmjpls/djencode.h>
#include <dcmtk/dcmjpls/djrparam.h>
#endif

#include "cxr/data/image_io.h"
#include "cxr/infer/ood.h"
#include "cxr/models/classifier.h"
#include "cxr/models/keras_h5.h"
#include "cxr/train/run_dir.h"

namespace fs = std::filesystem;

namespace {

std::vector<char> slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void put(const fs::path& p, const std::string& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << bytes;
}

void put(const fs::path& p, const std::vector<unsigned char>& bytes) {
  put(p, std::string(bytes.begin(), bytes.end()));
}

/// A PNG in any colour type / bit depth; `rows` are raw samples
/// (big-endian for 16-bit).
void write_png(const fs::path& path,
               int w,
               int h,
               int color_type,
               int bit_depth,
               const std::vector<std::vector<uint8_t>>& rows,
               bool interlace = false,
               const std::vector<png_color>& palette = {}) {
  FILE* fp = std::fopen(path.c_str(), "wb");
  png_structp png =
      png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  png_init_io(png, fp);
  png_set_IHDR(png, info, w, h, bit_depth, color_type,
               interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (!palette.empty()) {
    png_set_PLTE(png, info, palette.data(), static_cast<int>(palette.size()));
  }
  png_write_info(png, info);
  std::vector<png_bytep> ptrs;
  for (const auto& r : rows) ptrs.push_back(const_cast<png_bytep>(r.data()));
  png_write_image(png, ptrs.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  std::fclose(fp);
}

void write_jpeg(const fs::path& path, int channels, bool progressive) {
  const int w = 8, h = 6;
  FILE* fp = std::fopen(path.c_str(), "wb");
  jpeg_compress_struct c;
  jpeg_error_mgr err;
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  jpeg_stdio_dest(&c, fp);
  c.image_width = w;
  c.image_height = h;
  c.input_components = channels;
  c.in_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, 80, TRUE);
  if (progressive) jpeg_simple_progression(&c);
  jpeg_start_compress(&c, TRUE);
  std::vector<uint8_t> row(static_cast<size_t>(w * channels));
  for (int y = 0; y < h; ++y) {
    for (size_t i = 0; i < row.size(); ++i) row[i] = uint8_t(i * 9 + y * 30);
    JSAMPROW r = row.data();
    jpeg_write_scanlines(&c, &r, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  std::fclose(fp);
}

/// An uncompressed 24-bit BMP (BITMAPINFOHEADER, bottom-up rows padded to
/// 4 bytes).
std::string bmp24(int w, int h) {
  const int stride = (w * 3 + 3) / 4 * 4;
  const uint32_t data_size = uint32_t(stride * h);
  std::string b;
  auto u16 = [&](uint32_t v) {
    b.push_back(char(v & 0xff));
    b.push_back(char(v >> 8 & 0xff));
  };
  auto u32 = [&](uint32_t v) {
    u16(v & 0xffff);
    u16(v >> 16);
  };
  b += "BM";
  u32(54 + data_size);
  u32(0);
  u32(54);
  u32(40);
  u32(uint32_t(w));
  u32(uint32_t(h));
  u16(1);
  u16(24);
  u32(0);
  u32(data_size);
  u32(2835);
  u32(2835);
  u32(0);
  u32(0);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < stride; ++x)
      b.push_back(char(x < w * 3 ? x * 10 + y : 0));
  }
  return b;
}

std::vector<std::vector<uint8_t>> rows_of(int h, size_t bytes_per_row) {
  std::vector<std::vector<uint8_t>> rows(static_cast<size_t>(h));
  for (int y = 0; y < h; ++y) {
    for (size_t i = 0; i < bytes_per_row; ++i) {
      rows[static_cast<size_t>(y)].push_back(uint8_t(i * 17 + y * 29));
    }
  }
  return rows;
}

#ifdef CXR_HAVE_DCMTK
/// An 8x6 DICOM (with preamble) in `xfer`; `bits` 8 or 16 allocated;
/// `with_window`: signed 12-bit with rescale and a VOI window.
void write_dicom(const fs::path& p,
                 int bits,
                 const char* photometric,
                 int spp,
                 int frames,
                 bool with_window,
                 E_TransferSyntax xfer,
                 const DcmRepresentationParameter* rp = nullptr) {
  const int w = 8, h = 6;
  DcmFileFormat ff;
  DcmDataset* ds = ff.getDataset();
  char uid[100];
  ds->putAndInsertString(DCM_SOPClassUID, UID_SecondaryCaptureImageStorage);
  ds->putAndInsertString(DCM_SOPInstanceUID, dcmGenerateUniqueIdentifier(
                                                 uid, SITE_INSTANCE_UID_ROOT));
  ds->putAndInsertString(DCM_Modality, "CR");
  ds->putAndInsertUint16(DCM_Rows, h);
  ds->putAndInsertUint16(DCM_Columns, w);
  ds->putAndInsertUint16(DCM_BitsAllocated, Uint16(bits));
  ds->putAndInsertUint16(DCM_BitsStored, Uint16(bits == 8 ? 8 : 12));
  ds->putAndInsertUint16(DCM_HighBit, Uint16(bits == 8 ? 7 : 11));
  // Signed with the rescaled window only: the JPEG-LS encoder expects
  // unsigned samples.
  ds->putAndInsertUint16(DCM_PixelRepresentation, with_window ? 1 : 0);
  ds->putAndInsertUint16(DCM_SamplesPerPixel, Uint16(spp));
  ds->putAndInsertString(DCM_PhotometricInterpretation, photometric);
  if (spp > 1) ds->putAndInsertUint16(DCM_PlanarConfiguration, 0);
  if (frames > 1) {
    ds->putAndInsertString(DCM_NumberOfFrames, std::to_string(frames).c_str());
  }
  if (with_window) {
    ds->putAndInsertString(DCM_RescaleSlope, "2");
    ds->putAndInsertString(DCM_RescaleIntercept, "-100");
    ds->putAndInsertString(DCM_WindowCenter, "300");
    ds->putAndInsertString(DCM_WindowWidth, "500");
  }
  const size_t n = size_t(w) * h * size_t(spp) * size_t(frames);
  if (bits == 8) {
    std::vector<Uint8> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = Uint8(i * 7);
    ds->putAndInsertUint8Array(DCM_PixelData, v.data(), Uint32(n));
  } else {
    std::vector<Uint16> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = Uint16((i * 61) % 4096);
    ds->putAndInsertUint16Array(DCM_PixelData, v.data(), Uint32(n));
  }
  if (DcmXfer(xfer).isEncapsulated()) ds->chooseRepresentation(xfer, rp);
  fs::create_directories(p.parent_path());
  if (ff.saveFile(p.c_str(), xfer).bad()) {
    std::cerr << "make_seeds: cannot write " << p << "\n";
  }
}

void write_dicom_seeds(const fs::path& dir) {
  DJEncoderRegistration::registerCodecs();
  DJLSEncoderRegistration::registerCodecs();
  DcmRLEEncoderRegistration::registerCodecs();
  const DJ_RPLossless lossless;
  const DJ_RPLossy lossy(80);
  const DJLSRepresentationParameter jpls;
  write_dicom(dir / "mono2_8.dcm", 8, "MONOCHROME2", 1, 1, false,
              EXS_LittleEndianExplicit);
  write_dicom(dir / "mono1_12s_window.dcm", 16, "MONOCHROME1", 1, 1, true,
              EXS_LittleEndianExplicit);
  write_dicom(dir / "implicit_16.dcm", 16, "MONOCHROME2", 1, 1, true,
              EXS_LittleEndianImplicit);
  write_dicom(dir / "bigendian_16.dcm", 16, "MONOCHROME2", 1, 1, false,
              EXS_BigEndianExplicit);
  write_dicom(dir / "rgb_2frames.dcm", 8, "RGB", 3, 2, false,
              EXS_LittleEndianExplicit);
  write_dicom(dir / "rle_16.dcm", 16, "MONOCHROME2", 1, 1, false,
              EXS_RLELossless);
  write_dicom(dir / "rle_rgb.dcm", 8, "RGB", 3, 1, false, EXS_RLELossless);
  write_dicom(dir / "jpeg_baseline.dcm", 8, "MONOCHROME2", 1, 1, false,
              EXS_JPEGProcess1, &lossy);
  write_dicom(dir / "jpeg_lossless_16.dcm", 16, "MONOCHROME2", 1, 1, false,
              EXS_JPEGProcess14SV1, &lossless);
  write_dicom(dir / "jpegls_16.dcm", 16, "MONOCHROME2", 1, 1, false,
              EXS_JPEGLSLossless, &jpls);
}
#endif

}  // namespace

int main(int argc, char** argv) {
  torch::manual_seed(0);
  // Seeds are generated, never committed: scripts/fuzz.sh passes a scratch
  // folder.
  const fs::path root = argc > 1 ? argv[1] : "fuzz-seeds";

  // Images: an 8x6 gradient in gray, RGB and RGBA.
  const auto gray = torch::linspace(0, 1, 48).reshape({6, 8});
  put(root / "fuzz_decode_image/gray8.png", cxr::data::encode_png(gray));
  put(root / "fuzz_decode_image/rgb8.png",
      cxr::data::encode_png(torch::stack({gray, gray.flip(0), gray.flip(1)})));
  put(root / "fuzz_decode_image/rgba8.png",
      cxr::data::encode_png(torch::stack({gray, gray, gray, gray.flip(1)})));
  const fs::path img = root / "fuzz_decode_image";
  write_png(img / "gray16.png", 8, 6, PNG_COLOR_TYPE_GRAY, 16, rows_of(6, 16));
  write_png(img / "gray1.png", 8, 6, PNG_COLOR_TYPE_GRAY, 1, rows_of(6, 1));
  write_png(img / "gray_alpha8.png", 8, 6, PNG_COLOR_TYPE_GRAY_ALPHA, 8,
            rows_of(6, 16));
  write_png(img / "rgb16.png", 8, 6, PNG_COLOR_TYPE_RGB, 16, rows_of(6, 48));
  write_png(img / "interlaced.png", 8, 6, PNG_COLOR_TYPE_GRAY, 8, rows_of(6, 8),
            true);
  const std::vector<png_color> palette = {
      {0, 0, 0}, {255, 0, 0}, {0, 255, 0}, {255, 255, 255}};
  write_png(img / "palette2.png", 8, 6, PNG_COLOR_TYPE_PALETTE, 2,
            std::vector<std::vector<uint8_t>>(6, {0x1b, 0xe4}), false, palette);
  write_jpeg(img / "gray.jpg", 1, false);
  write_jpeg(img / "rgb.jpg", 3, false);
  write_jpeg(img / "progressive.jpg", 3, true);
  put(img / "rgb24.bmp", bmp24(5, 3));
#ifdef CXR_HAVE_DCMTK
  write_dicom_seeds(img);
#endif

  // Keras weights: a conv, a batch norm, a weightless and a dense layer, in
  // both string layouts and both group layouts.
  std::vector<cxr::models::KerasLayerWeights> layers = {
      {"Conv1",
       {{"Conv1/kernel:0", torch::rand({3, 3, 1, 2})},
        {"Conv1/bias:0", torch::rand({2})}}},
      {"bn_Conv1",
       {{"bn_Conv1/gamma:0", torch::rand({2})},
        {"bn_Conv1/beta:0", torch::rand({2})},
        {"bn_Conv1/moving_mean:0", torch::rand({2})},
        {"bn_Conv1/moving_variance:0", torch::rand({2})}}},
      {"Conv1_relu", {}},
      {"dense", {{"dense/kernel:0", torch::rand({2, 1})}}}};
  for (int variant = 0; variant < 4; ++variant) {
    cxr::models::KerasH5WriteOptions o;
    o.variable_length_strings = variant & 1;
    o.model_weights_group = variant & 2;
    const fs::path p =
        root / "fuzz_keras_h5" / ("keras" + std::to_string(variant) + ".h5");
    fs::create_directories(p.parent_path());
    cxr::models::write_keras_h5(p.string(), layers, o);
  }

  // A run folder of a tiny baseline, packed as the target reads it: 4 bytes
  // little-endian length of config.json, config.json, 4 bytes length of
  // model.safetensors, model.safetensors, ood.safetensors (what train
  // writes).
  cxr::train::RunMeta meta;
  meta.model.arch = "baseline";
  meta.model.input_size = 16;
  meta.model.filters = {2, 4};
  meta.created = "2026-01-01T00:00:00Z";
  meta.cxr_version = "seed";
  const fs::path tmp = fs::temp_directory_path() / "cxr-fuzz-seed-run";
  fs::remove_all(tmp);
  auto model = cxr::models::make_model(meta.model);
  cxr::train::save_run(tmp.string(), *model, meta);
  const auto cfg = slurp(tmp / "config.json");
  const auto weights = slurp(tmp / "model.safetensors");
  // A small detector on two layers (6 and 4 features), as fit_trust writes.
  torch::manual_seed(1);
  const auto f1 = torch::randn({40, 6}), f2 = torch::randn({40, 4});
  auto det = cxr::infer::OodDetector::fit(
      {"a", "b"}, {f1, f2}, (torch::arange(40) % 2).to(torch::kFloat32),
      cxr::infer::OodOptions());
  det.set_threshold(det.score({f1, f2}), 0.05, "seed");
  det.reference = torch::rand({32, 32});
  det.save((tmp / cxr::infer::kOodFile).string());
  const auto ood = slurp(tmp / cxr::infer::kOodFile);
  auto length = [](size_t n) {
    std::string s(4, '\0');
    for (int i = 0; i < 4; ++i) s[i] = char((n >> (8 * i)) & 0xff);
    return s;
  };
  std::string packed = length(cfg.size());
  packed.append(cfg.begin(), cfg.end());
  std::string run = packed + length(weights.size());
  run.append(weights.begin(), weights.end());
  std::string with_ood = run;
  with_ood.append(ood.begin(), ood.end());
  put(root / "fuzz_run_folder/run.bin", with_ood);
  put(root / "fuzz_run_folder/no_ood.bin", run);
  put(root / "fuzz_run_folder/config_only.bin", packed);
  fs::remove_all(tmp);

  // Search spaces: --grid tokens (one a line) and --space JSON.
  put(root / "fuzz_tune_space/grid.txt",
      std::string("filters=8,32,64\nlr=1e-3,1e-4\ndropout=0.2,0.5\n"));
  put(root / "fuzz_tune_space/range.txt",
      std::string("lr=1e-5..1e-2\ndropout=0..0.5\n"));
  put(root / "fuzz_tune_space/space.json",
      std::string(
          R"({"filters": [8, 32], "lr": "1e-5..1e-2", "batch_size": 16})"));
  std::cout << "seeds written under " << root << "\n";
  return 0;
}
