#pragma once
/// A run directory is the contract between stages (docs/run-dir.md):
///   config.json   model config, training options, classes, threshold, data
///   model.safetensors  weights (parameters and buffers, safetensors layout,
///                 models/weights_file.h; run folders of older versions have
///                 model.pt, a torch archive, which still loads)
///   history.csv   one row per epoch;   curves.png  training curves
///   state.pt      resumable training state (removed when training ends)
/// Writes are atomic (temp file + rename).
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "cxr/models/classifier.h"
#include "cxr/train/trainer.h"

namespace cxr::train {

struct RunMeta {
  models::ModelConfig model;
  TrainOptions train;
  std::string positive = "COVID";
  std::string negative = "Normal";
  /// Decision threshold on P(positive) and how it was chosen.
  double threshold = 0.5;
  std::string threshold_rule = "default 0.5";
  /// Data the model was trained on: root, layout, size, counts, seed.
  nlohmann::json data;
  /// Training summary: best epoch, wall time, throughput, device.
  nlohmann::json result;
  std::string cxr_version;
  std::string created;
  /// Written by infer::fit_trust (calibration, OOD detector summary, the
  /// threshold on the calibrated probability); kept as they are here.
  nlohmann::json calibration;
  nlohmann::json ood;
  std::optional<double> threshold_calibrated;

  nlohmann::json to_json() const;
  static RunMeta from_json(const nlohmann::json& j, const std::string& where);
};

/// Saves weights and config.json into `dir` (created if needed).
void save_run(const std::string& dir,
              models::ClassifierImpl& model,
              const RunMeta& meta);

struct LoadedRun {
  models::Classifier model;
  RunMeta meta;
  std::string dir;
};

/// Loads a run for inference on `device` (eval mode). Throws ModelError with
/// the folder and the fix when config.json or the weights are missing, corrupt
/// or does not match the architecture.
LoadedRun load_run(const std::string& dir, const torch::Device& device);

/// Saves / loads the resumable state (model weights are in state.pt too).
void save_resume_state(const std::string& dir,
                       models::ClassifierImpl& model,
                       const TrainState& state,
                       const std::vector<torch::Tensor>& best_state);
/// Returns false when `dir` has no state.pt. Throws ModelError if corrupt.
bool load_resume_state(const std::string& dir,
                       models::ClassifierImpl& model,
                       ResumeState* out);
void remove_resume_state(const std::string& dir);

/// An exclusive lock on a folder that a command writes (a run, a tune or a
/// study folder): flock(2) on DIR/.cxr.lock, held until destruction (or the
/// process ends, however it ends: the kernel drops the lock). Creates DIR.
/// A second writer fails at once with IoError (exit 5): "'DIR' is in use by
/// another cxr process (pid N); ...". Every command that writes into a run
/// folder takes it: train, tune and study, and calibrate, evaluate and
/// explain when their output goes inside the run (the default; the CLI's
/// lock_run_for_writing). Pure readers (predict, serve, evaluate or explain
/// with --out elsewhere) do not lock. Locks are per open file, so one
/// process cannot take the same folder twice either.
class DirLock {
 public:
  explicit DirLock(const std::string& dir);
  ~DirLock();
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

 private:
  int fd_ = -1;
};

/// Name of the lock file inside a locked folder.
inline constexpr const char* kLockFile = ".cxr.lock";

/// Removes `dir` if it holds nothing but the lock file: a command that
/// created its folder to lock it and then failed leaves nothing behind.
void remove_if_only_lock(const std::string& dir);

/// UTC timestamp "YYYY-MM-DDTHH:MM:SSZ".
std::string utc_now();

}  // namespace cxr::train
