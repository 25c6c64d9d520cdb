#include "cxr/models/transfer.h"

#include <set>

#include "cxr/common/error.h"
#include "cxr/models/keras_h5.h"
#include "test_util.h"

namespace cxr::models {
namespace {

class TransferTest : public testing::SeededTest {};

using cxr::testing::contains;

ModelConfig config(const std::string& arch, int size = 64) {
  ModelConfig c;
  c.arch = arch;
  c.input_size = size;
  c.head_units = 16;
  c.dropout = 0.5;
  return c;
}

// `pretrained` marks the model as holding ImageNet weights (batch norm in
// inference mode) without loading a file.
std::shared_ptr<TransferClassifierImpl> make(const std::string& arch,
                                             bool pretrained = true) {
  ModelConfig c = config(arch);
  if (pretrained) c.pretrained = "imagenet.h5";
  auto m = std::dynamic_pointer_cast<TransferClassifierImpl>(make_model(c));
  EXPECT_NE(m, nullptr);
  return m;
}

// Keras layer of a parameter key "backbone.<layer>.<tensor>" ("" otherwise).
std::string backbone_layer(const std::string& key) {
  if (key.rfind("backbone.", 0) != 0) return "";
  const std::string rest = key.substr(9);
  return rest.substr(0, rest.find('.'));
}

std::set<std::string> trainable_layers(TransferClassifierImpl& m) {
  std::set<std::string> out;
  for (const auto& p : m.named_parameters()) {
    if (p.value().requires_grad()) {
      const std::string l = backbone_layer(p.key());
      out.insert(l.empty() ? p.key().substr(0, p.key().find('.')) : l);
    }
  }
  return out;
}

TEST_F(TransferTest, ForwardShapesAndHeadNames) {
  for (const char* arch : {"mobilenetv2", "resnet50v2"}) {
    auto m = make(arch);
    m->eval();
    torch::NoGradGuard no_grad;
    EXPECT_EQ(m->forward(torch::rand({2, 1, 64, 64})).sizes(),
              (std::vector<int64_t>{2}))
        << arch;
    auto params = m->named_parameters();
    EXPECT_TRUE(params.contains("head_dense.weight"));
    EXPECT_TRUE(params.contains("head_logit.bias"));
    EXPECT_EQ(params["head_logit.weight"].sizes(),
              (std::vector<int64_t>{1, 16}));
  }
  auto m = make("mobilenetv2");
  EXPECT_TRUE(m->named_parameters().contains("backbone.Conv1.weight"));
  EXPECT_EQ(m->named_parameters()["head_dense.weight"].sizes(),
            (std::vector<int64_t>{16, 1280}));
  auto r = make("resnet50v2");
  EXPECT_EQ(r->named_parameters()["head_dense.weight"].sizes(),
            (std::vector<int64_t>{16, 2048}));
}

TEST_F(TransferTest, PreprocessesLikeKeras) {
  auto m = make("mobilenetv2");
  m->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::rand({2, 1, 64, 64});
  // Same pipeline by hand: gray -> RGB, x / 127.5 - 1 on [0, 255].
  const torch::Tensor rgb = (x * 255.0).repeat({1, 3, 1, 1}) / 127.5 - 1.0;
  torch::Tensor f = m->backbone().forward(rgb).mean({2, 3});
  auto p = m->named_parameters();
  f = torch::relu(torch::nn::functional::linear(f, p["head_dense.weight"],
                                                p["head_dense.bias"]));
  const torch::Tensor want =
      torch::nn::functional::linear(f, p["head_logit.weight"],
                                    p["head_logit.bias"])
          .squeeze(1);
  EXPECT_TRUE(torch::allclose(m->forward(x), want, 1e-4, 1e-5));
}

TEST_F(TransferTest, TapsEveryKerasLayer) {
  auto m = make("mobilenetv2");
  m->eval();
  torch::NoGradGuard no_grad;
  EXPECT_EQ(m->default_tap(), "out_relu");
  EXPECT_EQ(m->tap_names(), m->backbone().layer_names());
  const torch::Tensor x = torch::rand({1, 1, 128, 128});
  const std::vector<std::pair<std::string, std::vector<int64_t>>> want = {
      {"Conv1_relu", {1, 32, 64, 64}},
      {"block_13_expand_relu", {1, 576, 8, 8}},
      {"block_13_depthwise_relu", {1, 576, 4, 4}},
      {"block_16_project_BN", {1, 320, 4, 4}},
      {"out_relu", {1, 1280, 4, 4}}};
  for (const auto& [layer, shape] : want) {
    Tap tap{layer, {}};
    m->forward_tapped(x, &tap);
    EXPECT_EQ(tap.activation.sizes(), shape) << layer;
  }
  // Every listed name yields an activation.
  for (const auto& layer : m->tap_names()) {
    Tap tap{layer, {}};
    m->forward_tapped(torch::rand({1, 1, 32, 32}), &tap);
    EXPECT_TRUE(tap.activation.defined()) << layer;
  }

  auto r = make("resnet50v2");
  r->eval();
  EXPECT_EQ(r->default_tap(), "post_relu");
  Tap stage{"conv4_block6_out", {}}, last{"post_relu", {}};
  r->forward_tapped(torch::rand({1, 1, 64, 64}), &stage);
  r->forward_tapped(torch::rand({1, 1, 64, 64}), &last);
  EXPECT_EQ(stage.activation.sizes(), (std::vector<int64_t>{1, 1024, 2, 2}));
  EXPECT_EQ(last.activation.sizes(), (std::vector<int64_t>{1, 2048, 2, 2}));
}

TEST_F(TransferTest, UnknownTapListsValidLayers) {
  auto m = make("resnet50v2");
  Tap tap{"block_13_expand_relu", {}};  // a MobileNetV2 name
  try {
    m->forward_tapped(torch::rand({1, 1, 32, 32}), &tap);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    EXPECT_TRUE(contains(msg, "block_13_expand_relu")) << msg;
    EXPECT_TRUE(contains(msg, "resnet50v2")) << msg;
    EXPECT_TRUE(contains(msg, "conv4_block6_out")) << msg;
    EXPECT_TRUE(contains(msg, "post_relu")) << msg;
  }
}

TEST_F(TransferTest, FrozenBackboneGetsNoGradientsAndBatchNormStaysEval) {
  auto m = make("mobilenetv2");
  m->set_backbone_trainable(false);
  EXPECT_EQ(m->trainable_parameters().size(), 4u);  // head weights + biases
  EXPECT_EQ(trainable_layers(*m),
            (std::set<std::string>{"head_dense", "head_logit"}));

  m->train();
  EXPECT_TRUE(m->is_training());
  for (const auto& child : m->backbone().modules(/*include_self=*/true)) {
    EXPECT_FALSE(child->is_training()) << child->name();
  }
  const auto* bn = dynamic_cast<torch::nn::BatchNorm2dImpl*>(
      m->backbone().keras_layers()[1].module.get());
  ASSERT_NE(bn, nullptr);
  const torch::Tensor mean_before = bn->running_mean.clone();
  const torch::Tensor x = torch::rand({4, 1, 64, 64});
  m->forward(x).sum().backward();
  // Inference-mode BN: running statistics untouched by a training step.
  EXPECT_TRUE(torch::equal(bn->running_mean, mean_before));
  for (const auto& p : m->named_parameters()) {
    EXPECT_EQ(p.value().grad().defined(), !backbone_layer(p.key()).size())
        << p.key();
  }
  // Dropout of the head does follow train(): two passes differ.
  {
    torch::NoGradGuard no_grad;
    EXPECT_FALSE(torch::equal(m->forward(x), m->forward(x)));
    m->eval();
    EXPECT_TRUE(torch::equal(m->forward(x), m->forward(x)));
  }

  m->set_backbone_trainable(true);
  m->train();
  m->zero_grad();
  m->forward(x).sum().backward();
  for (const auto& p : m->named_parameters()) {
    EXPECT_TRUE(p.value().grad().defined()) << p.key();
  }
  EXPECT_FALSE(m->backbone().is_training());
}

TEST_F(TransferTest, RandomInitBackboneTrainsItsBatchNorm) {
  // From scratch there are no ImageNet statistics to keep: batch norm uses
  // batch statistics while training and its running ones in eval().
  auto m = make("resnet50v2", /*pretrained=*/false);
  m->train();
  EXPECT_TRUE(m->backbone().is_training());
  const torch::nn::BatchNorm2dImpl* bn = nullptr;
  for (const auto& r : m->backbone().keras_layers()) {
    if (r.kind == KerasKind::kBatchNorm && !bn) {
      bn = dynamic_cast<torch::nn::BatchNorm2dImpl*>(r.module.get());
    }
  }
  ASSERT_NE(bn, nullptr);
  const torch::Tensor mean_before = bn->running_mean.clone();
  const torch::Tensor x = torch::rand({4, 1, 64, 64});
  m->forward(x).sum().backward();
  EXPECT_FALSE(torch::equal(bn->running_mean, mean_before));
  m->eval();
  EXPECT_FALSE(m->backbone().is_training());
  const torch::Tensor mean_eval = bn->running_mean.clone();
  {
    torch::NoGradGuard no_grad;
    m->forward(x);
  }
  EXPECT_TRUE(torch::equal(bn->running_mean, mean_eval));
}

TEST_F(TransferTest, TrainableFromKerasLayer) {
  auto m = make("mobilenetv2");
  m->set_backbone_trainable(false);
  m->set_trainable_from("block_16_expand");
  EXPECT_EQ(
      trainable_layers(*m),
      (std::set<std::string>{
          "block_16_expand", "block_16_expand_BN", "block_16_depthwise",
          "block_16_depthwise_BN", "block_16_project", "block_16_project_BN",
          "Conv_1", "Conv_1_bn", "head_dense", "head_logit"}));
  // A weightless layer starts at the next weighted one.
  m->set_trainable_from("block_16_depthwise_relu");
  EXPECT_EQ(trainable_layers(*m),
            (std::set<std::string>{"block_16_project", "block_16_project_BN",
                                   "Conv_1", "Conv_1_bn", "head_dense",
                                   "head_logit"}));
  m->set_trainable_from("Conv1");
  EXPECT_EQ(m->trainable_parameters().size(), m->parameters().size());

  auto r = make("resnet50v2");
  r->set_trainable_from("conv5_block1_preact_bn");
  std::set<std::string> layers = trainable_layers(*r);
  EXPECT_TRUE(layers.count("conv5_block1_0_conv"));
  EXPECT_TRUE(layers.count("post_bn"));
  EXPECT_FALSE(layers.count("conv4_block6_3_conv"));
  EXPECT_FALSE(layers.count("conv1_conv"));
}

TEST_F(TransferTest, TrainableFromUnknownLayerListsNames) {
  auto m = make("mobilenetv2");
  try {
    m->set_trainable_from("block_99_expand");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    EXPECT_TRUE(contains(msg, "block_99_expand")) << msg;
    EXPECT_TRUE(contains(msg, "Conv1, bn_Conv1")) << msg;
    EXPECT_TRUE(contains(msg, "out_relu")) << msg;
  }
}

TEST_F(TransferTest, RejectsBadConfigAndInput) {
  ModelConfig c = config("mobilenetv2", 16);
  EXPECT_THROW(make_model(c), ConfigError);
  c = config("resnet50v2");
  c.head_units = 0;
  try {
    make_model(c);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_TRUE(contains(e.what(), "--head-units 0")) << e.what();
  }
  c = config("mobilenetv2");
  c.dropout = 1.0;
  EXPECT_THROW(make_model(c), ConfigError);
  EXPECT_THROW(make_backbone("vgg16"), ModelError);

  auto m = make("mobilenetv2");
  try {
    m->forward(torch::rand({1, 3, 64, 64}));
    FAIL() << "expected ModelError";
  } catch (const ModelError& e) {
    EXPECT_TRUE(contains(e.what(), "[1, 3, 64, 64]")) << e.what();
  }
}

TEST_F(TransferTest, LoadsKerasBackboneWeights) {
  testing::TempDir dir;
  // A full Keras model file (with top) from an independent MobileNetV2.
  auto source = make_backbone("mobilenetv2", /*include_top=*/true);
  const std::string path = (dir / "imagenet.h5").string();
  write_keras_h5(path, to_keras_weights(source->keras_layers()),
                 {/*variable_length_strings=*/false,
                  /*model_weights_group=*/true});

  auto m = make("mobilenetv2", /*pretrained=*/false);
  m->train();
  EXPECT_TRUE(m->backbone().is_training());
  const torch::Tensor head_before =
      m->named_parameters()["head_dense.weight"].clone();
  load_keras_backbone(*m, path);
  EXPECT_EQ(m->config().pretrained, path);
  // Now pretrained: its batch norm keeps the ImageNet statistics.
  EXPECT_FALSE(m->backbone().is_training());
  auto src = source->named_parameters();
  for (const auto& p : m->named_parameters()) {
    const std::string layer = backbone_layer(p.key());
    if (layer.empty()) continue;
    EXPECT_TRUE(torch::equal(p.value(), src[p.key().substr(9)])) << p.key();
  }
  EXPECT_TRUE(
      torch::equal(m->named_parameters()["head_dense.weight"], head_before));

  // Wrong architecture: one ModelError, config untouched.
  auto r = make("resnet50v2", /*pretrained=*/false);
  try {
    load_keras_backbone(*r, path);
    FAIL() << "expected ModelError";
  } catch (const ModelError& e) {
    EXPECT_TRUE(contains(e.what(), path)) << e.what();
  }
  EXPECT_EQ(r->config().pretrained, "");

  ModelConfig b;
  auto baseline = make_model(b);
  try {
    load_keras_backbone(*baseline, path);
    FAIL() << "expected ModelError";
  } catch (const ModelError& e) {
    EXPECT_TRUE(contains(e.what(), "baseline")) << e.what();
  }
}

}  // namespace
}  // namespace cxr::models
