// What the Keras backbones share through KerasBackboneImpl: each one's
// BatchNormalization settings on every BN layer (torch momentum = 1 - Keras'),
// and the refusal of a classification top with no classes, naming the
// architecture.
#include "cxr/models/backbone.h"

#include <gtest/gtest.h>

#include "cxr/common/error.h"
#include "cxr/models/mobilenet_v2.h"
#include "cxr/models/resnet50_v2.h"

namespace cxr::models {
namespace {

/// (eps, momentum) of every BatchNorm2d of `m`; fails if there is none.
std::vector<std::pair<double, double>> bn_settings(torch::nn::Module& m) {
  std::vector<std::pair<double, double>> out;
  for (const auto& sub : m.modules(/*include_self=*/false)) {
    if (auto* bn = sub->as<torch::nn::BatchNorm2dImpl>()) {
      out.emplace_back(bn->options.eps(), bn->options.momentum().value());
    }
  }
  EXPECT_FALSE(out.empty());
  return out;
}

TEST(KerasBackbone, EveryBatchNormHasTheBackbonesKerasSettings) {
  MobileNetV2 mobilenet(false);
  for (const auto& [eps, momentum] : bn_settings(*mobilenet)) {
    EXPECT_DOUBLE_EQ(eps, 1e-3);
    EXPECT_DOUBLE_EQ(momentum, 1.0 - 0.999);
  }
  ResNet50V2 resnet(false);
  for (const auto& [eps, momentum] : bn_settings(*resnet)) {
    EXPECT_DOUBLE_EQ(eps, 1.001e-5);
    EXPECT_DOUBLE_EQ(momentum, 1.0 - 0.99);
  }
}

TEST(KerasBackbone, ATopWithoutClassesIsAConfigErrorNamingTheBackbone) {
  auto message = [](auto make) -> std::string {
    try {
      make();
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(message([] { MobileNetV2(true, 0); }),
            "MobileNetV2: classes must be >= 1, got 0");
  EXPECT_EQ(message([] { ResNet50V2(true, -3); }),
            "ResNet50V2: classes must be >= 1, got -3");
  // Without the top the class count is not used.
  EXPECT_EQ(message([] { MobileNetV2(false, 0); }), "");
}

}  // namespace
}  // namespace cxr::models
