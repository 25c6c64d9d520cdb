#include "cxr/models/mobilenet_v2.h"

#include <algorithm>
#include <set>

#include "cxr/common/error.h"
#include "cxr/models/keras_h5.h"
#include "test_util.h"

namespace cxr::models {
namespace {

using torch::indexing::Slice;

class MobileNetV2Test : public testing::SeededTest {};

int64_t index_of(const std::vector<std::string>& v, const std::string& s) {
  auto it = std::find(v.begin(), v.end(), s);
  return it == v.end() ? -1 : it - v.begin();
}

TEST_F(MobileNetV2Test, ParameterCountsMatchKeras) {
  MobileNetV2 notop(false);
  MobileNetV2 top(true);
  // Keras model.summary() totals (moving statistics included).
  EXPECT_EQ(count_keras_parameters(*notop), 2257984);
  EXPECT_EQ(count_keras_parameters(*top), 3538984);
  // Keras' "Trainable params" (gamma/beta, kernels; not moving statistics).
  EXPECT_EQ(count_parameters(*notop), 2223872);
  EXPECT_EQ(count_parameters(*top), 2223872 + 1280 * 1000 + 1000);
}

TEST_F(MobileNetV2Test, KerasLayerNamesAndOrder) {
  MobileNetV2 net(false);
  const auto& names = net->layer_names();
  // tf.keras MobileNetV2(include_top=False) has 154 layers incl. input_1.
  ASSERT_EQ(names.size(), 153u);
  EXPECT_EQ(names[0], "Conv1");
  EXPECT_EQ(names[1], "bn_Conv1");
  EXPECT_EQ(names[2], "Conv1_relu");
  EXPECT_EQ(names[3], "expanded_conv_depthwise");
  EXPECT_EQ(names.back(), "out_relu");
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()).size(),
            names.size());

  const auto& refs = net->keras_layers();
  ASSERT_EQ(refs.size(), 104u);
  EXPECT_EQ(refs.front().name, "Conv1");
  EXPECT_EQ(refs.front().kind, KerasKind::kConv2D);
  EXPECT_EQ(refs[2].name, "expanded_conv_depthwise");
  EXPECT_EQ(refs[2].kind, KerasKind::kDepthwiseConv2D);
  EXPECT_EQ(refs.back().name, "Conv_1_bn");
  EXPECT_EQ(refs.back().kind, KerasKind::kBatchNorm);
  // Weighted layers appear in layer_names in the same order.
  int64_t last = -1;
  for (const auto& r : refs) {
    const int64_t i = index_of(names, r.name);
    ASSERT_GT(i, last) << r.name;
    last = i;
  }

  // ZeroPadding2D only before the stride-2 depthwise convolutions; Add only
  // where stride 1 keeps the channel count.
  std::vector<std::string> pads, adds;
  for (const auto& n : names) {
    if (n.find("_pad") != std::string::npos) pads.push_back(n);
    if (n.find("_add") != std::string::npos) adds.push_back(n);
  }
  EXPECT_EQ(pads, (std::vector<std::string>{"block_1_pad", "block_3_pad",
                                            "block_6_pad", "block_13_pad"}));
  EXPECT_EQ(adds.size(), 10u);
  for (int b : {2, 4, 5, 7, 8, 9, 11, 12, 14, 15}) {
    const std::string p = "block_" + std::to_string(b) + "_";
    EXPECT_EQ(index_of(names, p + "add"), index_of(names, p + "project_BN") + 1)
        << p;
  }
  EXPECT_EQ(index_of(names, "block_1_pad") + 1,
            index_of(names, "block_1_depthwise"));
  EXPECT_EQ(index_of(names, "block_1_pad"),
            index_of(names, "block_1_expand_relu") + 1);

  MobileNetV2 top(true);
  EXPECT_EQ(top->layer_names().size(), 155u);
  EXPECT_EQ(top->layer_names().back(), "predictions");
  EXPECT_EQ(top->keras_layers().size(), 105u);
  EXPECT_EQ(top->keras_layers().back().kind, KerasKind::kDense);
}

TEST_F(MobileNetV2Test, BatchNormUsesKerasEpsilonAndNoConvBias) {
  MobileNetV2 net(false);
  for (const auto& r : net->keras_layers()) {
    if (r.kind == KerasKind::kBatchNorm) {
      auto* bn = dynamic_cast<torch::nn::BatchNorm2dImpl*>(r.module.get());
      ASSERT_NE(bn, nullptr);
      EXPECT_DOUBLE_EQ(bn->options.eps(), 1e-3) << r.name;
    } else {
      auto* conv = dynamic_cast<torch::nn::Conv2dImpl*>(r.module.get());
      ASSERT_NE(conv, nullptr);
      EXPECT_FALSE(conv->bias.defined()) << r.name;
    }
  }
}

TEST_F(MobileNetV2Test, OutputShapes) {
  MobileNetV2 net(false);
  net->eval();
  torch::NoGradGuard no_grad;
  EXPECT_EQ(net->forward(torch::rand({2, 3, 128, 128})).sizes(),
            (std::vector<int64_t>{2, 1280, 4, 4}));
  EXPECT_EQ(net->forward(torch::rand({1, 3, 224, 224})).sizes(),
            (std::vector<int64_t>{1, 1280, 7, 7}));
  // Odd sides: TF "same" and correct_pad give ceil(n / 2) at every stride.
  EXPECT_EQ(net->forward(torch::rand({1, 3, 97, 97})).sizes(),
            (std::vector<int64_t>{1, 1280, 4, 4}));
  MobileNetV2 top(true, 10);
  top->eval();
  EXPECT_EQ(top->forward(torch::rand({3, 3, 64, 64})).sizes(),
            (std::vector<int64_t>{3, 10}));
}

TEST_F(MobileNetV2Test, StemUsesTensorFlowSamePadding) {
  // A kernel that copies its top-left input pixel: with TF "same" on an even
  // input the padding is (0 before, 1 after), so output (i, j) reads input
  // (2i, 2j); torch-style symmetric padding would read (2i-1, 2j-1).
  MobileNetV2 net(false);
  net->eval();
  {
    torch::NoGradGuard no_grad;
    auto* conv = dynamic_cast<torch::nn::Conv2dImpl*>(
        net->keras_layers()[0].module.get());
    conv->weight.zero_();
    conv->weight.index_put_({0, 0, 0, 0}, 1.0);
  }
  torch::Tensor x = torch::rand({1, 3, 32, 32});
  Tap tap{"Conv1", {}};
  net->forward_tapped(x, &tap);
  ASSERT_EQ(tap.activation.sizes(), (std::vector<int64_t>{1, 32, 16, 16}));
  EXPECT_TRUE(torch::equal(tap.activation[0][0],
                           x.index({0, 0, Slice(0, torch::indexing::None, 2),
                                    Slice(0, torch::indexing::None, 2)})));
}

TEST_F(MobileNetV2Test, StrideTwoBlocksPadBottomRightOnly) {
  MobileNetV2 net(false);
  net->eval();
  torch::NoGradGuard no_grad;
  torch::Tensor x = torch::rand({1, 3, 64, 64});
  Tap before{"block_1_expand_relu", {}};
  Tap pad{"block_1_pad", {}};
  net->forward_tapped(x, &before);
  net->forward_tapped(x, &pad);
  ASSERT_EQ(before.activation.sizes(), (std::vector<int64_t>{1, 96, 32, 32}));
  ASSERT_EQ(pad.activation.sizes(), (std::vector<int64_t>{1, 96, 33, 33}));
  EXPECT_TRUE(torch::equal(
      pad.activation.index({Slice(), Slice(), Slice(0, 32), Slice(0, 32)}),
      before.activation));
  EXPECT_EQ(
      pad.activation.index({Slice(), Slice(), 32}).abs().sum().item<float>(),
      0.0f);
  EXPECT_EQ(pad.activation.index({Slice(), Slice(), Slice(), 32})
                .abs()
                .sum()
                .item<float>(),
            0.0f);
  // Odd input (Keras correct_pad): one pixel on every side.
  Tap odd{"block_1_pad", {}};
  net->forward_tapped(torch::rand({1, 3, 62, 62}), &odd);  // Conv1 -> 31
  EXPECT_EQ(odd.activation.sizes(), (std::vector<int64_t>{1, 96, 33, 33}));
}

TEST_F(MobileNetV2Test, ResidualAddsBlockInput) {
  MobileNetV2 net(false);
  net->eval();
  torch::NoGradGuard no_grad;
  torch::Tensor x = torch::rand({1, 3, 64, 64});
  Tap in{"block_1_project_BN", {}}, branch{"block_2_project_BN", {}},
      sum{"block_2_add", {}};
  net->forward_tapped(x, &in);
  net->forward_tapped(x, &branch);
  net->forward_tapped(x, &sum);
  EXPECT_TRUE(
      torch::allclose(sum.activation, in.activation + branch.activation));
}

TEST_F(MobileNetV2Test, RejectsZeroClasses) {
  try {
    MobileNetV2 net(true, 0);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("classes"), std::string::npos);
  }
}

}  // namespace
}  // namespace cxr::models
