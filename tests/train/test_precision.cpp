// bfloat16 autocast (--precision bf16): the guard, the ReLU6 whose backward
// runs in bfloat16, and that bf16 gives float32's decisions and learns like
// it (issue 17: "bf16 and fp32 give the same decisions on a fixed batch
// within a stated tolerance").
#include <cmath>

#include "cxr/common/error.h"
#include "cxr/common/precision.h"
#include "cxr/models/activation.h"
#include "cxr/models/baseline.h"
#include "cxr/train/run.h"
#include "cxr/train/run_dir.h"
#include "cxr/train/trainer.h"
#include "test_util.h"

namespace {

using cxr::Precision;
using cxr::testing::synthetic;
using cxr::testing::TempDir;
using cxr::testing::tiny_config;

const torch::Device kCpu(torch::kCPU);

/// The process-wide precision for one test, float32 again afterwards.
class PrecisionScope {
 public:
  explicit PrecisionScope(Precision p) { cxr::set_precision(p); }
  ~PrecisionScope() { cxr::set_precision(Precision::kFloat32); }
  PrecisionScope(const PrecisionScope&) = delete;
  PrecisionScope& operator=(const PrecisionScope&) = delete;
};

TEST(Precision, ParsesTheFlagValues) {
  EXPECT_EQ(cxr::parse_precision("fp32"), Precision::kFloat32);
  EXPECT_EQ(cxr::parse_precision("bf16"), Precision::kBFloat16);
  EXPECT_EQ(cxr::precision_name(Precision::kBFloat16), "bf16");
  const std::string msg = cxr::testing::error_of<cxr::ConfigError>(
      [] { cxr::parse_precision("fp16"); });
  EXPECT_NE(msg.find("--precision fp16"), std::string::npos) << msg;
  EXPECT_EQ(cxr::precision(), Precision::kFloat32);  // the default
}

TEST(Precision, AutoIsBf16OnlyWhereTheCpuComputesItNatively) {
  // /proc/cpuinfo "flags" lines with and without the bfloat16 units.
  const std::string plain =
      "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n";
  EXPECT_FALSE(cxr::cpuinfo_has_native_bf16(plain));
  EXPECT_TRUE(cxr::cpuinfo_has_native_bf16(
      "processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 avx512vl\n"));
  EXPECT_TRUE(cxr::cpuinfo_has_native_bf16("flags\t: sse amx_bf16 amx_tile\n"));
  // A flag's name inside another word is not the flag.
  EXPECT_FALSE(cxr::cpuinfo_has_native_bf16("flags\t: avx512_bf16x\n"));
  EXPECT_FALSE(cxr::cpuinfo_has_native_bf16(""));
  // "auto" follows this machine's CPU; on the CPU device only.
  EXPECT_EQ(cxr::parse_precision("auto", "cpu"), cxr::cpu_has_native_bf16()
                                                     ? Precision::kBFloat16
                                                     : Precision::kFloat32);
  const std::string msg = cxr::testing::error_of<cxr::ConfigError>(
      [] { cxr::parse_precision("bf32", "cpu"); });
  EXPECT_NE(msg.find("use auto, fp32 or bf16"), std::string::npos) << msg;
}

TEST(Precision, GuardAutocastsOnlyInItsScopeAndOnlyForBf16) {
  torch::nn::Linear lin(4, 2);
  const auto x = torch::rand({3, 4});
  {
    cxr::AutocastGuard g(kCpu, Precision::kFloat32);
    EXPECT_FALSE(g.active());
    EXPECT_EQ(lin(x).scalar_type(), torch::kFloat32);
  }
  {
    cxr::AutocastGuard g(kCpu, Precision::kBFloat16);
    EXPECT_TRUE(g.active());
    EXPECT_EQ(lin(x).scalar_type(), torch::kBFloat16);
    {
      cxr::AutocastGuard inner(kCpu, Precision::kBFloat16);
      EXPECT_EQ(lin(x).scalar_type(), torch::kBFloat16);
    }
    // The inner guard restored the outer one's state.
    EXPECT_EQ(lin(x).scalar_type(), torch::kBFloat16);
  }
  EXPECT_EQ(lin(x).scalar_type(), torch::kFloat32);
  // The default argument reads the process-wide setting.
  PrecisionScope bf16(Precision::kBFloat16);
  cxr::AutocastGuard g(kCpu);
  EXPECT_TRUE(g.active());
}

TEST(Precision, GuardDropsItsCastWeightsAtExit) {
  // Autocast caches the bfloat16 copy of a weight that requires grad; the
  // optimizer then changes the float32 weight in place. A cache kept past
  // the guard would run the next step with the old weights.
  torch::nn::Linear lin(torch::nn::LinearOptions(4, 1).bias(false));
  const auto x = torch::ones({1, 4});
  {
    torch::NoGradGuard no_grad;
    lin->weight.fill_(1.0f);
  }
  {
    cxr::AutocastGuard g(kCpu, Precision::kBFloat16);
    EXPECT_FLOAT_EQ(lin(x).to(torch::kFloat32).item<float>(), 4.0f);
  }
  {
    torch::NoGradGuard no_grad;
    lin->weight.fill_(2.0f);
  }
  cxr::AutocastGuard g(kCpu, Precision::kBFloat16);
  EXPECT_FLOAT_EQ(lin(x).to(torch::kFloat32).item<float>(), 8.0f);
}

/// Values on both sides of both bounds, with exact 0, -0 and 6 (where
/// hardtanh's gradient is 0) and values just inside.
torch::Tensor relu6_input() {
  torch::manual_seed(3);
  auto x = torch::rand({2, 3, 5, 7}) * 10.0 - 2.0;
  auto flat = x.view({-1});
  flat[0] = 0.0f;
  flat[1] = 6.0f;
  flat[2] = -0.0f;
  flat[3] = 5.9375f;  // exact in bfloat16 too
  flat[4] = 0.0078125f;
  return x;
}

TEST(ReLU6, EqualsTorchRelu6ExactlyInFloat32) {
  for (bool channels_last : {false, true}) {
    SCOPED_TRACE(channels_last ? "channels-last" : "contiguous");
    torch::Tensor base = relu6_input();
    if (channels_last)
      base = base.contiguous(torch::MemoryFormat::ChannelsLast);
    auto a = base.clone().requires_grad_(true);
    auto b = base.clone().requires_grad_(true);
    // Contiguous NCHW gradient: for a channels-last input its strides differ
    // from the saved output's.
    const auto g = torch::randn(base.sizes());
    auto ya = cxr::models::relu6(a);
    auto yb = torch::relu6(b);
    EXPECT_TRUE(torch::equal(ya, yb));
    ya.backward(g);
    yb.backward(g);
    EXPECT_TRUE(torch::equal(a.grad(), b.grad()));
    // The bounds themselves pass no gradient.
    const auto ga = a.grad().contiguous().view({-1});
    EXPECT_EQ(ga[0].item<float>(), 0.0f);
    EXPECT_EQ(ga[1].item<float>(), 0.0f);
    EXPECT_EQ(ga[2].item<float>(), 0.0f);
  }
}

TEST(ReLU6, Bfloat16HasABackwardEqualToTheFloat32Rule) {
  // torch::relu6's backward has no bfloat16 CPU kernel in LibTorch 1.13;
  // clamping and masking are exact, so the bfloat16 results equal float32's
  // on the same (bfloat16) values bit for bit.
  const auto xb = relu6_input()
                      .to(torch::kBFloat16)
                      .contiguous(torch::MemoryFormat::ChannelsLast);
  const auto g = torch::randn(xb.sizes()).to(torch::kBFloat16);
  auto x = xb.clone().requires_grad_(true);
  auto y = cxr::models::relu6(x);
  y.backward(g);
  EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(x.grad().scalar_type(), torch::kBFloat16);
  auto xf = xb.to(torch::kFloat32).requires_grad_(true);
  auto yf = torch::relu6(xf);
  yf.backward(g.to(torch::kFloat32));
  EXPECT_TRUE(torch::equal(y.to(torch::kFloat32), yf.detach()));
  EXPECT_TRUE(torch::equal(x.grad().to(torch::kFloat32), xf.grad()));
}

TEST(ReLU6, OtherDtypesUseTheSameRule) {
  // float64 takes the tensor-op fallback (as CUDA does).
  auto a = relu6_input().to(torch::kFloat64).requires_grad_(true);
  auto b = a.detach().clone().requires_grad_(true);
  const auto g = torch::randn(a.sizes(), torch::kFloat64);
  cxr::models::relu6(a).backward(g);
  torch::relu6(b).backward(g);
  EXPECT_TRUE(torch::equal(a.grad(), b.grad()));
}

TEST(Precision, MobileNetV2TrainsUnderBfloat16Autocast) {
  // The step that failed with torch::relu6 ("not implemented for
  // 'BFloat16'"), batch norm in training mode included.
  torch::manual_seed(0);
  cxr::models::ModelConfig c;
  c.arch = "mobilenetv2";
  c.input_size = 32;
  auto model = cxr::models::make_model(c);
  model->train();
  model->set_backbone_trainable(true);
  cxr::train::use_device_layout(*model, kCpu);
  const auto x = cxr::train::device_layout(torch::rand({2, 1, 32, 32}), kCpu);
  torch::Tensor y;
  {
    cxr::AutocastGuard g(kCpu, Precision::kBFloat16);
    y = model->forward(x);
  }
  EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
  y.to(torch::kFloat32).sum().backward();
  int with_grad = 0;
  for (const auto& p : model->parameters()) {
    if (!p.requires_grad()) continue;
    ASSERT_TRUE(p.grad().defined());
    EXPECT_EQ(p.scalar_type(), torch::kFloat32);  // float32 master weights
    EXPECT_EQ(p.grad().scalar_type(), torch::kFloat32);
    EXPECT_TRUE(torch::isfinite(p.grad()).all().item<bool>());
    ++with_grad;
  }
  EXPECT_GT(with_grad, 100);
  // Batch norm (training mode here) kept float32 running statistics.
  int stats = 0;
  for (const auto& b : model->named_buffers()) {
    if (b.key().find("running_") == std::string::npos) continue;
    EXPECT_EQ(b.value().scalar_type(), torch::kFloat32) << b.key();
    EXPECT_TRUE(torch::isfinite(b.value()).all().item<bool>()) << b.key();
    ++stats;
  }
  EXPECT_GT(stats, 50);
}

TEST(Precision, Bfloat16GivesFloat32sDecisionsOnAFixedBatch) {
  // A tiny baseline trained in float32, then the same fixed batch scored in
  // both precisions through infer's forward pass. Stated tolerance: every
  // probability within 2e-2 of float32's, and the same decision at 0.5 for
  // every image whose float32 probability is farther than that from 0.5.
  const auto train = synthetic(64, 1), val = synthetic(32, 2);
  torch::manual_seed(0);
  cxr::models::BaselineCnn model(tiny_config());
  cxr::train::fit(*model, train, &val, cxr::testing::tiny_train_options(),
                  kCpu);
  const auto p32 = cxr::train::predict_proba(*model, val.images, kCpu);
  torch::Tensor p16;
  {
    PrecisionScope bf16(Precision::kBFloat16);
    p16 = cxr::train::predict_proba(*model, val.images, kCpu);
  }
  EXPECT_EQ(p16.scalar_type(), torch::kFloat32);
  EXPECT_LT((p16 - p32).abs().max().item<float>(), 2e-2f);
  // Not vacuous: the bfloat16 pass did run (it rounds differently).
  EXPECT_FALSE(torch::equal(p16, p32));
  const auto far = (p32 - 0.5).abs() > 2e-2;
  EXPECT_GT(far.sum().item<int64_t>(), 24);
  EXPECT_TRUE(torch::equal((p16 > 0.5).masked_select(far),
                           (p32 > 0.5).masked_select(far)));
}

TEST(Precision, Bfloat16TrainingLowersTheLossLikeFloat32) {
  const auto train = synthetic(64, 1), val = synthetic(32, 2);
  auto run = [&](Precision p) {
    PrecisionScope scope(p);
    torch::manual_seed(0);
    cxr::models::BaselineCnn m(tiny_config());
    return cxr::train::fit(*m, train, &val, cxr::testing::tiny_train_options(),
                           kCpu);
  };
  const auto r32 = run(Precision::kFloat32);
  const auto r16 = run(Precision::kBFloat16);
  ASSERT_EQ(r16.history.size(), r32.history.size());
  const auto& first = r16.history.front();
  const auto& last = r16.history.back();
  EXPECT_LT(last.train_loss, 0.5 * first.train_loss);
  EXPECT_GT(last.val_accuracy, 0.9);
  EXPECT_NEAR(last.train_loss, r32.history.back().train_loss, 0.05);
  EXPECT_NEAR(last.val_loss, r32.history.back().val_loss, 0.05);
  // Not vacuous: the two runs differ (bfloat16 forward passes).
  EXPECT_NE(last.train_loss, r32.history.back().train_loss);
}

TEST(Precision, ABf16RunRecordsItAndPredictsLikeFloat32) {
  // The whole of train_run under bf16 (validation, threshold, calibration
  // and the OOD detector's features), and config.json says how it ran.
  TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");
  const auto o = cxr::testing::tiny_run_options(dir.path(), "bf16");
  cxr::train::TrainResult r;
  {
    PrecisionScope bf16(Precision::kBFloat16);
    r = cxr::train::train_run(o);
  }
  EXPECT_EQ(r.config["result"]["precision"], "bf16");
  ASSERT_TRUE(r.val.has_value());
  EXPECT_TRUE(std::isfinite(r.ood_threshold));
  // The saved weights are float32; scored in float32 they give the bf16
  // run's validation decisions wherever the probability is not within the
  // stated tolerance of the threshold.
  const auto run = cxr::train::load_run(o.out_dir, kCpu);
  for (const auto& p : run.model->parameters()) {
    EXPECT_EQ(p.scalar_type(), torch::kFloat32);
  }
  const auto ds = cxr::data::load_dataset(o.data);
  const auto& val = ds.split(cxr::data::Split::kVal);
  const auto p32 = cxr::train::predict_proba(*run.model, val.images, kCpu);
  torch::Tensor p16;
  {
    PrecisionScope bf16(Precision::kBFloat16);
    p16 = cxr::train::predict_proba(*run.model, val.images, kCpu);
  }
  EXPECT_LT((p16 - p32).abs().max().item<float>(), 2e-2f);
  const auto far = (p32 - r.threshold).abs() > 2e-2;
  EXPECT_TRUE(torch::equal((p16 > r.threshold).masked_select(far),
                           (p32 > r.threshold).masked_select(far)));
}

}  // namespace
