// The phases of a transfer model's training (trainer.cpp phases_of): a
// pretrained backbone is frozen while the head learns; a backbone from
// random initialisation trains from the first epoch (freezing it would fit
// a head to random features: `cxr train --model resnet50v2` without
// --weights did exactly that with the default flags).
#include "cxr/models/classifier.h"
#include "cxr/train/trainer.h"
#include "test_util.h"

namespace {

// How far the backbone's and the head's parameters moved in one epoch of
// the first phase (no fine-tuning phase).
std::pair<double, double> moves_in_first_phase(const std::string& pretrained) {
  cxr::models::ModelConfig c;
  c.arch = "mobilenetv2";
  c.input_size = 32;
  c.dropout = 0.0;
  c.pretrained = pretrained;  // a record only: the weights stay random
  torch::manual_seed(3);
  auto model = cxr::models::make_model(c);
  std::vector<std::pair<std::string, torch::Tensor>> before;
  for (const auto& p : model->named_parameters()) {
    before.emplace_back(p.key(), p.value().detach().clone());
  }
  auto o = cxr::testing::tiny_train_options();
  o.epochs = 1;
  o.fine_tune_epochs = 0;
  o.batch_size = 8;
  o.augment = false;
  o.train_on = "train+val";
  cxr::train::fit(*model, cxr::testing::synthetic(16, 1, 32), nullptr, o,
                  torch::kCPU);
  double backbone = 0, head = 0;
  const auto after = model->named_parameters();
  for (const auto& [name, t] : before) {
    const double d = (after[name] - t).abs().max().item<double>();
    double& into = name.rfind("backbone", 0) == 0 ? backbone : head;
    into = std::max(into, d);
  }
  return {backbone, head};
}

TEST(TransferPhases, RandomInitTrainsTheBackboneFromTheFirstEpoch) {
  const auto [backbone, head] = moves_in_first_phase("");
  EXPECT_GT(backbone, 1e-4) << "the random backbone was frozen";
  EXPECT_GT(head, 1e-4);
}

TEST(TransferPhases, APretrainedBackboneIsFrozenWhileTheHeadLearns) {
  const auto [backbone, head] = moves_in_first_phase("imagenet.h5");
  EXPECT_EQ(backbone, 0.0);
  EXPECT_GT(head, 1e-4);
}

}  // namespace
