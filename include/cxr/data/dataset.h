#pragma once
/// Dataset discovery (split or flat layouts), seeded stratified splitting,
/// cached decoding into uint8 tensors.
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "cxr/data/image_io.h"
#include "cxr/data/listing.h"

namespace cxr::data {

enum class Split { kTrain = 0, kVal = 1, kTest = 2 };
inline constexpr Split kAllSplits[] = {Split::kTrain, Split::kVal,
                                       Split::kTest};
const char* split_name(Split s);
/// Parses "train", "val" or "test"; throws ConfigError otherwise.
Split parse_split(const std::string& name);

struct DatasetOptions {
  /// Dataset root: `ROOT/{train,val,test}/<CLASS>/*` (split layout) or
  /// `ROOT/<CLASS>/*`, `ROOT/<CLASS>/images/*` (flat layout).
  std::string root;
  /// Name of the positive class folder (label 1).
  std::string positive = "COVID";
  /// Flat layout only: fractions for train and val; test gets the rest.
  double train_fraction = 1600.0 / 2200.0;
  double val_fraction = 400.0 / 2200.0;
  /// Seed of the flat-layout split.
  uint64_t seed = 42;
  /// Side length in pixels of the square images handed to models.
  int size = 128;
  /// Load the rest and list bad files instead of failing on the first.
  bool skip_bad = false;
  /// Folder of the decoded cache; empty disables caching.
  std::string cache_dir;
  /// Decoding threads (<= 0: all hardware threads).
  int threads = 0;
  DecodeLimits limits;
};

struct Sample {
  std::string path;  ///< absolute or root-relative path as found
  int label = 0;     ///< 1 = positive class
  Split split = Split::kTrain;
};

struct DatasetIndex {
  std::string root;
  std::string layout;                ///< "split" or "flat"
  std::vector<std::string> classes;  ///< sorted class folder names
  std::string positive;              ///< positive class name
  std::string negative;              ///< the other class
  std::vector<Sample> samples;       ///< sorted by split, class, path
  /// With skip_bad: folder entries that could not be listed (a symlink
  /// loop, an unreadable folder); without it the first one throws.
  std::vector<BadFile> skipped;
};

/// Finds the images and assigns splits. Throws DataError/ConfigError with a
/// message naming the folder and the layouts that work. Listing uses the
/// error_code overloads of std::filesystem: a symlink loop or an unreadable
/// folder is a DataError naming it (or, with skip_bad, an entry of
/// `skipped`), never a std::filesystem_error.
DatasetIndex index_dataset(const DatasetOptions& options);

/// One split, decoded.
struct ImageSet {
  torch::Tensor images;  ///< [N, 1, S, S] uint8
  torch::Tensor labels;  ///< [N] float32, 1 = positive
  std::vector<std::string> paths;
  std::vector<ImageInfo> infos;        ///< the files before resizing
  std::vector<uint64_t> pixel_hashes;  ///< hash of full-resolution pixels
  int64_t size() const { return static_cast<int64_t>(paths.size()); }
  /// [N, 1, S, S] float32 in [0, 1].
  torch::Tensor float_images() const;
};

struct LoadStats {
  int64_t from_cache = 0;
  int64_t decoded = 0;
  double seconds = 0.0;
};

struct Dataset {
  DatasetIndex index;
  std::map<Split, ImageSet> splits;
  std::vector<BadFile> skipped;  ///< unlisted entries, then bad images
  LoadStats stats;
  const ImageSet& split(Split s) const;
  /// Train and val concatenated (the study's final refit data).
  ImageSet train_val() const;
};

/// Indexes, decodes (through the cache) and resizes every image.
Dataset load_dataset(const DatasetOptions& options);

/// A file --skip-bad left out, with the split its sample was in ("" for a
/// folder entry that could not even be listed: it has no split).
struct SkippedImage {
  std::string file, reason, split;
};
/// `dataset.skipped` with each file's split: evaluate (metrics.json) and
/// explain (summary.json) list them so, since the whole data set is loaded
/// and a bad image of another split must not be counted in this one.
std::vector<SkippedImage> skipped_images(const Dataset& dataset);

/// Concatenates image sets.
ImageSet concat(const std::vector<const ImageSet*>& sets);

}  // namespace cxr::data
