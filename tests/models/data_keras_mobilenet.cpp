// ImageNet proof of the MobileNetV2 port and the Keras HDF5 importer: the
// shared weights (see ../shared/weights/README.md) must reproduce the
// reference logits of the four test images.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cxr/data/image_io.h"
#include "cxr/models/keras_h5.h"
#include "cxr/models/mobilenet_v2.h"
#include "cxr/models/transfer.h"
#include "test_util.h"

namespace cxr::models {
namespace {

namespace fs = std::filesystem;

class KerasMobileNetData : public ::testing::Test {
 protected:
  void SetUp() override {
    weights_ = fs::path(testing::shared_dir()) / "weights";
    top_ = weights_ / "mobilenet_v2_1.0_224_imagenet.h5";
    notop_ = weights_ / "mobilenet_v2_1.0_224_imagenet_notop.h5";
    expected_ = weights_ / "test_images" / "expected_outputs.json";
    for (const auto& p : {top_, notop_, expected_}) {
      if (testing::shared_dir().empty() || !fs::exists(p)) {
        GTEST_SKIP() << "ImageNet files absent (" << p.string()
                     << "); see ../shared/weights/README.md";
      }
    }
  }
  fs::path weights_, top_, notop_, expected_;
};

TEST_F(KerasMobileNetData, ReproducesReferenceLogits) {
  MobileNetV2 net(/*include_top=*/true);
  net->load_keras(top_.string());
  net->eval();
  std::ifstream in(expected_);
  const nlohmann::json expected = nlohmann::json::parse(in);
  const std::map<std::string, int64_t> top1 = {{"grace_hopper_224.png", 652},
                                               {"cat_224.png", 285},
                                               {"parrot_224.png", 88},
                                               {"bird_224.png", 19}};
  ASSERT_EQ(expected.at("results").size(), top1.size());
  torch::NoGradGuard no_grad;
  double worst = 0;
  for (const auto& r : expected.at("results")) {
    const std::string image = r.at("image").get<std::string>();
    SCOPED_TRACE(image);
    ASSERT_TRUE(top1.count(image));
    const torch::Tensor rgb =
        data::read_rgb((weights_ / "test_images" / image).string());
    ASSERT_EQ(rgb.sizes(), (std::vector<int64_t>{3, 224, 224}));
    // Keras mobilenet_v2.preprocess_input: x / 127.5 - 1.
    const torch::Tensor x = (rgb * 255.0 / 127.5 - 1.0).unsqueeze(0);
    Tap pooled{"global_average_pooling2d", {}};
    const torch::Tensor logits = net->forward_tapped(x, &pooled)[0];

    EXPECT_EQ(logits.argmax().item<int64_t>(), top1.at(image));
    EXPECT_EQ(logits.argmax().item<int64_t>(),
              r.at("top5")[0].at("index").get<int64_t>());
    const auto ref = r.at("logits").get<std::vector<float>>();
    ASSERT_EQ(ref.size(), 1000u);
    const double diff =
        (logits - torch::tensor(ref)).abs().max().item<double>();
    // README: a float32 port should match to about 1e-4.
    EXPECT_LT(diff, 1e-4);
    worst = std::max(worst, diff);
    // `logits` is rounded to 6 decimals; `logits_top5` is not.
    const auto ref5 = r.at("logits_top5").get<std::vector<float>>();
    const auto [top5, top5_index] = logits.topk(5);
    const double diff5 =
        (top5 - torch::tensor(ref5)).abs().max().item<double>();
    EXPECT_LT(diff5, 1e-4);
    for (int k = 0; k < 5; ++k) {
      EXPECT_EQ(top5_index[k].item<int64_t>(),
                r.at("top5")[k].at("index").get<int64_t>());
    }
    EXPECT_NEAR(pooled.activation.mean().item<double>(),
                r.at("pooled_mean").get<double>(), 1e-4);
    // The reference used torch's default (unbiased) std.
    EXPECT_NEAR(pooled.activation.std(/*unbiased=*/true).item<double>(),
                r.at("pooled_std").get<double>(), 1e-4);
    const double p1 = torch::softmax(logits, 0)[top1.at(image)].item<double>();
    EXPECT_NEAR(p1, r.at("top5")[0].at("prob").get<double>(), 1e-4);
    std::cout << "[ImageNet] " << image << ": top-1 "
              << logits.argmax().item<int64_t>() << " p=" << p1
              << ", max |logit diff| = " << diff
              << " (top-5 unrounded: " << diff5 << ")\n";
  }
  RecordProperty("max_abs_logit_diff", std::to_string(worst));
  std::cout << "[ImageNet] max |logit - reference| = " << worst << "\n";
}

TEST_F(KerasMobileNetData, NoTopFileEqualsBackboneOfTopFile) {
  MobileNetV2 top(true);
  top->load_keras(top_.string());
  MobileNetV2 notop(false);
  notop->load_keras(notop_.string());
  auto full = top->named_parameters();
  for (const auto& p : notop->named_parameters()) {
    EXPECT_TRUE(torch::equal(p.value(), full[p.key()])) << p.key();
  }
  auto full_buffers = top->named_buffers();
  for (const auto& b : notop->named_buffers()) {
    EXPECT_TRUE(torch::equal(b.value(), full_buffers[b.key()])) << b.key();
  }
  EXPECT_EQ(read_keras_h5(notop_.string()).size(), 104u);
  // The files list tf.keras' layers (input_1 first); ours are the rest, in
  // the same order.
  for (const auto& [file, net] :
       {std::pair{top_, top.ptr()}, std::pair{notop_, notop.ptr()}}) {
    auto names = read_keras_layer_names(file.string());
    ASSERT_FALSE(names.empty());
    EXPECT_EQ(names.front(), "input_1");
    names.erase(names.begin());
    EXPECT_EQ(names, net->layer_names()) << file;
  }

  // Both files also load into the transfer classifier's backbone.
  ModelConfig c;
  c.arch = "mobilenetv2";
  c.input_size = 224;
  for (const auto& file : {top_, notop_}) {
    auto model = make_model(c);
    load_keras_backbone(*model, file.string());
    EXPECT_EQ(model->config().pretrained, file.string());
    EXPECT_TRUE(torch::equal(model->named_parameters()["backbone.Conv1.weight"],
                             full["Conv1.weight"]));
  }
}

}  // namespace
}  // namespace cxr::models
