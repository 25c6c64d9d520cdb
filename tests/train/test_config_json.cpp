// config.json's "model" and "train" objects (ModelConfig and TrainOptions):
// the exact keys and values a run folder stores, defaults for the keys an
// older run lacks, and the refusal of a model config without its arch or
// input size. Pins the format across the move from hand-written key tables
// to one field list per struct.
#include <gtest/gtest.h>

#include "cxr/common/error.h"
#include "cxr/models/classifier.h"
#include "cxr/train/trainer.h"

namespace {

using cxr::models::ModelConfig;
using cxr::train::TrainOptions;

TEST(ConfigJson, TrainOptionsWriteTheStoredKeys) {
  const auto expected = nlohmann::json::parse(R"({
    "optimizer": "adam", "lr": 0.001, "momentum": 0.9, "weight_decay": 0.0,
    "batch_size": 32, "epochs": 30, "patience": 5, "lr_patience": 3,
    "schedule": "plateau", "seed": 42, "augment": true,
    "augmentation": {"width_shift": 0.1, "height_shift": 0.0,
                     "rotation_deg": 15.0, "zoom": 0.2},
    "fine_tune_epochs": 0, "fine_tune_lr": 1e-05, "unfreeze_from": "",
    "train_on": "train", "keep": "best"})");
  EXPECT_EQ(TrainOptions().to_json(), expected);
  // --quiet is not part of the recipe.
  TrainOptions quiet;
  quiet.progress = false;
  EXPECT_EQ(quiet.to_json(), expected);
}

TEST(ConfigJson, TrainOptionsRoundTripAndDefaultMissingKeys) {
  TrainOptions o;
  o.optimizer = "sgd";
  o.lr = 0.25;
  o.seed = 1ULL << 62;
  o.augmentation.zoom = 0.05;
  o.unfreeze_from = "block_13_expand";
  o.keep = "last";
  const TrainOptions back = TrainOptions::from_json(o.to_json());
  EXPECT_EQ(back.to_json(), o.to_json());
  EXPECT_EQ(back.seed, 1ULL << 62);
  EXPECT_DOUBLE_EQ(back.augmentation.zoom, 0.05);

  // An older run: a few keys, no "augmentation".
  const auto old = TrainOptions::from_json({{"lr", 0.5}, {"epochs", 7}});
  EXPECT_DOUBLE_EQ(old.lr, 0.5);
  EXPECT_EQ(old.epochs, 7);
  EXPECT_EQ(old.optimizer, "adam");
  EXPECT_DOUBLE_EQ(old.augmentation.width_shift, 0.1);
  EXPECT_DOUBLE_EQ(old.augmentation.rotation_deg, 15.0);
  // A partial "augmentation" keeps the other ranges' defaults.
  const auto part =
      TrainOptions::from_json({{"augmentation", {{"rotation_deg", 3.0}}}});
  EXPECT_DOUBLE_EQ(part.augmentation.rotation_deg, 3.0);
  EXPECT_DOUBLE_EQ(part.augmentation.zoom, 0.2);
}

TEST(ConfigJson, ModelConfigWritesTheStoredKeys) {
  const auto expected = nlohmann::json::parse(R"({
    "arch": "baseline", "input_size": 128, "filters": [32, 64, 128, 128],
    "batch_norm": true, "dropout": 0.3, "head_units": 128, "mean": 0.5,
    "std": 0.25, "pretrained": ""})");
  EXPECT_EQ(ModelConfig().to_json(), expected);
  ModelConfig c;
  c.arch = "mobilenetv2";
  c.input_size = 96;
  c.filters = {4, 8};
  c.pretrained = "imagenet.h5";
  EXPECT_EQ(ModelConfig::from_json(c.to_json()).to_json(), c.to_json());
  // Only arch and input_size are required.
  const auto m =
      ModelConfig::from_json({{"arch", "resnet50v2"}, {"input_size", 64}});
  EXPECT_EQ(m.arch, "resnet50v2");
  EXPECT_EQ(m.input_size, 64);
  EXPECT_EQ(m.filters, ModelConfig().filters);
  EXPECT_DOUBLE_EQ(m.std, 0.25);
}

TEST(ConfigJson, ModelConfigWithoutArchOrSizeOrWithAWrongTypeIsAModelError) {
  auto message = [](const nlohmann::json& j) -> std::string {
    try {
      ModelConfig::from_json(j);
    } catch (const cxr::ModelError& e) {
      return e.what();
    }
    return "";
  };
  const std::string no_arch = message({{"input_size", 64}});
  EXPECT_NE(no_arch.find("model config is incomplete"), std::string::npos);
  EXPECT_NE(no_arch.find("arch"), std::string::npos) << no_arch;
  const std::string no_size = message({{"arch", "baseline"}});
  EXPECT_NE(no_size.find("input_size"), std::string::npos) << no_size;
  EXPECT_NE(message({{"arch", 3}, {"input_size", 64}}).find("wrong type"),
            std::string::npos);
  EXPECT_NE(
      message({{"arch", "baseline"}, {"input_size", 64}, {"dropout", "high"}})
          .find("model config is incomplete"),
      std::string::npos);
}

}  // namespace
