#include "cxr/models/resnet50_v2.h"

#include <algorithm>
#include <set>

#include "cxr/common/error.h"
#include "cxr/models/keras_h5.h"
#include "test_util.h"

namespace cxr::models {
namespace {

using torch::indexing::Slice;

class ResNet50V2Test : public testing::SeededTest {};

int64_t index_of(const std::vector<std::string>& v, const std::string& s) {
  auto it = std::find(v.begin(), v.end(), s);
  return it == v.end() ? -1 : it - v.begin();
}

TEST_F(ResNet50V2Test, ParameterCountsMatchKeras) {
  ResNet50V2 notop(false);
  EXPECT_EQ(count_keras_parameters(*notop), 23564800);
  EXPECT_EQ(count_parameters(*notop), 23519360);  // Keras "Trainable params"
  ResNet50V2 top(true);
  EXPECT_EQ(count_keras_parameters(*top), 25613800);
}

TEST_F(ResNet50V2Test, KerasLayerNamesAndOrder) {
  ResNet50V2 net(false);
  const auto& names = net->layer_names();
  // Keras: 190 layers incl. input_1 and three auto-named max_pooling2d.
  ASSERT_EQ(names.size(), 186u);
  EXPECT_EQ(names[0], "conv1_pad");
  EXPECT_EQ(names[1], "conv1_conv");
  EXPECT_EQ(names[2], "pool1_pad");
  EXPECT_EQ(names[3], "pool1_pool");
  EXPECT_EQ(names[4], "conv2_block1_preact_bn");
  EXPECT_EQ(names[names.size() - 2], "post_bn");
  EXPECT_EQ(names.back(), "post_relu");
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()).size(),
            names.size());
  // Depth-ordered like Keras' model.layers: shortcut just before _3_conv.
  EXPECT_EQ(index_of(names, "conv2_block1_0_conv") + 1,
            index_of(names, "conv2_block1_3_conv"));
  EXPECT_EQ(index_of(names, "conv2_block1_2_relu") + 1,
            index_of(names, "conv2_block1_0_conv"));
  for (const char* last :
       {"conv2_block3", "conv3_block4", "conv4_block6", "conv5_block3"}) {
    EXPECT_GE(index_of(names, std::string(last) + "_out"), 0) << last;
  }
  EXPECT_EQ(index_of(names, "conv2_block4_out"), -1);
  EXPECT_EQ(index_of(names, "conv5_block4_out"), -1);

  const auto& refs = net->keras_layers();
  ASSERT_EQ(refs.size(), 102u);
  EXPECT_EQ(refs.front().name, "conv1_conv");
  EXPECT_EQ(refs.back().name, "post_bn");
  int64_t last = -1;
  for (const auto& r : refs) {
    const int64_t i = index_of(names, r.name);
    ASSERT_GT(i, last) << r.name;
    last = i;
  }
}

TEST_F(ResNet50V2Test, BiasAndEpsilonAsInKeras) {
  ResNet50V2 net(false);
  int shortcuts = 0;
  for (const auto& r : net->keras_layers()) {
    if (r.kind == KerasKind::kBatchNorm) {
      auto* bn = dynamic_cast<torch::nn::BatchNorm2dImpl*>(r.module.get());
      ASSERT_NE(bn, nullptr);
      EXPECT_DOUBLE_EQ(bn->options.eps(), 1.001e-5) << r.name;
      continue;
    }
    auto* conv = dynamic_cast<torch::nn::Conv2dImpl*>(r.module.get());
    ASSERT_NE(conv, nullptr);
    const bool biased = r.name == "conv1_conv" ||
                        r.name.find("_0_conv") != std::string::npos ||
                        r.name.find("_3_conv") != std::string::npos;
    EXPECT_EQ(conv->bias.defined(), biased) << r.name;
    if (r.name.find("_0_conv") != std::string::npos) ++shortcuts;
  }
  EXPECT_EQ(shortcuts, 4);
}

TEST_F(ResNet50V2Test, StrideSitsInLastBlockOfEachStack) {
  ResNet50V2 net(false);
  net->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::rand({1, 3, 64, 64});
  auto side = [&](const std::string& layer) {
    Tap tap{layer, {}};
    net->forward_tapped(x, &tap);
    EXPECT_TRUE(tap.activation.defined()) << layer;
    return tap.activation.size(3);
  };
  EXPECT_EQ(side("conv1_pad"), 70);
  EXPECT_EQ(side("conv1_conv"), 32);
  EXPECT_EQ(side("pool1_pool"), 16);
  EXPECT_EQ(side("conv2_block2_out"), 16);
  EXPECT_EQ(side("conv2_block3_2_pad"), 18);
  EXPECT_EQ(side("conv2_block3_out"), 8);
  EXPECT_EQ(side("conv3_block3_out"), 8);
  EXPECT_EQ(side("conv3_block4_out"), 4);
  EXPECT_EQ(side("conv4_block6_out"), 2);
  EXPECT_EQ(side("conv5_block3_out"), 2);
  EXPECT_EQ(side("post_relu"), 2);
}

TEST_F(ResNet50V2Test, OutputShapes) {
  ResNet50V2 net(false);
  net->eval();
  torch::NoGradGuard no_grad;
  EXPECT_EQ(net->forward(torch::rand({1, 3, 128, 128})).sizes(),
            (std::vector<int64_t>{1, 2048, 4, 4}));
  EXPECT_EQ(net->forward(torch::rand({1, 3, 224, 224})).sizes(),
            (std::vector<int64_t>{1, 2048, 7, 7}));
  ResNet50V2 top(true, 5);
  top->eval();
  EXPECT_EQ(top->forward(torch::rand({2, 3, 64, 64})).sizes(),
            (std::vector<int64_t>{2, 5}));
}

TEST_F(ResNet50V2Test, StemMaxPoolPadsWithZeros) {
  // Keras pads with ZeroPadding2D before MaxPooling2D; with an all-negative
  // stem output the border windows must see the zeros (torch's implicit
  // -inf padding would give -1 there).
  ResNet50V2 net(false);
  net->eval();
  {
    torch::NoGradGuard no_grad;
    auto* conv = dynamic_cast<torch::nn::Conv2dImpl*>(
        net->keras_layers()[0].module.get());
    conv->weight.zero_();
    conv->bias.fill_(-1.0);
  }
  Tap tap{"pool1_pool", {}};
  net->forward_tapped(torch::rand({1, 3, 64, 64}), &tap);
  const torch::Tensor p = tap.activation[0][0];
  ASSERT_EQ(p.sizes(), (std::vector<int64_t>{16, 16}));
  EXPECT_EQ(p.index({0}).max().item<float>(), 0.0f);
  EXPECT_EQ(p.index({0}).min().item<float>(), 0.0f);
  EXPECT_EQ(p.index({Slice(), 0}).min().item<float>(), 0.0f);
  EXPECT_EQ(p.index({Slice(1), Slice(1)}).max().item<float>(), -1.0f);
}

TEST_F(ResNet50V2Test, IdentityAndPoolingShortcuts) {
  ResNet50V2 net(false);
  net->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::rand({1, 3, 64, 64});
  auto tap = [&](const std::string& layer) {
    Tap t{layer, {}};
    net->forward_tapped(x, &t);
    return t.activation;
  };
  // Identity shortcut from the un-activated block input.
  EXPECT_TRUE(torch::allclose(
      tap("conv2_block2_out"),
      tap("conv2_block1_out") + tap("conv2_block2_3_conv"), 1e-5, 1e-5));
  // Strided last block: MaxPooling2D(1, strides=2) of the block input.
  const torch::Tensor in = tap("conv2_block2_out");
  EXPECT_TRUE(torch::allclose(
      tap("conv2_block3_out"),
      in.index({Slice(), Slice(), Slice(0, torch::indexing::None, 2),
                Slice(0, torch::indexing::None, 2)}) +
          tap("conv2_block3_3_conv"),
      1e-5, 1e-5));
}

}  // namespace
}  // namespace cxr::models
