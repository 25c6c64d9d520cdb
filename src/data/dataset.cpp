// Dataset discovery (split or flat layout), the seeded stratified split and
// loading through the decoded cache (cache.cpp); folder walking is in
// listing.cpp.
#include "cxr/data/dataset.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>

#include "cache.h"
#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/common/progress.h"
#include "walk.h"

namespace fs = std::filesystem;

namespace cxr::data {
namespace {

const char* kLayoutHelp =
    "expected ROOT/{train,val,test}/<CLASS>/*.png (split layout) or "
    "ROOT/<CLASS>/*.png or ROOT/<CLASS>/images/*.png (flat layout, e.g. the "
    "COVID-19 Radiography Database from Kaggle)";

/// Fisher-Yates with mt19937_64: identical on every standard library
/// (std::shuffle's algorithm is implementation-defined).
void seeded_shuffle(std::vector<std::string>& v, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (size_t i = v.size(); i > 1; --i) {
    size_t j = static_cast<size_t>(rng() % i);
    std::swap(v[i - 1], v[j]);
  }
}

void assign_classes(DatasetIndex& idx, const DatasetOptions& o) {
  if (idx.classes.size() != 2) {
    std::string found;
    for (const auto& c : idx.classes) found += (found.empty() ? "" : ", ") + c;
    throw DataError("data '" + idx.root + "': found " +
                    std::to_string(idx.classes.size()) + " class folders (" +
                    found +
                    "); cxr trains a two-class model: keep exactly two class "
                    "folders, e.g. COVID and Normal");
  }
  auto it = std::find(idx.classes.begin(), idx.classes.end(), o.positive);
  if (it == idx.classes.end()) {
    throw ConfigError("--positive " + o.positive + ": no such class in '" +
                      idx.root + "' (classes: " + idx.classes[0] + ", " +
                      idx.classes[1] + ")");
  }
  idx.positive = o.positive;
  idx.negative = idx.classes[0] == o.positive ? idx.classes[1] : idx.classes[0];
}

}  // namespace

const char* split_name(Split s) {
  switch (s) {
    case Split::kTrain:
      return "train";
    case Split::kVal:
      return "val";
    case Split::kTest:
      return "test";
  }
  return "?";
}

Split parse_split(const std::string& name) {
  if (name == "train") return Split::kTrain;
  if (name == "val") return Split::kVal;
  if (name == "test") return Split::kTest;
  throw ConfigError("--split " + name + ": use train, val or test");
}

namespace {

// The data folder exists, is a folder and the split shares add up.
void check_root(const DatasetOptions& o) {
  if (o.root.empty()) {
    throw ConfigError("no data folder given; pass DATA (" +
                      std::string(kLayoutHelp) + ")");
  }
  {
    std::error_code ec;
    const fs::file_status st = fs::status(o.root, ec);
    if (ec && ec != std::errc::no_such_file_or_directory) {
      throw DataError("data folder '" + o.root + "' " + fs_problem(ec));
    }
    if (!fs::exists(st)) {
      throw DataError("data folder '" + o.root + "' does not exist; " +
                      kLayoutHelp);
    }
    if (!fs::is_directory(st)) {
      throw DataError("data folder '" + o.root +
                      "' is a file, not a folder; give the dataset folder (" +
                      kLayoutHelp + ")");
    }
  }
  if (!(o.train_fraction > 0 && o.val_fraction >= 0 &&
        o.train_fraction + o.val_fraction < 1.0)) {
    throw ConfigError(
        "--train-fraction/--val-fraction: need train > 0, val >= 0 and "
        "train + val < 1 (test gets the rest)");
  }
}

// ROOT/{train,val,test}/<CLASS>/*.
void index_split_layout(DatasetIndex& idx,
                        const fs::path& root,
                        const Problems& problems,
                        const DatasetOptions& o) {
  idx.layout = "split";
  idx.classes = subdirs(root / "train", problems);
  assign_classes(idx, o);
  for (Split s : kAllSplits) {
    for (const auto& c : idx.classes) {
      fs::path d = root / split_name(s) / c;
      std::error_code ec;
      if (!fs::is_directory(d, ec) && !ec) {
        throw DataError("data '" + o.root + "': missing folder '" + d.string() +
                        "' (every split needs both classes)");
      }
      for (auto& f : image_files(d, problems)) {
        idx.samples.push_back({f, c == idx.positive ? 1 : 0, s});
      }
    }
  }
}

// ROOT/<CLASS>/*: a seeded stratified split per class.
void index_flat_layout(DatasetIndex& idx,
                       const std::vector<std::string>& top,
                       const fs::path& root,
                       const Problems& problems,
                       const DatasetOptions& o) {
  idx.layout = "flat";
  idx.classes = top;
  assign_classes(idx, o);
  for (const auto& c : idx.classes) {
    auto files = image_files(root / c, problems);
    seeded_shuffle(files, o.seed ^ fnv1a64(c.data(), c.size()));
    const auto n = static_cast<double>(files.size());
    const size_t n_train =
        static_cast<size_t>(std::llround(n * o.train_fraction));
    const size_t n_val =
        std::min(files.size() - n_train,
                 static_cast<size_t>(std::llround(n * o.val_fraction)));
    for (size_t i = 0; i < files.size(); ++i) {
      Split s = i < n_train           ? Split::kTrain
                : i < n_train + n_val ? Split::kVal
                                      : Split::kTest;
      idx.samples.push_back({files[i], c == idx.positive ? 1 : 0, s});
    }
  }
  std::stable_sort(idx.samples.begin(), idx.samples.end(),
                   [](const Sample& a, const Sample& b) {
                     if (a.split != b.split) return a.split < b.split;
                     if (a.label != b.label) return a.label > b.label;
                     return a.path < b.path;
                   });
}

// Every split needs both classes.
void check_every_split(const DatasetIndex& idx, const DatasetOptions& o) {
  for (Split s : kAllSplits) {
    for (int label : {0, 1}) {
      bool any = std::any_of(
          idx.samples.begin(), idx.samples.end(),
          [&](const Sample& x) { return x.split == s && x.label == label; });
      if (!any) {
        // With --skip-bad an unreadable class folder empties a split: say so.
        const std::string skipped =
            idx.skipped.empty()
                ? std::string()
                : " (skipped: " + idx.skipped[0].reason +
                      (idx.skipped.size() > 1
                           ? " and " + std::to_string(idx.skipped.size() - 1) +
                                 " more"
                           : "") +
                      ")";
        throw DataError("data '" + o.root + "': the " + split_name(s) +
                        " split has no '" +
                        (label ? idx.positive : idx.negative) + "' images" +
                        skipped + "; " + kLayoutHelp);
      }
    }
  }
}

}  // namespace

DatasetIndex index_dataset(const DatasetOptions& o) {
  check_root(o);
  DatasetIndex idx;
  idx.root = o.root;
  fs::path root(o.root);
  // The root itself must be listable; problems below it are bad entries.
  {
    std::error_code ec;
    fs::directory_iterator probe(root, ec);
    if (ec) throw DataError("data folder '" + o.root + "' " + fs_problem(ec));
  }
  const Problems problems{o.skip_bad ? &idx.skipped : nullptr,
                          "; fix or remove it, or pass --skip-bad to load "
                          "the rest"};
  auto top = subdirs(root, problems);
  auto has = [&](const char* n) {
    return std::find(top.begin(), top.end(), n) != top.end();
  };
  if (has("train")) {
    if (!has("val") || !has("test")) {
      throw DataError("data '" + o.root +
                      "' has train/ but not both val/ and test/; " +
                      kLayoutHelp);
    }
    index_split_layout(idx, root, problems, o);
  } else {
    index_flat_layout(idx, top, root, problems, o);
  }
  check_every_split(idx, o);
  return idx;
}

torch::Tensor ImageSet::float_images() const {
  return images.to(torch::kFloat32).div_(255.0f);
}

const ImageSet& Dataset::split(Split s) const {
  auto it = splits.find(s);
  if (it == splits.end()) {
    throw DataError(std::string("split '") + split_name(s) + "' not loaded");
  }
  return it->second;
}

ImageSet Dataset::train_val() const {
  return concat({&split(Split::kTrain), &split(Split::kVal)});
}

ImageSet concat(const std::vector<const ImageSet*>& sets) {
  ImageSet out;
  std::vector<torch::Tensor> imgs, labels;
  for (const ImageSet* s : sets) {
    imgs.push_back(s->images);
    labels.push_back(s->labels);
    out.paths.insert(out.paths.end(), s->paths.begin(), s->paths.end());
    out.infos.insert(out.infos.end(), s->infos.begin(), s->infos.end());
    out.pixel_hashes.insert(out.pixel_hashes.end(), s->pixel_hashes.begin(),
                            s->pixel_hashes.end());
  }
  out.images = torch::cat(imgs, 0);
  out.labels = torch::cat(labels, 0);
  return out;
}

namespace {

/// Each sample's file stamp and record (from the cache or decoded now), or
/// the error that stopped it.
struct Loaded {
  std::vector<FileStamp> stamps;
  std::vector<const CacheRecord*> rec;
  std::vector<CacheRecord> fresh;
  std::vector<std::string> errors;
  std::vector<size_t> todo;  ///< samples not (validly) in the cache
};

Loaded look_up(const std::vector<Sample>& samples,
               const std::unordered_map<std::string, CacheRecord>& cache) {
  const size_t n = samples.size();
  Loaded l;
  l.fresh.resize(n);
  l.rec.assign(n, nullptr);
  l.errors.resize(n);
  l.stamps.resize(n);
  for (size_t i = 0; i < n; ++i) {
    l.stamps[i] = stamp(samples[i].path);
    auto it = cache.find(samples[i].path);
    if (it != cache.end() && it->second.file_size == l.stamps[i].size &&
        it->second.mtime_ns == l.stamps[i].mtime_ns) {
      l.rec[i] = &it->second;
    } else {
      l.todo.push_back(i);
    }
  }
  return l;
}

// Decodes and resizes l.todo on worker threads.
void decode_missing(const std::vector<Sample>& samples,
                    const DatasetOptions& o,
                    Loaded& l) {
  if (l.todo.empty()) return;
  const size_t px = static_cast<size_t>(o.size) * o.size;
  const auto& todo = l.todo;
  int threads = o.threads > 0
                    ? o.threads
                    : static_cast<int>(std::thread::hardware_concurrency());
  threads = std::max(1, std::min<int>(threads, static_cast<int>(todo.size())));
  Progress bar("decode", static_cast<long>(todo.size()), todo.size() > 200);
  std::mutex bar_mutex;
  std::atomic<size_t> next{0};
  auto work = [&] {
    torch::NoGradGuard no_grad;
    for (size_t k = next++; k < todo.size(); k = next++) {
      const size_t i = todo[k];
      try {
        GrayImage img = read_gray(samples[i].path, o.limits);
        torch::Tensor small = resize_square(img.pixels, o.size)
                                  .mul(255.0f)
                                  .round_()
                                  .to(torch::kUInt8)
                                  .contiguous();
        CacheRecord& r = l.fresh[i];
        r.file_size = l.stamps[i].size;
        r.mtime_ns = l.stamps[i].mtime_ns;
        r.info = img.info;
        r.pixel_hash = img.pixel_hash;
        r.pixels.assign(small.data_ptr<uint8_t>(),
                        small.data_ptr<uint8_t>() + px);
        l.rec[i] = &r;
      } catch (const Error& e) {
        l.errors[i] = e.what();
      } catch (const std::exception& e) {
        l.errors[i] = "image '" + samples[i].path + "': " + e.what();
      }
      std::lock_guard<std::mutex> lock(bar_mutex);
      bar.step(1);
    }
  };
  // Per-image tensor ops are tiny: one intra-op thread per worker.
  const int saved_threads = torch::get_num_threads();
  torch::set_num_threads(1);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(work);
  for (auto& t : pool) t.join();
  torch::set_num_threads(saved_threads);
  bar.finish();
}

// The unreadable images go to ds.skipped; without --skip-bad the first is
// a DataError naming it. Returns how many there were.
size_t collect_bad(const std::vector<Sample>& samples,
                   const Loaded& l,
                   const DatasetOptions& o,
                   Dataset& ds) {
  size_t bad = 0;
  for (size_t i = 0; i < samples.size(); ++i) {
    if (l.errors[i].empty()) continue;
    ++bad;
    ds.skipped.push_back({samples[i].path, l.errors[i]});
  }
  if (bad > 0 && !o.skip_bad) {
    std::string msg =
        *std::find_if(l.errors.begin(), l.errors.end(),
                      [](const std::string& e) { return !e.empty(); });
    if (bad > 1) msg += " (and " + std::to_string(bad - 1) + " more bad files)";
    msg += "; fix or remove it, or pass --skip-bad to load the rest";
    throw DataError(msg);
  }
  return bad;
}

ImageSet assemble(Split s,
                  const std::vector<Sample>& samples,
                  const Loaded& l,
                  int size) {
  const size_t px = static_cast<size_t>(size) * size;
  std::vector<size_t> ids;
  for (size_t i = 0; i < samples.size(); ++i) {
    if (samples[i].split == s && l.rec[i]) ids.push_back(i);
  }
  ImageSet set;
  const auto m = static_cast<int64_t>(ids.size());
  set.images = torch::empty({m, 1, size, size}, torch::kUInt8);
  set.labels = torch::empty({m}, torch::kFloat32);
  auto* dst = set.images.data_ptr<uint8_t>();
  auto* lab = set.labels.data_ptr<float>();
  for (int64_t j = 0; j < m; ++j) {
    const size_t i = ids[static_cast<size_t>(j)];
    std::memcpy(dst + static_cast<size_t>(j) * px, l.rec[i]->pixels.data(), px);
    lab[j] = static_cast<float>(samples[i].label);
    set.paths.push_back(samples[i].path);
    set.infos.push_back(l.rec[i]->info);
    set.pixel_hashes.push_back(l.rec[i]->pixel_hash);
  }
  return set;
}

}  // namespace

Dataset load_dataset(const DatasetOptions& o) {
  if (o.size < 16 || o.size > 1024) {
    throw ConfigError("--size " + std::to_string(o.size) +
                      ": use a side length between 16 and 1024 pixels");
  }
  const auto t0 = std::chrono::steady_clock::now();
  Dataset ds;
  ds.index = index_dataset(o);
  // Entries that could not be listed (--skip-bad) lead the skipped list.
  ds.skipped = ds.index.skipped;
  const auto& samples = ds.index.samples;
  const size_t n = samples.size();

  std::string abs_root = fs::weakly_canonical(fs::absolute(o.root)).string();
  std::unordered_map<std::string, CacheRecord> cache;
  fs::path cpath;
  if (!o.cache_dir.empty()) {
    cpath = cache_path(o, abs_root);
    cache = read_cache(cpath, o.size);
  }
  Loaded l = look_up(samples, cache);
  decode_missing(samples, o, l);
  const size_t bad = collect_bad(samples, l, o, ds);
  if (!o.cache_dir.empty() && (!l.todo.empty() || cache.size() != n - bad)) {
    std::vector<std::pair<std::string, const CacheRecord*>> keep;
    for (size_t i = 0; i < n; ++i) {
      if (l.rec[i]) keep.emplace_back(samples[i].path, l.rec[i]);
    }
    ensure_dir(o.cache_dir);
    write_cache(cpath, o.size, keep);
  }
  for (Split s : kAllSplits)
    ds.splits.emplace(s, assemble(s, samples, l, o.size));
  ds.stats.decoded = static_cast<int64_t>(l.todo.size() - bad);
  ds.stats.from_cache = static_cast<int64_t>(n - l.todo.size());
  ds.stats.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  return ds;
}

}  // namespace cxr::data
