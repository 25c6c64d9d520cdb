#pragma once
/// `cxr explain`: Grad-CAM panels (original | COVID evidence | Normal
/// evidence), one JSON record per image, an index page and optional trust
/// checks, for image files, folders or a split of the run's data (e.g. every
/// misclassified test image, the study's Fig. 8). The model is loaded once
/// and images go through it in batches.
#include <torch/torch.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cxr/explain/trust.h"

namespace cxr::explain {

struct ExplainOptions {
  /// Run directory written by cxr train.
  std::string run_dir;
  /// Image files or folders (searched recursively for PNG/JPEG/BMP). A file
  /// whose parent folder is named like one of the run's classes gets that
  /// class as its true label.
  std::vector<std::string> inputs;
  /// Explain a split of the run's data instead: train, val or test.
  std::string split;
  /// Only the images of `split` the run's threshold gets wrong.
  bool misclassified = false;
  /// Data root for `split`; "" = the one recorded in the run.
  std::string data_root;
  /// Decoded-image cache for `split` ("" = none).
  std::string cache_dir;
  /// Output folder; "" = RUN/explain (docs/run-dir.md).
  std::string out_dir;
  /// Grad-CAM layer; "" = the model's default.
  std::string layer;
  /// Explain at most this many images (0 = all).
  int64_t limit = 0;
  /// Run the trust checks (randomisation, deletion, energy) too.
  bool trust = false;
  TrustOptions trust_options;
  std::string device = "auto";
  /// Images per forward pass. Small on purpose: on the CPU the cost per
  /// image grows with the batch once activations leave the cache (baseline,
  /// 128 px, 1 thread: 77 img/s at 4, 63 at 8, 47 at 32); pass more for a
  /// GPU.
  int batch_size = 8;
  /// Print a progress bar.
  bool progress = true;
  /// With `split`: leave unreadable images out (listed in summary.json and
  /// index.html as "skipped") instead of stopping at the first with a
  /// DataError naming it.
  bool skip_bad = false;
  /// Also write each image's raw maps as NumPy files, maps/NNNN_<name>_
  /// <class>.npy (write_npy), for tools outside cxr.
  bool save_maps = false;
};

/// A file of the data set that --skip-bad left out.
struct SkippedImage {
  std::string file;
  std::string reason;
  std::string split;  ///< "" when the file could not even be listed
};

/// One explained image; its files are panels/, thumbs/ and records/
/// `name`.png/.json (and maps/`name`_<class>.npy with save_maps).
struct ExplainedImage {
  std::string name;  ///< NNNN_<file stem>
  std::string file;
  bool predicted_positive = false;
  double probability = NAN;  ///< calibrated P(positive), as on the panel
  int label = -1;            ///< 1 / 0, -1 when unknown
};

/// What explain_run did; to_json() is summary.json.
struct ExplainResult {
  std::string run, out, arch, layer, device;
  std::vector<std::string> layers;  ///< every layer Grad-CAM can use
  std::string source;               ///< e.g. "misclassified test images"
  double threshold = 0.5;           ///< on the raw probability
  std::string positive, negative;
  int64_t images = 0, labelled = 0, misclassified = 0;
  double gradcam_seconds = 0;  ///< prediction + both maps
  double seconds = 0;          ///< everything
  std::string created;         ///< UTC, ISO 8601
  /// "" for image files (then `inputs`), else the split.
  std::string split;
  int64_t split_size = 0;
  bool only_misclassified = false;
  std::vector<SkippedImage> skipped;
  std::vector<std::string> inputs;
  bool maps_saved = false;
  std::vector<ExplainedImage> explained;  ///< in input order
  /// With ExplainOptions::trust (and at least one image).
  std::optional<TrustReport> trust;

  double images_per_second() const;
  /// `skipped` as summary.json has it: [{file, reason, split}].
  nlohmann::json skipped_json() const;
  /// summary.json: the fields above but `explained` (see records/) and the
  /// trust report without its per-image values (see trust.json).
  nlohmann::json to_json() const;
};

/// Explains the images and writes into out_dir: panels/NNNN_<name>.png,
/// records/NNNN_<name>.json, thumbs/NNNN_<name>.png, index.html and
/// summary.json (ExplainResult::to_json; with trust, also trust.json; with
/// save_maps, maps/). Throws ConfigError (flags), DataError (unreadable
/// input) or ModelError (run), each naming the flag or file and the fix.
ExplainResult explain_run(const ExplainOptions& options);

/// What `cxr explain` prints: counts and speed, the trust checks (the
/// randomisation curve, deletion, energy) and the files written.
std::string format_summary(const ExplainResult& result);

/// The layers Grad-CAM can use on a run's model, input to output.
struct LayerList {
  std::vector<std::string> names;
  std::string default_layer;
  /// One name a line, the default marked "  (default)".
  std::string format() const;
};

/// Reads the run folder's model (on the CPU). ModelError for a bad run.
LayerList list_layers(const std::string& run_dir);

/// Writes a 2-D float tensor as a NumPy .npy file (format 1.0, '<f4',
/// C order, shape [rows, cols]); atomic. ConfigError for another rank,
/// IoError naming the path when it cannot be written.
void write_npy(const std::string& path, const torch::Tensor& map);

/// What a panel says about its image.
struct PanelInfo {
  std::string title;  ///< e.g. the file name
  std::string positive = "COVID";
  std::string negative = "Normal";
  double probability = NAN;  ///< P(positive), calibrated where the run is
  double threshold = 0.5;
  int label = -1;  ///< 1 / 0, -1 when unknown
  /// Out-of-distribution warning shown under the title ("" = none).
  std::string warning;
};

/// One PNG: original | positive-class map | negative-class map, maps
/// overlaid on the original with viridis and a colour bar; captions give
/// the prediction, P(positive) and the true label when known.
/// gray, positive_map, negative_map: [H, W] float in [0, 1].
void save_panel(const torch::Tensor& gray,
                const torch::Tensor& positive_map,
                const torch::Tensor& negative_map,
                const PanelInfo& info,
                const std::string& png_path);

}  // namespace cxr::explain
