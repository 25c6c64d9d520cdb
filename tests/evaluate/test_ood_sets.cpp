// Out-of-distribution sets from a fake ../shared layout and a few test
// files; without ../shared the transformed and synthetic sets remain.
#include <map>

#include "cxr/common/error.h"
#include "cxr/data/image_io.h"
#include "cxr/evaluate/ood_sets.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using cxr::evaluate::make_ood_sets;
using cxr::evaluate::OodSet;
using cxr::evaluate::OodSetOptions;

std::map<std::string, const OodSet*> by_name(const std::vector<OodSet>& sets) {
  std::map<std::string, const OodSet*> m;
  for (const auto& s : sets) m[s.name] = &s;
  return m;
}

/// Five 40x48 gray "test X-rays" (noise with a bright block).
std::vector<std::string> make_test_files(const fs::path& dir) {
  std::vector<std::string> files;
  for (int i = 0; i < 5; ++i) {
    torch::manual_seed(i);
    torch::Tensor x = torch::rand({40, 48}) * 0.5;
    x.slice(0, 10, 30).slice(1, 5, 20) += 0.4;
    const auto p = (dir / ("t" + std::to_string(i) + ".png")).string();
    cxr::data::write_png(p, x);
    files.push_back(p);
  }
  return files;
}

void expect_well_formed(const OodSet& s) {
  EXPECT_FALSE(s.description.empty()) << s.name;
  ASSERT_EQ(s.images.size(), s.sources.size()) << s.name;
  for (size_t i = 0; i < s.images.size(); ++i) {
    const auto& g = s.images[i];
    ASSERT_TRUE(g.pixels.defined()) << s.name << " " << s.sources[i];
    ASSERT_EQ(g.pixels.dim(), 2) << s.name;
    EXPECT_EQ(g.pixels.scalar_type(), torch::kFloat32) << s.name;
    EXPECT_EQ(g.info.height, g.pixels.size(0)) << s.sources[i];
    EXPECT_EQ(g.info.width, g.pixels.size(1)) << s.sources[i];
    EXPECT_FALSE(g.info.format.empty()) << s.sources[i];
    EXPECT_FALSE(g.info.color.empty()) << s.sources[i];
    EXPECT_GE(g.pixels.min().item<float>(), 0.0f) << s.sources[i];
    EXPECT_LE(g.pixels.max().item<float>(), 1.0f) << s.sources[i];
    EXPECT_FALSE(s.sources[i].empty()) << s.name;
  }
}

TEST(OodSets, FakeSharedLayoutGivesEverySet) {
  cxr::testing::TempDir dir;
  const fs::path shared = dir / "shared";
  fs::create_directories(shared / "weights" / "test_images");
  // A saturated colour "photo" (RGB) and a gray one.
  torch::Tensor rgb = torch::zeros({3, 30, 20});
  rgb[0].fill_(1.0);
  rgb[2].slice(0, 0, 15).fill_(1.0);
  cxr::data::write_png((shared / "weights/test_images/red.png").string(), rgb);
  cxr::data::write_png((shared / "weights/test_images/gray.png").string(),
                       torch::rand({24, 24}));
  cxr::testing::write_bytes(shared / "weights/test_images/notes.json", "{}");

  OodSetOptions o;
  o.shared_dir = shared.string();
  o.test_files = make_test_files(dir.path());
  o.max_per_set = 3;
  std::vector<std::string> notes;
  const auto sets = make_ood_sets(o, &notes);
  const auto m = by_name(sets);
  for (const auto& s : sets) expect_well_formed(s);

  ASSERT_TRUE(m.count("imagenet-photos"));
  const OodSet& photos = *m.at("imagenet-photos");
  EXPECT_TRUE(photos.obvious);
  ASSERT_EQ(photos.images.size(), 6u);  // 2 photos x (as is, mirror, crop)
  // Sorted: gray.png first, then red.png.
  EXPECT_EQ(photos.sources[0], "gray.png");
  EXPECT_EQ(photos.images[0].info.chroma, 0.0);
  EXPECT_EQ(photos.sources[3], "red.png");
  EXPECT_NEAR(photos.images[3].info.chroma, 1.0, 1e-9);
  EXPECT_EQ(photos.images[3].info.color, "rgb");
  EXPECT_EQ(photos.images[3].pixels.sizes(), torch::IntArrayRef({30, 20}));
  EXPECT_NEAR(photos.images[4].info.chroma, 1.0, 1e-9);  // mirrored
  EXPECT_NEAR(photos.images[5].info.chroma, 1.0, 1e-6);  // cropped
  EXPECT_EQ(photos.images[5].pixels.sizes(), torch::IntArrayRef({21, 14}));
  // The mirror really is one.
  EXPECT_TRUE(
      torch::equal(photos.images[1].pixels, photos.images[0].pixels.flip({1})));

  // No DICOM folder in the fake layout: those sets are left out, and said so.
  EXPECT_FALSE(m.count("abdomen-dicom"));
  EXPECT_FALSE(m.count("other-dicom"));
  bool dicom_note = false;
  for (const auto& n : notes) {
    dicom_note |= n.find("abdomen-dicom") != std::string::npos;
  }
  EXPECT_TRUE(dicom_note);

  for (const char* name : {"rotated-90", "inverted", "cropped", "blurred"}) {
    ASSERT_TRUE(m.count(name)) << name;
    EXPECT_EQ(m.at(name)->images.size(), 3u) << name;
  }
  EXPECT_TRUE(m.at("rotated-90")->obvious);
  EXPECT_TRUE(m.at("inverted")->obvious);
  EXPECT_FALSE(m.at("cropped")->obvious);
  EXPECT_FALSE(m.at("blurred")->obvious);
  for (const auto& g : m.at("rotated-90")->images) {
    EXPECT_EQ(g.pixels.sizes(), torch::IntArrayRef({48, 40}));
  }
  for (const auto& g : m.at("cropped")->images) {
    EXPECT_GE(g.pixels.size(0), 10);  // 25-35 % of 40
    EXPECT_LE(g.pixels.size(0), 14);
    EXPECT_GE(g.pixels.size(1), 12);  // 25-35 % of 48
    EXPECT_LE(g.pixels.size(1), 17);
  }
  for (const auto& g : m.at("blurred")->images) {
    EXPECT_EQ(g.pixels.sizes(), torch::IntArrayRef({40, 48}));
  }
  // Inverted is 1 - x of the same pick as rotated (same seed, same order).
  const std::string src = m.at("inverted")->sources[0];
  const std::string file = src.substr(0, src.find(' '));
  const auto orig = cxr::data::read_gray((dir / file).string());
  EXPECT_TRUE(torch::allclose(m.at("inverted")->images[0].pixels,
                              1.0 - orig.pixels, 0, 1e-6));

  ASSERT_TRUE(m.count("noise"));
  EXPECT_EQ(m.at("noise")->images.size(), 3u);
  for (const auto& g : m.at("noise")->images) {
    EXPECT_EQ(g.pixels.sizes(), torch::IntArrayRef({224, 224}));
  }
  ASSERT_TRUE(m.count("text-page"));
  EXPECT_EQ(m.at("text-page")->images.size(), 3u);
  for (const auto& g : m.at("text-page")->images) {
    EXPECT_GT(g.pixels.mean().item<float>(), 0.7f);  // mostly white paper
    EXPECT_LT(g.pixels.min().item<float>(), 0.3f);   // with dark text
  }

  // Deterministic by seed.
  const auto again = make_ood_sets(o);
  ASSERT_EQ(again.size(), sets.size());
  for (size_t i = 0; i < sets.size(); ++i) {
    EXPECT_EQ(again[i].sources, sets[i].sources) << sets[i].name;
  }
}

TEST(OodSets, WithoutSharedTheTransformedAndSyntheticSetsRemain) {
  cxr::testing::TempDir dir;
  OodSetOptions o;
  o.shared_dir = (dir / "absent").string();
  o.test_files = make_test_files(dir.path());
  o.max_per_set = 0;  // all five test files; 200 noise images; 40 pages
  std::vector<std::string> notes;
  const auto sets = make_ood_sets(o, &notes);
  const auto m = by_name(sets);
  EXPECT_FALSE(m.count("imagenet-photos"));
  EXPECT_FALSE(m.count("abdomen-dicom"));
  EXPECT_FALSE(m.count("other-dicom"));
  for (const char* name : {"rotated-90", "inverted", "cropped", "blurred"}) {
    ASSERT_TRUE(m.count(name)) << name;
    EXPECT_EQ(m.at(name)->images.size(), 5u) << name;
    expect_well_formed(*m.at(name));
  }
  EXPECT_EQ(m.at("noise")->images.size(), 200u);
  ASSERT_EQ(m.at("text-page")->images.size(), 40u);
  expect_well_formed(*m.at("text-page"));
  // Pages differ from each other.
  EXPECT_NE(m.at("text-page")->images[0].pixel_hash,
            m.at("text-page")->images[1].pixel_hash);
  ASSERT_FALSE(notes.empty());
  EXPECT_NE(notes[0].find("imagenet-photos"), std::string::npos) << notes[0];
  EXPECT_NE(notes[0].find("absent"), std::string::npos) << notes[0];

  // No test files either: only the synthetic sets, and a note.
  o.test_files.clear();
  o.max_per_set = 4;
  notes.clear();
  const auto bare = make_ood_sets(o, &notes);
  ASSERT_EQ(bare.size(), 2u);
  EXPECT_EQ(bare[0].name, "noise");
  EXPECT_EQ(bare[1].name, "text-page");
  bool test_note = false;
  for (const auto& n : notes) {
    test_note |= n.find("rotated-90") != std::string::npos;
  }
  EXPECT_TRUE(test_note);
}

/// A 24-bit BMP of a gray ramp (DCMTK's img2dcm reads BMP).
std::string ramp_bmp(int w, int h, int seed) {
  const int row = (w * 3 + 3) & ~3;
  const uint32_t size = 54 + uint32_t(row) * h;
  std::string b(size, '\0');
  auto put = [&](size_t at, uint32_t v, int n) {
    for (int i = 0; i < n; ++i) b[at + i] = static_cast<char>(v >> (8 * i));
  };
  b[0] = 'B';
  b[1] = 'M';
  put(2, size, 4);
  put(10, 54, 4);
  put(14, 40, 4);
  put(18, w, 4);
  put(22, h, 4);
  put(26, 1, 2);
  put(28, 24, 2);
  put(34, size - 54, 4);
  for (int r = 0; r < h; ++r) {
    for (int c = 0; c < w; ++c) {
      const char v = static_cast<char>((r * 5 + c * 3 + seed) % 256);
      for (int k = 0; k < 3; ++k) b[54 + size_t(r) * row + c * 3 + k] = v;
    }
  }
  return b;
}

/// img2dcm writes the test's DICOM files; cxr reads them in process.
bool have_dcmtk() {
  return cxr::data::dicom_supported() &&
         cxr::testing::run_command("command -v img2dcm") == 0;
}

TEST(OodSets, DicomSetsAreReadInProcessAndSkipBrokenFiles) {
  if (!have_dcmtk()) {
    GTEST_SKIP() << "needs cxr built with DCMTK and img2dcm: apt-get "
                    "install libdcmtk-dev dcmtk";
  }
  cxr::testing::TempDir dir;
  const fs::path dicom = dir / "shared" / "data" / "dicom";
  fs::create_directories(dicom / "pydicom");
  cxr::testing::write_bytes(dir / "a.bmp", ramp_bmp(40, 30, 0));
  cxr::testing::write_bytes(dir / "b.bmp", ramp_bmp(16, 12, 7));
  auto img2dcm = [&](const fs::path& bmp, const fs::path& dcm) {
    std::string log;
    ASSERT_EQ(cxr::testing::run_command("img2dcm -i BMP '" + bmp.string() +
                                            "' '" + dcm.string() + "'",
                                        &log),
              0)
        << log;
  };
  img2dcm(dir / "a.bmp", dicom / "nhsx-sample.dcm");
  img2dcm(dir / "b.bmp", dicom / "pydicom" / "CT_fake.dcm");
  fs::copy_file(dicom / "pydicom" / "CT_fake.dcm",
                dicom / "pydicom" / "MR_same.dcm");
  cxr::testing::write_bytes(dicom / "pydicom" / "broken.dcm", "not dicom");

  OodSetOptions o;
  o.shared_dir = (dir / "shared").string();
  o.max_per_set = 2;
  std::vector<std::string> notes;
  const auto sets = make_ood_sets(o, &notes);
  const auto m = by_name(sets);
  ASSERT_TRUE(m.count("abdomen-dicom"));
  const OodSet& a = *m.at("abdomen-dicom");
  expect_well_formed(a);
  ASSERT_EQ(a.images.size(), 4u);
  EXPECT_EQ(a.images[0].pixels.sizes(), torch::IntArrayRef({30, 40}));
  EXPECT_EQ(a.images[0].info.format, "dicom");
  EXPECT_NEAR(a.images[0].info.chroma, 0.0, 1e-9);
  EXPECT_EQ(a.images[2].pixels.sizes(), torch::IntArrayRef({23, 30}));
  // The min-max window stretches the ramp to the full range.
  EXPECT_LT(a.images[0].pixels.min().item<float>(), 0.01f);
  EXPECT_GT(a.images[0].pixels.max().item<float>(), 0.99f);

  ASSERT_TRUE(m.count("other-dicom"));
  const OodSet& other = *m.at("other-dicom");
  expect_well_formed(other);
  ASSERT_EQ(other.images.size(), 1u);  // MR_same.dcm is a duplicate
  EXPECT_EQ(other.sources[0], "CT_fake.dcm");
  EXPECT_EQ(other.images[0].pixels.sizes(), torch::IntArrayRef({12, 16}));
  bool broken = false, same = false;
  for (const auto& n : notes) {
    broken |= n.find("could not convert") != std::string::npos &&
              n.find("broken.dcm") != std::string::npos;
    same |= n.find("MR_same.dcm") != std::string::npos;
  }
  EXPECT_TRUE(broken);
  EXPECT_TRUE(same);

  // The abdominal file is required to convert once it exists.
  cxr::testing::write_bytes(dicom / "nhsx-sample.dcm", "DICM? no");
  EXPECT_THROW(make_ood_sets(o), cxr::DataError);
}

}  // namespace
