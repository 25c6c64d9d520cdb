// Layout detection, seeded stratified splits, bad files and the cache.
#include <thread>

#include "cxr/common/error.h"
#include "cxr/data/dataset.h"
#include "cxr/data/stats.h"
#include "test_util.h"

namespace {

using cxr::data::DatasetOptions;
using cxr::data::Split;
using cxr::testing::TempDir;
namespace fs = std::filesystem;

void write_image(const fs::path& p, float value, int size = 20) {
  fs::create_directories(p.parent_path());
  auto img = torch::full({size, size}, value);
  img.index_put_({torch::indexing::Slice(0, size / 2)}, value / 2);
  cxr::data::write_png(p.string(), img);
}

/// ROOT/{train,val,test}/{COVID,Normal}/i.png with n images each.
void make_split_layout(const fs::path& root, int n) {
  for (const char* s : {"train", "val", "test"}) {
    for (const char* c : {"COVID", "Normal"}) {
      for (int i = 0; i < n; ++i) {
        write_image(
            root / s / c / (std::to_string(i) + ".png"),
            0.1f + 0.02f * static_cast<float>(i) + (c[0] == 'C' ? 0.4f : 0.0f));
      }
    }
  }
}

TEST(Dataset, SplitLayoutIsDetectedWithSortedClasses) {
  TempDir dir;
  make_split_layout(dir.path(), 3);
  DatasetOptions o;
  o.root = dir.path().string();
  o.size = 16;
  auto idx = cxr::data::index_dataset(o);
  EXPECT_EQ(idx.layout, "split");
  EXPECT_EQ(idx.classes, (std::vector<std::string>{"COVID", "Normal"}));
  EXPECT_EQ(idx.samples.size(), 18u);
  auto ds = cxr::data::load_dataset(o);
  const auto& tr = ds.split(Split::kTrain);
  EXPECT_EQ(tr.images.sizes(), torch::IntArrayRef({6, 1, 16, 16}));
  EXPECT_EQ(tr.images.scalar_type(), torch::kUInt8);
  EXPECT_EQ(tr.labels.sum().item<float>(), 3.0f);
  EXPECT_EQ(ds.train_val().size(), 12);
}

TEST(Dataset, FlatLayoutSplitIsSeededAndStratified) {
  TempDir dir;
  for (const char* c : {"COVID", "Normal"}) {
    for (int i = 0; i < 22; ++i) {
      write_image(dir / c / "images" / (std::to_string(i) + ".png"), 0.5f, 8);
    }
  }
  // The Kaggle release also has masks/ next to images/: ignored.
  write_image(dir / "COVID" / "masks" / "0.png", 0.0f, 8);
  DatasetOptions o;
  o.root = dir.path().string();
  auto a = cxr::data::index_dataset(o);
  auto b = cxr::data::index_dataset(o);
  EXPECT_EQ(a.layout, "flat");
  ASSERT_EQ(a.samples.size(), 44u);
  for (size_t i = 0; i < a.samples.size(); ++i) {
    EXPECT_EQ(a.samples[i].path, b.samples[i].path);
    EXPECT_EQ(a.samples[i].split, b.samples[i].split);
  }
  int count[3][2] = {};
  for (const auto& s : a.samples) count[static_cast<int>(s.split)][s.label]++;
  // 22 * 0.727 = 16, 22 * 0.182 = 4, rest 2 -- per class (stratified).
  for (int label : {0, 1}) {
    EXPECT_EQ(count[0][label], 16);
    EXPECT_EQ(count[1][label], 4);
    EXPECT_EQ(count[2][label], 2);
  }
  o.seed = 7;
  auto c = cxr::data::index_dataset(o);
  bool differs = false;
  for (size_t i = 0; i < a.samples.size(); ++i) {
    differs |= a.samples[i].path != c.samples[i].path;
  }
  EXPECT_TRUE(differs) << "another seed should give another split";
}

TEST(Dataset, LayoutErrorsNameTheFolderAndTheFix) {
  TempDir dir;
  DatasetOptions o;
  o.root = (dir / "nope").string();
  try {
    cxr::data::index_dataset(o);
    FAIL();
  } catch (const cxr::DataError& e) {
    EXPECT_NE(std::string(e.what()).find("nope"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("split layout"), std::string::npos);
  }
  for (const char* c : {"A", "B", "C"})
    write_image(dir / "three" / c / "x.png", 0.5f);
  o.root = (dir / "three").string();
  try {
    cxr::data::index_dataset(o);
    FAIL();
  } catch (const cxr::DataError& e) {
    EXPECT_NE(std::string(e.what()).find("3 class folders"), std::string::npos);
  }
  make_split_layout(dir / "ok", 1);
  o.root = (dir / "ok").string();
  o.positive = "Pneumonia";
  try {
    cxr::data::index_dataset(o);
    FAIL();
  } catch (const cxr::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("--positive Pneumonia"),
              std::string::npos);
  }
}

TEST(Dataset, BadFilesStopTheLoadOrAreSkippedAndListed) {
  TempDir dir;
  make_split_layout(dir.path(), 2);
  cxr::testing::write_bytes(dir / "train" / "COVID" / "bad.png", "not a png");
  cxr::testing::write_bytes(dir / "val" / "Normal" / "zero.png", "");
  DatasetOptions o;
  o.root = dir.path().string();
  o.size = 16;
  try {
    cxr::data::load_dataset(o);
    FAIL();
  } catch (const cxr::DataError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("bad.png"), std::string::npos) << m;
    EXPECT_NE(m.find("1 more"), std::string::npos) << m;
    EXPECT_NE(m.find("--skip-bad"), std::string::npos) << m;
  }
  o.skip_bad = true;
  auto ds = cxr::data::load_dataset(o);
  ASSERT_EQ(ds.skipped.size(), 2u);
  EXPECT_EQ(ds.split(Split::kTrain).size(), 4);
  EXPECT_EQ(ds.split(Split::kVal).size(), 4);
}

TEST(Dataset, CacheIsUsedAndAChangedFileIsReRead) {
  TempDir dir;
  make_split_layout(dir / "data", 2);
  DatasetOptions o;
  o.root = (dir / "data").string();
  o.size = 16;
  o.cache_dir = (dir / "cache").string();
  auto first = cxr::data::load_dataset(o);
  EXPECT_EQ(first.stats.decoded, 12);
  EXPECT_EQ(first.stats.from_cache, 0);
  auto second = cxr::data::load_dataset(o);
  EXPECT_EQ(second.stats.decoded, 0);
  EXPECT_EQ(second.stats.from_cache, 12);
  EXPECT_TRUE(torch::equal(first.split(Split::kTest).images,
                           second.split(Split::kTest).images));
  // Rewrite one file with other content (and a later mtime).
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const auto changed = dir / "data" / "test" / "Normal" / "0.png";
  write_image(changed, 1.0f);
  auto third = cxr::data::load_dataset(o);
  EXPECT_EQ(third.stats.decoded, 1);
  EXPECT_EQ(third.stats.from_cache, 11);
  EXPECT_FALSE(torch::equal(first.split(Split::kTest).images,
                            third.split(Split::kTest).images));
  // A damaged cache is ignored and rebuilt, never trusted.
  for (const auto& e : fs::directory_iterator(o.cache_dir)) {
    cxr::testing::write_bytes(e.path(), "garbage");
  }
  auto fourth = cxr::data::load_dataset(o);
  EXPECT_EQ(fourth.stats.decoded, 12);
  EXPECT_TRUE(torch::equal(third.split(Split::kTest).images,
                           fourth.split(Split::kTest).images));
}

TEST(Dataset, CacheKeepsTheColourMeasure) {
  // The cache used to drop ImageInfo::chroma: a colour photo read from it
  // looked gray to the input checks.
  TempDir dir;
  make_split_layout(dir / "data", 2);
  torch::Tensor red = torch::zeros({3, 20, 20});
  red[0].fill_(1.0);
  cxr::data::write_png((dir / "data" / "test" / "COVID" / "red.png").string(),
                       red);
  DatasetOptions o;
  o.root = (dir / "data").string();
  o.size = 16;
  o.cache_dir = (dir / "cache").string();
  auto chroma_of_red = [&](const cxr::data::Dataset& ds) {
    const auto& t = ds.split(Split::kTest);
    for (size_t i = 0; i < t.paths.size(); ++i) {
      if (fs::path(t.paths[i]).filename() == "red.png") {
        return t.infos[i].chroma;
      }
    }
    return -1.0;
  };
  const auto first = cxr::data::load_dataset(o);
  EXPECT_NEAR(chroma_of_red(first), 1.0, 1e-9);
  const auto second = cxr::data::load_dataset(o);
  ASSERT_EQ(second.stats.from_cache, 13);
  EXPECT_NEAR(chroma_of_red(second), 1.0, 1e-9);
}

TEST(DataStats, PixelStatsMatchHandComputedValues) {
  auto img =
      torch::tensor({0, 255, 0, 255}, torch::kUInt8).reshape({1, 1, 2, 2});
  auto s = cxr::data::pixel_stats(img);
  EXPECT_NEAR(s.mean, 0.5, 1e-12);
  EXPECT_NEAR(s.std, 0.5, 1e-12);
  auto h = cxr::data::intensity_histogram(img, 2);
  EXPECT_NEAR(h[0], 1.0, 1e-12);  // density: half the mass in each half
  EXPECT_NEAR(h[1], 1.0, 1e-12);
}

TEST(DataStats, PlantedDuplicatesAreFoundAcrossSplitsAndOthersAreNot) {
  TempDir dir;
  // Four distinct "X-rays": smooth random fields (low-frequency content).
  torch::manual_seed(3);
  auto field = [](int64_t seed) {
    torch::manual_seed(seed);
    auto low = torch::rand({1, 1, 6, 6});
    return torch::nn::functional::interpolate(
               low, torch::nn::functional::InterpolateFuncOptions()
                        .size(std::vector<int64_t>{64, 64})
                        .mode(torch::kBicubic)
                        .align_corners(false))
        .clamp(0, 1)[0][0];
  };
  std::vector<torch::Tensor> base;
  for (int i = 0; i < 8; ++i) base.push_back(field(100 + i));
  auto put = [&](const char* split, const char* cls, const std::string& name,
                 const torch::Tensor& img) {
    auto p = dir / split / cls / name;
    fs::create_directories(p.parent_path());
    cxr::data::write_png(p.string(), img);
  };
  put("train", "COVID", "a.png", base[0]);
  put("train", "COVID", "b.png", base[1]);
  put("train", "Normal", "c.png", base[2]);
  put("train", "Normal", "d.png", base[3]);
  // Exact copy of a.png in test; c.png re-processed (gamma, contrast,
  // brightness, noise) in val: the same radiograph, other processing.
  put("test", "COVID", "a_copy.png", base[0]);
  put("val", "Normal", "c_bright.png",
      (base[2].clamp(1e-4, 1).pow(0.8) * 0.9f + 0.05f +
       0.01f * torch::randn({64, 64}))
          .clamp(0, 1));
  put("val", "COVID", "e.png", base[4]);
  put("test", "Normal", "f.png", base[5]);
  cxr::data::DatasetOptions o;
  o.root = dir.path().string();
  o.size = 64;
  auto ds = cxr::data::load_dataset(o);
  auto report = cxr::data::find_duplicates(ds, {});
  const auto& pairs = report.pairs;
  bool exact = false, near = false;
  for (const auto& p : pairs) {
    const auto a = fs::path(p.a.path).filename().string();
    const auto b = fs::path(p.b.path).filename().string();
    EXPECT_TRUE(p.cross_split()) << a << " " << b;
    if (p.kind == "exact") {
      exact = (a == "a.png" && b == "a_copy.png") ||
              (b == "a.png" && a == "a_copy.png");
    } else {
      near = (a == "c.png" && b == "c_bright.png") ||
             (b == "c.png" && a == "c_bright.png");
    }
  }
  EXPECT_TRUE(exact);
  EXPECT_TRUE(near);
  EXPECT_EQ(pairs.size(), 2u);
  ASSERT_EQ(report.nearest_similarity.size(), 8u);
  int ones = 0;
  for (double s : report.nearest_similarity) ones += s == 1.0;
  EXPECT_EQ(ones, 2);  // a.png and its exact copy
}

}  // namespace
