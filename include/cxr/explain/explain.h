#pragma once
/// `cxr explain`: Grad-CAM panels (original | COVID evidence | Normal
/// evidence), one JSON record per image, an index page and optional trust
/// checks, for image files, folders or a split of the run's data (e.g. every
/// misclassified test image, the study's Fig. 8). The model is loaded once
/// and images go through it in batches.
#include <torch/torch.h>

#include <nlohmann/json.hpp>
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
};

/// Explains the images and writes into out_dir: panels/NNNN_<name>.png,
/// records/NNNN_<name>.json, thumbs/NNNN_<name>.png, index.html and
/// summary.json (whose content is returned; with trust, also trust.json).
/// Throws ConfigError (flags), DataError (unreadable input) or ModelError
/// (run), each naming the flag or file and the fix.
nlohmann::json explain_run(const ExplainOptions& options);

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
