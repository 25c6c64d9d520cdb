// The training loop on a tiny synthetic task: learning, early stopping with
// best-weight restore, determinism, checkpoints and resume.
#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/models/baseline.h"
#include "cxr/train/run_dir.h"
#include "cxr/train/trainer.h"
#include "test_util.h"

namespace {

using cxr::testing::synthetic;
using cxr::testing::TempDir;
using cxr::testing::tiny_config;
namespace fs = std::filesystem;

// Augmentation on (the default), as in real training.
cxr::train::TrainOptions quick_options() {
  return cxr::testing::tiny_train_options();
}

const torch::Device kCpu(torch::kCPU);

TEST(Trainer, LearnsAnEasyTask) {
  auto train = synthetic(64, 1), val = synthetic(32, 2);
  torch::manual_seed(0);
  cxr::models::BaselineCnn model(tiny_config());
  auto r = cxr::train::fit(*model, train, &val, quick_options(), kCpu);
  ASSERT_EQ(r.history.size(), 6u);
  EXPECT_GT(r.history.back().val_accuracy, 0.9);
  EXPECT_LT(r.history.back().train_loss, r.history.front().train_loss);
  EXPECT_EQ(r.images_seen, 6 * 64);
  auto p = cxr::train::predict_proba(*model, val.images, kCpu);
  auto acc = ((p > 0.5).to(torch::kFloat32) == val.labels)
                 .to(torch::kFloat32)
                 .mean()
                 .item<float>();
  EXPECT_GT(acc, 0.9f);
}

TEST(Trainer, SameSeedGivesIdenticalWeights) {
  auto train = synthetic(32, 1), val = synthetic(16, 2);
  auto run = [&] {
    torch::manual_seed(5);
    cxr::models::BaselineCnn m(tiny_config());
    auto o = quick_options();
    o.epochs = 2;
    cxr::train::fit(*m, train, &val, o, kCpu);
    return cxr::train::snapshot(*m);
  };
  auto a = run(), b = run();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i]));
}

TEST(Trainer, EarlyStoppingRestoresTheBestWeights) {
  // Validation labels are the opposite of what training teaches, so
  // validation loss gets worse after the first epochs and training stops.
  auto train = synthetic(64, 1), val = synthetic(32, 2);
  val.labels = 1.0f - val.labels;
  torch::manual_seed(0);
  cxr::models::BaselineCnn model(tiny_config());
  auto o = quick_options();
  o.epochs = 30;
  o.patience = 2;
  o.lr_patience = 0;
  auto r = cxr::train::fit(*model, train, &val, o, kCpu);
  EXPECT_TRUE(r.stopped_early);
  EXPECT_LT(r.history.size(), 30u);
  EXPECT_EQ(static_cast<int>(r.history.size()), r.best_epoch + 2);
  // The restored model reproduces the best epoch's validation loss.
  auto p = cxr::train::predict_proba(*model, val.images, kCpu)
               .to(torch::kFloat64)
               .clamp(1e-7, 1 - 1e-7);
  auto y = val.labels.to(torch::kFloat64);
  double loss = -(y * p.log() + (1 - y) * (1 - p).log()).mean().item<double>();
  EXPECT_NEAR(loss, r.best_val_loss, 1e-5);
  EXPECT_NEAR(r.history[static_cast<size_t>(r.best_epoch - 1)].val_loss,
              r.best_val_loss, 1e-12);
}

TEST(Trainer, KeepLastHoldsTheFinalWeightsNotTheBest) {
  // As above, validation gets worse with training; without early stopping
  // "best" goes back to an early epoch and "last" keeps the final one.
  auto train = synthetic(64, 1), val = synthetic(32, 2);
  val.labels = 1.0f - val.labels;
  auto o = quick_options();
  o.lr_patience = 0;
  auto val_loss = [&](cxr::models::BaselineCnn& m) {
    auto p = cxr::train::predict_proba(*m, val.images, kCpu)
                 .to(torch::kFloat64)
                 .clamp(1e-7, 1 - 1e-7);
    auto y = val.labels.to(torch::kFloat64);
    return -(y * p.log() + (1 - y) * (1 - p).log()).mean().item<double>();
  };
  torch::manual_seed(0);
  cxr::models::BaselineCnn best(tiny_config());
  auto rb = cxr::train::fit(*best, train, &val, o, kCpu);
  torch::manual_seed(0);
  cxr::models::BaselineCnn last(tiny_config());
  o.keep = "last";
  auto rl = cxr::train::fit(*last, train, &val, o, kCpu);
  ASSERT_EQ(rl.history.size(), 6u);
  ASSERT_LT(rb.best_epoch, 6);  // the premise: the best epoch is not the last
  EXPECT_EQ(rl.best_epoch, 6);
  EXPECT_NEAR(val_loss(last), rl.history.back().val_loss, 1e-5);
  EXPECT_NEAR(rl.best_val_loss, rl.history.back().val_loss, 1e-12);
  EXPECT_NEAR(val_loss(best), rb.best_val_loss, 1e-5);
  EXPECT_GT(val_loss(last), val_loss(best));
  o.keep = "final";
  EXPECT_THROW(o.validate(), cxr::ConfigError);
}

TEST(Trainer, CosineScheduleAnnealsToOneHundredthOverThePhase) {
  auto train = synthetic(16, 1);
  cxr::models::BaselineCnn model(tiny_config());
  auto o = quick_options();
  o.epochs = 5;
  o.lr = 1e-2;
  o.train_on = "train+val";
  o.schedule = "cosine";
  auto r = cxr::train::fit(*model, train, nullptr, o, kCpu);
  ASSERT_EQ(r.history.size(), 5u);
  // lr_e = lo + (hi - lo) (1 + cos(pi e / 4)) / 2, hi = 1e-2, lo = 1e-4.
  const double expected[] = {1e-2, 8.55e-3, 5.05e-3, 1.55e-3, 1e-4};
  for (size_t e = 0; e < 5; ++e) {
    EXPECT_NEAR(r.history[e].lr, expected[e], 1e-5) << "epoch " << e + 1;
  }
  o.schedule = "step";
  EXPECT_THROW(o.validate(), cxr::ConfigError);
}

TEST(Trainer, CpuLayoutIsChannelsLastEvenForOneInputChannel) {
  torch::manual_seed(0);
  cxr::models::BaselineCnn model(tiny_config());
  model->eval();
  const auto images = synthetic(8, 3).images;
  torch::Tensor nchw;
  {
    torch::NoGradGuard no_grad;
    nchw =
        torch::sigmoid(model->forward(images.to(torch::kFloat32).div(255.0f)));
  }
  const torch::Tensor first = cxr::train::predict_proba(*model, images, kCpu);
  EXPECT_TRUE(torch::allclose(first, nchw, 1e-5, 1e-6));
  // predict_proba switched the weights to channels-last strides, including
  // the 1-input-channel first kernel that contiguous() would leave as NCHW.
  std::vector<torch::Tensor> kernels;
  for (const auto& p : model->parameters()) {
    if (p.dim() == 4) kernels.push_back(p);
  }
  ASSERT_FALSE(kernels.empty());
  ASSERT_EQ(kernels.front().size(1), 1);
  for (const auto& k : kernels) {
    EXPECT_EQ(k.strides().vec(), c10::get_channels_last_strides_2d(k.sizes()));
  }
  const void* before = kernels.front().data_ptr();
  const torch::Tensor again = cxr::train::predict_proba(*model, images, kCpu);
  EXPECT_EQ(kernels.front().data_ptr(), before) << "copied a second time";
  EXPECT_TRUE(torch::allclose(again, nchw, 1e-5, 1e-6));
}

TEST(Trainer, RefitOnTrainPlusValNeedsNoValidation) {
  auto train = synthetic(32, 1);
  cxr::models::BaselineCnn model(tiny_config());
  auto o = quick_options();
  o.epochs = 2;
  o.train_on = "train+val";
  auto r = cxr::train::fit(*model, train, nullptr, o, kCpu);
  EXPECT_EQ(r.best_epoch, 2);
  EXPECT_TRUE(std::isnan(r.history.back().val_loss));
  o.train_on = "train";
  EXPECT_THROW(cxr::train::fit(*model, train, nullptr, o, kCpu),
               cxr::ConfigError);
}

TEST(Trainer, BadOptionsNameTheFlag) {
  auto o = quick_options();
  o.optimizer = "adagrad";
  try {
    o.validate();
    FAIL();
  } catch (const cxr::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("--optimizer adagrad"),
              std::string::npos);
  }
  o = quick_options();
  o.batch_size = 0;
  EXPECT_THROW(o.validate(), cxr::ConfigError);
  for (const char* opt : {"sgd", "rmsprop"}) {
    auto p = quick_options();
    p.optimizer = opt;
    p.epochs = 1;
    cxr::models::BaselineCnn m(tiny_config());
    auto t = synthetic(16, 1), v = synthetic(8, 2);
    EXPECT_NO_THROW(cxr::train::fit(*m, t, &v, p, kCpu)) << opt;
  }
}

TEST(RunDir, CheckpointRoundTripKeepsPredictionsAndMetadata) {
  TempDir dir;
  auto val = synthetic(16, 2);
  cxr::models::BaselineCnn model(tiny_config());
  auto o = quick_options();
  o.epochs = 1;
  cxr::train::fit(*model, synthetic(16, 1), &val, o, kCpu);
  cxr::train::RunMeta meta;
  meta.model = tiny_config();
  meta.train = o;
  meta.threshold = 0.37;
  meta.threshold_rule = "test";
  cxr::train::save_run(dir.path().string(), *model, meta);
  auto run = cxr::train::load_run(dir.path().string(), kCpu);
  EXPECT_DOUBLE_EQ(run.meta.threshold, 0.37);
  EXPECT_EQ(run.meta.model.filters, (std::vector<int>{4, 8}));
  EXPECT_DOUBLE_EQ(run.meta.model.mean, 0.3);
  auto a = cxr::train::predict_proba(*model, val.images, kCpu);
  auto b = cxr::train::predict_proba(*run.model, val.images, kCpu);
  EXPECT_TRUE(torch::allclose(a, b));
}

TEST(RunDir, MismatchedOrCorruptCheckpointsAreRefused) {
  TempDir dir;
  cxr::models::BaselineCnn model(tiny_config());
  cxr::train::RunMeta meta;
  meta.model = tiny_config();
  const auto d = dir.path().string();
  cxr::train::save_run(d, *model, meta);
  // config.json says other filters than the weights have.
  auto cfg = cxr::read_json(dir / "config.json");
  cfg["model"]["filters"] = {4, 16};
  cxr::write_json_atomic(dir / "config.json", cfg);
  try {
    cxr::train::load_run(d, kCpu);
    FAIL();
  } catch (const cxr::ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("does not match"), std::string::npos)
        << e.what();
  }
  cxr::train::save_run(d, *model, meta);
  cxr::testing::write_bytes(dir / "model.safetensors", "garbage");
  EXPECT_THROW(cxr::train::load_run(d, kCpu), cxr::ModelError);
  EXPECT_THROW(cxr::train::load_run((dir / "nothing").string(), kCpu),
               cxr::ModelError);
}

TEST(RunDir, ResumeAfterInterruptionMatchesAnUninterruptedRun) {
  TempDir dir;
  auto train = synthetic(32, 1), val = synthetic(16, 2);
  auto o = quick_options();
  o.epochs = 4;
  torch::manual_seed(9);
  cxr::models::BaselineCnn full(tiny_config());
  auto init = cxr::train::snapshot(*full);
  auto r_full = cxr::train::fit(*full, train, &val, o, kCpu);

  // Same start, "killed" after epoch 2 (the callback saved state first).
  cxr::models::BaselineCnn part(tiny_config());
  cxr::train::restore(*part, init);
  const auto d = dir.path().string();
  std::vector<torch::Tensor> best;
  struct Interrupt {};
  auto cb = [&](const cxr::train::TrainState& st) {
    if (st.result->best_epoch == static_cast<int>(st.result->history.size())) {
      best = cxr::train::snapshot(*part);
    }
    cxr::train::save_resume_state(d, *part, st, best);
    if (st.result->history.size() == 2) throw Interrupt{};
  };
  EXPECT_THROW(cxr::train::fit(*part, train, &val, o, kCpu, cb), Interrupt);

  cxr::models::BaselineCnn resumed(tiny_config());
  cxr::train::ResumeState rs;
  ASSERT_TRUE(cxr::train::load_resume_state(d, *resumed, &rs));
  EXPECT_EQ(rs.result.history.size(), 2u);
  auto r_res = cxr::train::fit(*resumed, train, &val, o, kCpu, nullptr, &rs);
  ASSERT_EQ(r_res.history.size(), r_full.history.size());
  for (size_t i = 0; i < r_full.history.size(); ++i) {
    EXPECT_NEAR(r_res.history[i].val_loss, r_full.history[i].val_loss, 1e-5);
  }
  auto a = cxr::train::snapshot(*full), b = cxr::train::snapshot(*resumed);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::allclose(a[i], b[i], 1e-5, 1e-6)) << i;
  }
}

TEST(Baseline, ConfigValidationAndTapNames) {
  auto c = tiny_config();
  c.filters = {};
  EXPECT_THROW(cxr::models::BaselineCnn{c}, cxr::ConfigError);
  c = tiny_config();
  c.dropout = 1.0;
  EXPECT_THROW(cxr::models::BaselineCnn{c}, cxr::ConfigError);
  cxr::models::BaselineCnn m(tiny_config());
  EXPECT_EQ(m->tap_names(),
            (std::vector<std::string>{"block1_conv", "block1_relu",
                                      "block2_conv", "block2_relu"}));
  EXPECT_EQ(m->default_tap(), "block2_relu");
  cxr::models::Tap tap{"block2_relu", {}};
  auto out = m->forward_tapped(torch::rand({3, 1, 16, 16}), &tap);
  EXPECT_EQ(out.sizes(), torch::IntArrayRef({3}));
  EXPECT_EQ(tap.activation.sizes(), torch::IntArrayRef({3, 8, 8, 8}));
  cxr::models::Tap bad{"conv9", {}};
  try {
    m->forward_tapped(torch::rand({1, 1, 16, 16}), &bad);
    FAIL();
  } catch (const cxr::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("block1_conv"), std::string::npos);
  }
}

}  // namespace
