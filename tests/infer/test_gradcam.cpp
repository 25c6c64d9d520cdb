// Grad-CAM with known answers: a hand-built model whose logit reads one
// quadrant, the Normal map as Grad-CAM of the negated logit, no graph or
// gradients left behind, layer-name errors.
#include "cxr/common/error.h"
#include "cxr/infer/gradcam.h"
#include "cxr/models/baseline.h"
#include "test_util.h"

namespace {

namespace nn = torch::nn;
using cxr::infer::CamResult;
using cxr::infer::GradCam;

using cxr::testing::QuadrantModelImpl;

/// Top-right: vertical stripes of contrast 0.5; bottom-left: horizontal
/// stripes of contrast 1 (a stronger activation, of the channel the logit
/// ignores); elsewhere flat grey.
torch::Tensor quadrant_image(int size = 32) {
  auto img = torch::full({1, 1, size, size}, 0.5f);
  const int h = size / 2;
  for (int x = h; x < size; ++x) {
    img[0][0].slice(0, 0, h).select(1, x).fill_(x % 2 ? 0.75f : 0.25f);
  }
  for (int y = h; y < size; ++y) {
    img[0][0].select(0, y).slice(0, 0, h).fill_(y % 2 ? 1.0f : 0.0f);
  }
  return img;
}

/// The model with its logit negated (same layers and weights).
class NegatedImpl : public cxr::models::ClassifierImpl {
 public:
  explicit NegatedImpl(cxr::models::Classifier inner)
      : ClassifierImpl(inner->config()), inner_(std::move(inner)) {
    register_module("inner", inner_);
  }
  torch::Tensor forward_tapped(const torch::Tensor& x,
                               cxr::models::Tap* tap) override {
    return -inner_->forward_tapped(x, tap);
  }
  std::vector<std::string> tap_names() const override {
    return inner_->tap_names();
  }
  std::string default_tap() const override { return inner_->default_tap(); }

 private:
  cxr::models::Classifier inner_;
};

/// testing::tiny_config() with this suite's normalisation and the default
/// dropout.
cxr::models::Classifier tiny_baseline() {
  cxr::models::ModelConfig c = cxr::testing::tiny_config();
  c.mean = 0.4;
  c.dropout = cxr::models::ModelConfig().dropout;
  return std::make_shared<cxr::models::BaselineCnnImpl>(c);
}

/// Grad-CAM of one image written out step by step (Selvaraju et al.).
torch::Tensor manual_cam(cxr::models::ClassifierImpl& m,
                         const torch::Tensor& image,
                         const std::string& layer,
                         double sign) {
  cxr::models::Tap tap{layer, {}};
  auto logit = m.forward_tapped(image.unsqueeze(0), &tap);
  auto g = torch::autograd::grad({sign * logit.sum()}, {tap.activation})[0];
  auto alpha = g.mean({2, 3}, true);
  auto cam = torch::relu((alpha * tap.activation).sum(1, true)).detach();
  cam = torch::nn::functional::interpolate(
      cam, torch::nn::functional::InterpolateFuncOptions()
               .size(std::vector<int64_t>{image.size(1), image.size(2)})
               .mode(torch::kBilinear)
               .align_corners(false))[0][0];
  return (cam - cam.min()) / (cam.max() - cam.min());
}

using GradCamTest = cxr::testing::SeededTest;

TEST_F(GradCamTest, PositiveMapPeaksInTheQuadrantTheLogitReads) {
  auto model = std::make_shared<QuadrantModelImpl>();
  GradCam cam(model);
  EXPECT_EQ(cam.layer(), "features");
  auto x = quadrant_image();
  auto r = cam.compute(x);
  ASSERT_EQ(r.positive_maps.sizes(), torch::IntArrayRef({1, 32, 32}));
  auto map = r.positive_maps[0];
  const int64_t peak = map.argmax().item<int64_t>();
  EXPECT_LT(peak / 32, 16) << "peak row";
  EXPECT_GE(peak % 32, 16) << "peak column";
  const double total = map.sum().item<double>();
  const double top_right =
      map.slice(0, 0, 16).slice(1, 16, 32).sum().item<double>();
  // Not all of it: the 3x3 filters see one pixel past the quadrant edge and
  // bilinear upsampling spreads half a feature cell further.
  EXPECT_GT(top_right / total, 0.8);
  EXPECT_NEAR(map.max().item<double>(), 1.0, 1e-5);
  EXPECT_GE(map.min().item<double>(), 0.0);
  // The activations alone would point at the stronger bottom-left stripes.
  cxr::models::Tap tap{"features", {}};
  {
    torch::NoGradGuard ng;
    model->forward_tapped(x, &tap);
  }
  auto plain = tap.activation[0].sum(0);
  EXPECT_GT(plain.slice(0, 8, 16).slice(1, 0, 8).sum().item<double>(),
            plain.slice(0, 0, 8).slice(1, 8, 16).sum().item<double>());
  // No evidence for the other class: the negated logit only falls with the
  // top-right activation, so its map is empty.
  EXPECT_LT(r.negative_maps.max().item<double>(), 1e-6);
  // Logit and probability are the model's.
  torch::NoGradGuard ng;
  auto logit = model->forward(x);
  EXPECT_NEAR(r.logits[0].item<double>(), logit[0].item<double>(), 1e-6);
  EXPECT_NEAR(r.probabilities[0].item<double>(),
              torch::sigmoid(logit)[0].item<double>(), 1e-6);
}

TEST_F(GradCamTest, NormalMapIsGradCamOfTheNegatedLogit) {
  auto model = tiny_baseline();
  auto negated = std::make_shared<NegatedImpl>(model);
  auto x = torch::rand({5, 1, 16, 16});
  auto r = GradCam(model, "block2_relu", 2).compute(x);
  auto n = GradCam(negated, "block2_relu", 2).compute(x);
  // Non-trivial maps, so the comparison means something.
  EXPECT_GT(r.negative_maps.max().item<double>(), 0.99);
  EXPECT_GT(r.positive_maps.max().item<double>(), 0.99);
  EXPECT_FALSE(torch::allclose(r.positive_maps, r.negative_maps));
  EXPECT_TRUE(torch::allclose(r.negative_maps, n.positive_maps, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(r.positive_maps, n.negative_maps, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(r.logits, -n.logits, 1e-5, 1e-6));
  // Batched (5 images, batches of 2) equals image by image, step by step.
  model->eval();
  for (int64_t i = 0; i < 5; ++i) {
    EXPECT_TRUE(torch::allclose(r.positive_maps[i],
                                manual_cam(*model, x[i], "block2_relu", 1.0),
                                1e-5, 1e-6))
        << i;
    EXPECT_TRUE(torch::allclose(r.negative_maps[i],
                                manual_cam(*model, x[i], "block2_relu", -1.0),
                                1e-5, 1e-6))
        << i;
  }
}

TEST_F(GradCamTest, LeavesNoGraphGradientsOrModeChangesBehind) {
  auto model = tiny_baseline();
  model->train();
  auto x = torch::rand({3, 1, 16, 16});
  CamResult r;
  {
    // Works even when the caller disabled autograd.
    torch::NoGradGuard ng;
    r = GradCam(model, "block1_conv").compute(x);
  }
  for (const auto& t :
       {r.logits, r.probabilities, r.positive_maps, r.negative_maps}) {
    EXPECT_FALSE(t.requires_grad());
    EXPECT_EQ(t.grad_fn(), nullptr);
    EXPECT_EQ(t.device().type(), torch::kCPU);
  }
  for (const auto& p : model->parameters()) EXPECT_FALSE(p.grad().defined());
  EXPECT_TRUE(model->is_training());
  EXPECT_FALSE(x.requires_grad());
  // Running statistics were not updated (eval mode during the call).
  cxr::models::BaselineCnn fresh(model->config());
  auto a = model->buffers(), b = fresh->buffers();
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].numel() > 1) EXPECT_TRUE(torch::equal(a[i], b[i])) << i;
  }
  // uint8 input is the same as float / 255.
  auto u8 = (x * 255).round().to(torch::kUInt8);
  auto ru = GradCam(model).compute(u8);
  auto rf = GradCam(model).compute(u8.to(torch::kFloat32) / 255);
  EXPECT_TRUE(torch::allclose(ru.positive_maps, rf.positive_maps));
  EXPECT_EQ(
      GradCam(model).compute(torch::rand({0, 1, 16, 16})).positive_maps.sizes(),
      torch::IntArrayRef({0, 16, 16}));
}

TEST_F(GradCamTest, BadLayerNameListsTheValidOnes) {
  auto model = tiny_baseline();
  try {
    GradCam cam(model, "block9_relu");
    FAIL() << "expected ConfigError";
  } catch (const cxr::ConfigError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("block9_relu"), std::string::npos) << msg;
    for (const auto& n : model->tap_names()) {
      EXPECT_NE(msg.find(n), std::string::npos) << n << " in " << msg;
    }
  }
  EXPECT_EQ(GradCam(model).layer(), "block2_relu");
  EXPECT_THROW(GradCam(model, "", 0), cxr::ConfigError);
  EXPECT_THROW(GradCam(model).compute(torch::rand({2, 3, 16, 16})),
               cxr::ConfigError);
}

TEST(GradCamWeighting, IsTheReluOfTheGradientWeightedChannelSum) {
  // Two channels, gradients with spatial means +1 and -2.
  auto a = torch::tensor({1.0f, 2.0f, 3.0f, 4.0f, 4.0f, 0.0f, 1.0f, 1.0f})
               .view({1, 2, 2, 2});
  auto g = torch::tensor({2.0f, 0.0f, 1.0f, 1.0f, -2.0f, -2.0f, -4.0f, 0.0f})
               .view({1, 2, 2, 2});
  auto m = cxr::infer::gradcam_weighting(a, g);
  auto expected = torch::relu(a[0][0] - 2 * a[0][1]);
  EXPECT_TRUE(torch::allclose(m[0], expected));
  EXPECT_THROW(cxr::infer::gradcam_weighting(a, g.view({1, 2, 4})),
               cxr::ConfigError);
  auto up = cxr::infer::normalize_and_upsample(m, 4, 4);
  EXPECT_EQ(up.sizes(), torch::IntArrayRef({1, 4, 4}));
  EXPECT_NEAR(up.max().item<double>(), 1.0, 1e-5);
  EXPECT_NEAR(up.min().item<double>(), 0.0, 1e-7);
  // Normalisation does not depend on the gradient's scale.
  EXPECT_TRUE(torch::allclose(
      cxr::infer::normalize_and_upsample(m * 1e-9, 4, 4), up, 1e-5, 1e-6));
  // A constant map carries no evidence, and neither does rounding noise.
  auto flat = cxr::infer::normalize_and_upsample(torch::ones({1, 2, 2}), 4, 4);
  EXPECT_EQ(flat.abs().max().item<double>(), 0.0);
  auto noisy = torch::ones({1, 2, 2});
  noisy[0][0][0] += 1e-8;
  EXPECT_EQ(cxr::infer::normalize_and_upsample(noisy, 4, 4)
                .abs()
                .max()
                .item<double>(),
            0.0);
}

}  // namespace
