// Out-of-distribution sets: photos and non-chest DICOMs from ../shared,
// transformed in-distribution images, synthetic noise and text pages.
#include "cxr/evaluate/ood_sets.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/viz/plot.h"

namespace cxr::evaluate {
namespace {

namespace fs = std::filesystem;

using data::GrayImage;

void note(std::vector<std::string>* notes, const std::string& s) {
  if (notes) notes->push_back(s);
}

/// A new image from pixels [H, W], keeping the original's file info (format,
/// colour, chroma) with the new size, and hashing the float pixels.
GrayImage derived(const GrayImage& from, torch::Tensor pixels) {
  GrayImage g;
  g.info = from.info;
  g.pixels = pixels.contiguous().to(torch::kFloat32).clamp(0.0, 1.0);
  g.info.height = static_cast<int>(g.pixels.size(0));
  g.info.width = static_cast<int>(g.pixels.size(1));
  g.pixel_hash = fnv1a64(g.pixels.data_ptr<float>(),
                         static_cast<size_t>(g.pixels.numel()) * sizeof(float));
  return g;
}

GrayImage synthetic_image(torch::Tensor pixels) {
  GrayImage base;
  base.info.channels = 1;
  base.info.bit_depth = 8;
  base.info.format = "synthetic";
  base.info.color = "gray";
  return derived(base, std::move(pixels));
}

/// Centre crop keeping `fraction` of each side.
torch::Tensor centre_crop(const torch::Tensor& x, double fraction) {
  const int64_t h = x.size(0), w = x.size(1);
  const int64_t ch = std::max<int64_t>(1, std::llround(h * fraction));
  const int64_t cw = std::max<int64_t>(1, std::llround(w * fraction));
  return x.slice(0, (h - ch) / 2, (h - ch) / 2 + ch)
      .slice(1, (w - cw) / 2, (w - cw) / 2 + cw);
}

torch::Tensor hflip(const torch::Tensor& x) {
  return x.flip({1});
}

/// Separable Gaussian blur of [H, W] with replicate padding.
torch::Tensor gaussian_blur(const torch::Tensor& x, double sigma) {
  const int64_t radius = std::max<int64_t>(1, std::llround(3.0 * sigma));
  torch::Tensor k = torch::arange(-radius, radius + 1, torch::kFloat32);
  k = torch::exp(-(k * k) / static_cast<float>(2.0 * sigma * sigma));
  k = k / k.sum();
  namespace F = torch::nn::functional;
  torch::Tensor y = x.unsqueeze(0).unsqueeze(0);
  y = F::pad(y, F::PadFuncOptions({radius, radius, radius, radius})
                    .mode(torch::kReplicate));
  y = F::conv2d(y, k.view({1, 1, 1, -1}));
  y = F::conv2d(y, k.view({1, 1, -1, 1}));
  return y[0][0];
}

std::vector<fs::path> files_with(const fs::path& dir,
                                 const std::set<std::string>& exts) {
  std::vector<fs::path> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::string ext = e.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    if (exts.count(ext)) out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

OodSet make_set(std::string name, std::string description, bool obvious) {
  OodSet s;
  s.name = std::move(name);
  s.description = std::move(description);
  s.obvious = obvious;
  return s;
}

void add(OodSet* set, GrayImage image, std::string source) {
  set->images.push_back(std::move(image));
  set->sources.push_back(std::move(source));
}

OodSet photo_set(const fs::path& dir) {
  OodSet set;
  set.name = "imagenet-photos";
  set.description =
      "Colour photographs (the ImageNet test images of the pretrained "
      "weights), each as is, mirrored and centre-cropped.";
  for (const auto& f : files_with(dir, {".png", ".bmp"})) {
    const GrayImage g = data::read_gray(f.string());
    const std::string name = f.filename().string();
    add(&set, g, name);
    add(&set, derived(g, hflip(g.pixels)), name + " (mirrored)");
    GrayImage crop = derived(g, centre_crop(g.pixels, 0.7));
    if (g.info.chroma > 0) {
      // The crop's own colour, measured on the RGB pixels.
      const torch::Tensor rgb = data::read_rgb(f.string());
      const torch::Tensor c = centre_crop(rgb.permute({1, 2, 0}), 0.7);
      crop.info.chroma =
          (std::get<0>(c.max(2)) - std::get<0>(c.min(2))).mean().item<double>();
    }
    add(&set, std::move(crop), name + " (centre 70 % crop)");
  }
  return set;
}

/// Reads up to `max` of `files`, chosen by a seeded shuffle.
std::vector<std::pair<std::string, GrayImage>> pick_test_images(
    const std::vector<std::string>& files, int max, uint64_t seed) {
  std::vector<size_t> order(files.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::mt19937_64 rng(seed);
  std::shuffle(order.begin(), order.end(), rng);
  if (max > 0 && order.size() > static_cast<size_t>(max)) order.resize(max);
  std::vector<std::pair<std::string, GrayImage>> out;
  out.reserve(order.size());
  for (size_t i : order) {
    out.emplace_back(fs::path(files[i]).filename().string(),
                     data::read_gray(files[i]));
  }
  return out;
}

std::vector<OodSet> transformed_sets(
    const std::vector<std::pair<std::string, GrayImage>>& picked,
    uint64_t seed) {
  OodSet rot =
      make_set("rotated-90",
               "Test chest X-rays rotated by 90 degrees (alternately clockwise "
               "and anticlockwise).",
               true);
  OodSet inv =
      make_set("inverted",
               "Test chest X-rays with inverted gray values (1 - x), as a "
               "MONOCHROME1 film read as MONOCHROME2 looks.",
               true);
  OodSet crop =
      make_set("cropped",
               "Random crops of test chest X-rays keeping 25-35 % of each "
               "side, at that small size: a part of a chest, not a whole one.",
               false);
  OodSet blur =
      make_set("blurred",
               "Test chest X-rays under a heavy Gaussian blur (sigma 4 % of "
               "the shorter side).",
               false);
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ULL);
  std::uniform_real_distribution<double> frac(0.25, 0.35);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (size_t i = 0; i < picked.size(); ++i) {
    const auto& [name, g] = picked[i];
    const torch::Tensor& x = g.pixels;
    const bool cw = i % 2 == 0;
    add(&rot, derived(g, torch::rot90(x, cw ? -1 : 1, {0, 1})),
        name + (cw ? " (rotated 90 deg clockwise)"
                   : " (rotated 90 deg anticlockwise)"));
    add(&inv, derived(g, 1.0 - x), name + " (inverted)");
    const int64_t h = x.size(0), w = x.size(1);
    const double f = frac(rng);
    const int64_t crop_h = std::max<int64_t>(1, std::llround(h * f));
    const int64_t crop_w = std::max<int64_t>(1, std::llround(w * f));
    const int64_t top =
        static_cast<int64_t>(unit(rng) * double(h - crop_h + 1));
    const int64_t left =
        static_cast<int64_t>(unit(rng) * double(w - crop_w + 1));
    const int64_t t = std::min(top, h - crop_h), l = std::min(left, w - crop_w);
    char what[96];
    std::snprintf(what, sizeof what, " (crop %lldx%lld at %lld,%lld)",
                  static_cast<long long>(crop_w),
                  static_cast<long long>(crop_h), static_cast<long long>(l),
                  static_cast<long long>(t));
    add(&crop, derived(g, x.slice(0, t, t + crop_h).slice(1, l, l + crop_w)),
        name + what);
    const double sigma = 0.04 * static_cast<double>(std::min(h, w));
    std::snprintf(what, sizeof what, " (Gaussian blur, sigma %.1f px)", sigma);
    add(&blur, derived(g, gaussian_blur(x, sigma)), name + what);
  }
  return {rot, inv, crop, blur};
}

OodSet noise_set(int count, uint64_t seed) {
  OodSet set =
      make_set("noise",
               "Synthetic 224x224 noise images: uniform in [0, 1] and Gaussian "
               "around mid-gray, alternately.",
               true);
  auto gen = at::detail::createCPUGenerator(seed);
  for (int i = 0; i < count; ++i) {
    torch::Tensor x;
    std::string what;
    if (i % 2 == 0) {
      x = torch::rand({224, 224}, gen, torch::kFloat32);
      what = "uniform noise #" + std::to_string(i);
    } else {
      const double sd = 0.1 + 0.05 * (i % 5);
      x = (torch::randn({224, 224}, gen, torch::kFloat32) * sd + 0.5);
      char buf[64];
      std::snprintf(buf, sizeof buf, "Gaussian noise #%d (mean 0.5, sd %.2f)",
                    i, sd);
      what = buf;
    }
    add(&set, synthetic_image(x), what);
  }
  return set;
}

OodSet text_set(int count, uint64_t seed) {
  OodSet set =
      make_set("text-page",
               "Rendered pages of black text on white (random words, varying "
               "font size and page size).",
               true);
  static const char* kWords[] = {
      "the",      "patient",   "report",   "chest",   "image",    "lung",
      "normal",   "findings",  "clinical", "history", "page",     "data",
      "model",    "network",   "result",   "table",   "figure",   "method",
      "analysis", "section",   "value",    "study",   "protocol", "review",
      "summary",  "reference", "and",      "of",      "with",     "for",
      "in",       "a",         "is",       "was",     "were",     "this",
      "that",     "on",        "by",       "from",    "2020",     "COVID-19",
      "X-ray",    "1.",        "2.",       "(see",    "above)",   "note:"};
  const int n_words = static_cast<int>(sizeof kWords / sizeof kWords[0]);
  std::mt19937_64 rng(seed ^ 0x5851f42d4c957f2dULL);
  for (int i = 0; i < count; ++i) {
    const int width = 200 + static_cast<int>(rng() % 61);      // 200..260
    const int height = 280 + static_cast<int>(rng() % 41);     // 280..320
    const double font = 7.0 + static_cast<double>(rng() % 9);  // 7..15 px
    const int n_lines = 4 + static_cast<int>(rng() % 40);
    std::vector<std::string> lines;
    for (int l = 0; l < n_lines; ++l) {
      const int n = 1 + static_cast<int>(rng() % 9);
      std::string line;
      for (int k = 0; k < n; ++k) {
        if (k) line += ' ';
        line += kWords[rng() % n_words];
      }
      lines.push_back(line);
    }
    char buf[96];
    std::snprintf(buf, sizeof buf, "text page #%d (%dx%d px, %.0f px font)", i,
                  width, height, font);
    add(&set,
        synthetic_image(viz::render_text_page(lines, width, height, font)),
        buf);
  }
  return set;
}

}  // namespace

std::vector<OodSet> make_ood_sets(const OodSetOptions& options,
                                  std::vector<std::string>* notes) {
  std::vector<OodSet> sets;
  const fs::path shared = options.shared_dir;
  const bool have_shared =
      !options.shared_dir.empty() && fs::is_directory(shared);
  if (!have_shared) {
    note(notes, "no shared folder (" +
                    (options.shared_dir.empty() ? std::string("not given")
                                                : options.shared_dir) +
                    "): imagenet-photos, abdomen-dicom and other-dicom left "
                    "out");
  }

  if (have_shared) {
    const fs::path photos = shared / "weights" / "test_images";
    OodSet p = photo_set(photos);
    if (p.images.empty()) {
      note(notes,
           "imagenet-photos left out: no PNG or BMP in " + photos.string());
    } else {
      sets.push_back(std::move(p));
    }

    const fs::path dicom = shared / "data" / "dicom";
    const fs::path abdomen = dicom / "nhsx-sample.dcm";
    const auto pydicom = files_with(dicom / "pydicom", {".dcm"});
    const bool want_dicom = fs::is_regular_file(abdomen) || !pydicom.empty();
    if (want_dicom && !data::dicom_supported()) {
      note(notes,
           "abdomen-dicom and other-dicom left out: this cxr was built "
           "without DICOM support (DCMTK; install libdcmtk-dev and rebuild)");
    } else if (want_dicom) {
      // Read in process with the same decoder as every user input
      // (data::decode_gray: rescale, first VOI window else min-max,
      // MONOCHROME1 inverted, first frame).
      if (fs::is_regular_file(abdomen)) {
        const GrayImage g = data::read_gray(abdomen.string());
        OodSet a =
            make_set("abdomen-dicom",
                     "A real abdominal radiograph (DICOM), as is, mirrored and "
                     "cropped: the wrong body part.",
                     true);
        const std::string src = "nhsx-sample.dcm";
        const torch::Tensor c = centre_crop(g.pixels, 0.75);
        add(&a, g, src);
        add(&a, derived(g, hflip(g.pixels)), src + " (mirrored)");
        add(&a, derived(g, c), src + " (centre 75 % crop)");
        add(&a, derived(g, hflip(c)), src + " (centre 75 % crop, mirrored)");
        sets.push_back(std::move(a));
      } else {
        note(notes,
             "abdomen-dicom left out: " + abdomen.string() + " is absent");
      }

      OodSet o = make_set(
          "other-dicom",
          "Small non-chest DICOM files from pydicom's test set (CT, MR, "
          "secondary capture, RT dose).",
          true);
      std::vector<std::string> skipped;
      std::map<uint64_t, std::string> seen;
      for (const fs::path& f : pydicom) {
        const std::string name = f.filename().string();
        GrayImage g;
        try {
          g = data::read_gray(f.string());
        } catch (const DataError& e) {
          skipped.push_back(name + " (" + e.what() + ")");
          continue;
        }
        auto [it, fresh] = seen.emplace(g.pixel_hash, name);
        if (!fresh) {
          note(notes, "other-dicom: " + name + " has the same pixels as " +
                          it->second + "; kept once");
          continue;
        }
        add(&o, std::move(g), name);
      }
      if (!skipped.empty()) {
        std::string s = "other-dicom: could not convert";
        for (size_t i = 0; i < skipped.size(); ++i) {
          s += (i ? "; " : " ") + skipped[i];
        }
        note(notes, s);
      }
      if (o.images.empty()) {
        note(notes, "other-dicom left out: no readable file in " +
                        (dicom / "pydicom").string());
      } else {
        sets.push_back(std::move(o));
      }
    } else {
      note(notes, "abdomen-dicom and other-dicom left out: no DICOM files in " +
                      dicom.string());
    }
  }

  if (options.test_files.empty()) {
    note(notes,
         "rotated-90, inverted, cropped and blurred left out: no test files "
         "given");
  } else {
    const auto picked =
        pick_test_images(options.test_files, options.max_per_set, options.seed);
    for (auto& s : transformed_sets(picked, options.seed)) {
      sets.push_back(std::move(s));
    }
  }

  const int synthetic = options.max_per_set > 0 ? options.max_per_set : 200;
  sets.push_back(noise_set(synthetic, options.seed));
  sets.push_back(text_set(std::min(40, synthetic), options.seed));
  return sets;
}

}  // namespace cxr::evaluate
