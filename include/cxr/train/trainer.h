#pragma once
/// The training loop: shuffled mini-batches, on-device augmentation, binary
/// cross-entropy with logits, early stopping on validation loss with the best
/// weights restored, per-epoch history, resumable checkpoints.
#include <torch/torch.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cxr/augment/augment.h"
#include "cxr/data/dataset.h"
#include "cxr/infer/run_config.h"
#include "cxr/models/classifier.h"
#include "cxr/models/layout.h"

namespace cxr::train {

struct TrainOptions {
  /// adam | sgd (with momentum) | rmsprop
  std::string optimizer = "adam";
  /// Learning rate of phase 1.
  double lr = 1e-3;
  /// SGD momentum (also RMSprop momentum).
  double momentum = 0.9;
  /// L2 weight decay.
  double weight_decay = 0.0;
  /// Mini-batch size (images).
  int batch_size = 32;
  /// Maximum epochs of phase 1.
  int epochs = 30;
  /// Early stopping: epochs without val-loss improvement (0 = off).
  int patience = 5;
  /// Halve the learning rate after this many epochs without improvement
  /// (0 = off). Must be < patience to matter.
  int lr_patience = 3;
  /// Learning-rate schedule within each phase: "plateau" (constant, halved
  /// by lr_patience) or "cosine" (per epoch from lr down to lr/100 over the
  /// phase's epochs; lr_patience is then ignored).
  std::string schedule = "plateau";
  /// Seed of weights, shuffling, augmentation and dropout.
  uint64_t seed = 42;
  /// Augment training batches.
  bool augment = true;
  augment::AugmentOptions augmentation;
  /// Transfer models: phase 2 (backbone unfrozen) epochs; 0 = no phase 2.
  int fine_tune_epochs = 0;
  /// Learning rate of phase 2.
  double fine_tune_lr = 1e-5;
  /// Phase 2: unfreeze only from this Keras layer on ("" = whole backbone).
  std::string unfreeze_from;
  /// "train" (early stopping on val) or "train+val" (fixed epochs, refit).
  std::string train_on = "train";
  /// With a validation split: "best" restores the weights of the epoch with
  /// the lowest val loss (also between phases); "last" keeps the weights the
  /// schedule ends with, as a refit on train+val does, so that validation
  /// describes the model a refit of the same recipe yields.
  std::string keep = "best";
  /// Print a progress bar.
  bool progress = true;

  /// Throws ConfigError naming the bad flag.
  void validate() const;
  nlohmann::json to_json() const;
  static TrainOptions from_json(const nlohmann::json& j);
};

struct EpochRecord {
  int epoch = 0;      ///< 1-based, counting across phases
  std::string phase;  ///< "train", "frozen" or "fine-tune"
  double lr = 0;
  double train_loss = 0, train_accuracy = 0, train_precision = 0,
         train_recall = 0;
  double val_loss = NAN, val_accuracy = NAN, val_precision = NAN,
         val_recall = NAN, val_auc = NAN;
  double seconds = 0;
};

struct FitResult {
  std::vector<EpochRecord> history;
  int best_epoch = 0;  ///< epoch whose weights were kept
  double best_val_loss = NAN;
  bool stopped_early = false;
  double seconds = 0;
  int64_t images_seen = 0;
  double images_per_second() const {
    return seconds > 0 ? static_cast<double>(images_seen) / seconds : 0.0;
  }
};

/// Called after each epoch (e.g. to write a resumable checkpoint). The
/// trainer's own state is passed so it can be saved.
struct TrainState {
  const FitResult* result = nullptr;
  torch::optim::Optimizer* optimizer = nullptr;
  int phase_index = 0;  ///< 0 = phase 1, 1 = fine-tune
  int epoch_in_phase = 0;
  int bad_epochs = 0;
  double lr = 0;
};
using EpochCallback = std::function<void(const TrainState&)>;

/// Where to resume from (filled from a checkpoint by RunDir).
struct ResumeState {
  FitResult result;
  int phase_index = 0;
  int epoch_in_phase = 0;
  int bad_epochs = 0;
  double lr = 0;
  /// Best weights so far (restored at the end).
  std::vector<torch::Tensor> best_state;
  /// Optimizer state archive, loaded into the new optimizer.
  std::string optimizer_archive;
};

/// Trains `model` in place on `train` (images uint8 [N,1,S,S], labels [N]),
/// validating on `val` when given (required unless train_on=train+val).
/// Restores the best weights when early stopping applies.
FitResult fit(models::ClassifierImpl& model,
              const data::ImageSet& train,
              const data::ImageSet* val,
              const TrainOptions& options,
              const torch::Device& device,
              const EpochCallback& on_epoch = nullptr,
              const ResumeState* resume = nullptr);

/// Device layouts (models/layout.h) and batched inference
/// (infer/run_config.h), under the names the trainer's callers know.
using infer::predict_proba;
using models::channels_last_on;
using models::device_layout;
using models::restore;
using models::snapshot;
using models::use_device_layout;

/// Writes history.csv atomically.
void write_history_csv(const std::string& path,
                       const std::vector<EpochRecord>& history);
/// Reads history.csv (for resume and reports).
std::vector<EpochRecord> read_history_csv(const std::string& path);
/// Loss and accuracy curves, train vs val, both phases (PNG).
void plot_history(const std::vector<EpochRecord>& history,
                  const std::string& title,
                  const std::string& png_path,
                  int best_epoch);

}  // namespace cxr::train
