#pragma once
/// The inference view of a run folder (docs/run-dir.md): what config.json
/// says about the model, its classes, its decision threshold, its
/// calibration and its out-of-distribution detector, and the weights in
/// model.safetensors (model.pt in run folders of older versions). Everything
/// that scores images reads runs through this header; only `cxr train` writes
/// them (train/run_dir.h).
#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <string>

#include "cxr/data/dataset.h"
#include "cxr/models/classifier.h"

namespace cxr::infer {

/// config.json's "format" for every run this cxr writes and reads.
inline constexpr const char* kRunFormat = "cxr-run/1";
/// Weights-file entry recording the input size the weights were trained at:
/// model.safetensors' __metadata__ (required), model.pt's archive (checked
/// when present). Written by train::save_run, checked by load_model.
inline constexpr const char* kInputSizeKey = "cxr_input_size";

/// Temperature scaling of the model's logit: P = sigmoid(logit / T).
struct Calibration {
  /// "none" (T = 1) or "temperature".
  std::string method = "none";
  double temperature = 1.0;
  /// Where T was fitted: "validation of this run", or the train-only run a
  /// refit carried it over from.
  std::string source;
  /// On the fitting data: {"n", "nll_before", "nll_after", "ece_before",
  /// "ece_after"} (empty when carried over).
  nlohmann::json fit = nlohmann::json::object();

  double apply(double logit) const;
  torch::Tensor apply(const torch::Tensor& logits) const;
  nlohmann::json to_json() const;
  /// Throws ModelError for a non-positive or non-finite temperature.
  static Calibration from_json(const nlohmann::json& j,
                               const std::string& where);
};

struct RunConfig {
  std::string dir;
  models::ModelConfig model;
  std::string positive = "COVID";
  std::string negative = "Normal";
  /// Decision: P_raw >= threshold, i.e. P_calibrated >= threshold_calibrated
  /// (the same decision, since calibration is monotone).
  double threshold = 0.5;
  std::string threshold_rule;
  Calibration calibration;
  /// The OOD detector's summary (see infer/ood.h); null when the run has
  /// none (a run made by an older cxr: fit one with `cxr calibrate`).
  nlohmann::json ood;
  nlohmann::json data, train, result;
  std::string status, cxr_version, created;

  /// "train" or "train+val".
  std::string train_on() const;
  double threshold_calibrated() const;
  /// DatasetOptions that reproduce the run's splits (root overridable).
  data::DatasetOptions data_options(const std::string& root_override,
                                    const std::string& cache_dir) const;
};

/// UTC timestamp "YYYY-MM-DDTHH:MM:SSZ" (run folders record when).
std::string utc_now();

/// Reads DIR/config.json. Throws ModelError naming the file and the fix when
/// the folder or file is missing, not a cxr run, incomplete or invalid.
RunConfig read_run_config(const std::string& dir);

/// Builds the model config.json describes and loads its weights into it,
/// refusing weights whose tensors do not match the config (ModelError).
/// DIR/model.safetensors is read by cxr's checked reader
/// (models/weights_file.h); only when it is absent, DIR/model.pt of an older
/// run folder is read with LibTorch's archive reader, which is trusted input
/// (docs/reliability.md). Eval mode, on `device`.
models::Classifier load_model(const std::string& dir,
                              const models::ModelConfig& config,
                              const torch::Device& device);

/// The pseudo-layer name for the input image itself in forward_logits'
/// `layers`: its features are the mean and standard deviation of each cell
/// of an 8 x 8 grid (128 values).
inline constexpr const char* kInputLayer = "input";

/// What forward() computes besides the logits.
struct ForwardOptions {
  int batch_size = 64;
  /// Layers whose features the detector reads (see forward()).
  std::vector<std::string> layers;
  /// Grad-CAM on this layer too ("" = no maps). A name from the model's
  /// tap_names(); the caller validates it (infer::GradCam does).
  std::string cam_layer;
};

/// All float32 on the CPU.
struct ForwardResult {
  torch::Tensor logits;  ///< [N]
  /// One [N, 2C] tensor per ForwardOptions::layers entry: the per-channel
  /// spatial mean and standard deviation of that layer's activation.
  std::vector<torch::Tensor> features;
  /// With cam_layer: Grad-CAM of the logit (evidence for the positive class)
  /// and of the negated logit, [N, S, S] in [0, 1]; undefined otherwise.
  torch::Tensor positive_maps, negative_maps;
};

/// Forward passes over uint8 images [N, 1, S, S] in batches (eval mode, the
/// model's previous mode restored), in the layout the device runs fastest.
/// Without cam_layer no graph is built; with it, one pass yields logits,
/// features and both maps (the gradient runs only from the logit back to
/// the tapped layer). Parameters' .grad are never touched.
ForwardResult forward(models::ClassifierImpl& model,
                      const torch::Tensor& images,
                      const torch::Device& device,
                      const ForwardOptions& options);

/// forward() for logits [N] (and, when `layers` is non-empty, `features`).
torch::Tensor forward_logits(models::ClassifierImpl& model,
                             const torch::Tensor& images,
                             const torch::Device& device,
                             int batch_size = 64,
                             const std::vector<std::string>& layers = {},
                             std::vector<torch::Tensor>* features = nullptr);

/// P(positive) (uncalibrated) for uint8 images [N, 1, S, S]: sigmoid of
/// forward_logits. [N] float32 on the CPU.
torch::Tensor predict_proba(models::ClassifierImpl& model,
                            const torch::Tensor& images,
                            const torch::Device& device,
                            int batch_size = 64);

}  // namespace cxr::infer
