// TrainOptions: the checks of its flags and config.json's "train" object.
#include <nlohmann/json.hpp>

#include "cxr/common/error.h"
#include "cxr/train/trainer.h"

namespace cxr::train {

void TrainOptions::validate() const {
  if (optimizer != "adam" && optimizer != "sgd" && optimizer != "rmsprop") {
    throw ConfigError("--optimizer " + optimizer +
                      ": use adam, sgd or rmsprop");
  }
  if (!(lr > 0 && lr < 10)) throw ConfigError("--lr must be in (0, 10)");
  if (!(fine_tune_lr > 0 && fine_tune_lr < 10)) {
    throw ConfigError("--fine-tune-lr must be in (0, 10)");
  }
  if (batch_size < 1 || batch_size > 4096) {
    throw ConfigError("--batch-size must be in 1..4096");
  }
  // Checked here, not left to torch: a negative momentum or decay made
  // torch throw an internal error (exit 70) after the data was loaded.
  if (!(momentum >= 0 && momentum < 1)) {
    throw ConfigError("--momentum must be in [0, 1) (sgd only)");
  }
  if (!(weight_decay >= 0 && weight_decay < 1)) {
    throw ConfigError("--weight-decay must be in [0, 1)");
  }
  if (epochs < 0 || epochs > 10000)
    throw ConfigError("--epochs must be 1..10000");
  if (fine_tune_epochs < 0 || fine_tune_epochs > 10000)
    throw ConfigError("--fine-tune-epochs must be 0..10000");
  // 0 epochs would save the untrained initial weights as the run's model.
  if (epochs + fine_tune_epochs == 0) {
    throw ConfigError(
        "--epochs 0 trains nothing and would write an untrained model; give "
        "--epochs N >= 1");
  }
  if (patience < 0) throw ConfigError("--patience must be >= 0");
  if (lr_patience < 0) throw ConfigError("--lr-patience must be >= 0");
  if (schedule != "plateau" && schedule != "cosine") {
    throw ConfigError("--schedule " + schedule + ": use plateau or cosine");
  }
  if (train_on != "train" && train_on != "train+val") {
    throw ConfigError("--train-on " + train_on + ": use train or train+val");
  }
  if (keep != "best" && keep != "last") {
    throw ConfigError("--keep " + keep + ": use best or last");
  }
  augmentation.validate();
}

}  // namespace cxr::train

// config.json's "train" object: one field list for both directions (keys are
// the member names; a missing key keeps the default, as for an older run).
namespace cxr::augment {
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(
    AugmentOptions, width_shift, height_shift, rotation_deg, zoom)
}  // namespace cxr::augment

namespace cxr::train {

// Packed by hand: clang-format would put one name on each line.
// clang-format off
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(TrainOptions,
    optimizer, lr, momentum, weight_decay, batch_size, epochs, patience,
    lr_patience, schedule, seed, augment, augmentation, fine_tune_epochs,
    fine_tune_lr, unfreeze_from, train_on, keep)
// clang-format on

nlohmann::json TrainOptions::to_json() const {
  return *this;
}

TrainOptions TrainOptions::from_json(const nlohmann::json& j) {
  return j.get<TrainOptions>();
}

}  // namespace cxr::train
