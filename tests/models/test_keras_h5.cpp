#include "cxr/models/keras_h5.h"

#include "cxr/common/error.h"
#include "cxr/models/mobilenet_v2.h"
#include "cxr/models/resnet50_v2.h"
#include "keras_test_util.h"
#include "test_util.h"

namespace cxr::models {
namespace {

class KerasH5Test : public testing::SeededTest {};

using cxr::testing::contains;

// The message of the ModelError `f` throws ("" if it does not throw one).
template <typename F>
std::string model_error(F&& f) {
  try {
    f();
  } catch (const ModelError& e) {
    return e.what();
  }
  return "";
}

// Every parameter and buffer of `a` equals the one of the same name in `b`.
void expect_same_state(torch::nn::Module& a, torch::nn::Module& b) {
  auto pa = a.named_parameters();
  auto pb = b.named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& p : pa) {
    ASSERT_TRUE(pb.contains(p.key())) << p.key();
    EXPECT_TRUE(torch::equal(p.value(), pb[p.key()])) << p.key();
  }
  auto ba = a.named_buffers();
  auto bb = b.named_buffers();
  for (const auto& x : ba) {
    if (contains(x.key(), "num_batches_tracked")) continue;
    EXPECT_TRUE(torch::equal(x.value(), bb[x.key()])) << x.key();
  }
}

// Random, non-trivial BN statistics so that the mapping of all four BN
// tensors is checked, not just the defaults.
void randomize_bn(KerasBackboneImpl& net) {
  torch::NoGradGuard no_grad;
  for (const auto& r : net.keras_layers()) {
    if (r.kind != KerasKind::kBatchNorm) continue;
    auto* bn = dynamic_cast<torch::nn::BatchNorm2dImpl*>(r.module.get());
    bn->weight.uniform_(0.5, 1.5);
    bn->bias.normal_();
    bn->running_mean.normal_();
    bn->running_var.uniform_(0.5, 2.0);
  }
}

std::vector<KerasLayerWeights> small_layers() {
  return {
      {"conv",
       {{"conv/kernel:0", torch::randn({3, 3, 2, 4})},
        {"conv/bias:0", torch::randn({4})}}},
      {"conv_relu", {}},
      {"bn",
       {{"bn/gamma:0", torch::rand({4})},
        {"bn/beta:0", torch::randn({4})},
        {"bn/moving_mean:0", torch::randn({4})},
        {"bn/moving_variance:0", torch::rand({4})}}},
  };
}

void expect_same_layers(const std::vector<KerasLayerWeights>& got,
                        const std::vector<KerasLayerWeights>& want) {
  std::vector<const KerasLayerWeights*> weighted;
  for (const auto& l : want) {
    if (!l.weights.empty()) weighted.push_back(&l);
  }
  ASSERT_EQ(got.size(), weighted.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].layer, weighted[i]->layer);
    ASSERT_EQ(got[i].weights.size(), weighted[i]->weights.size());
    for (size_t j = 0; j < got[i].weights.size(); ++j) {
      EXPECT_EQ(got[i].weights[j].name, weighted[i]->weights[j].name);
      EXPECT_TRUE(
          torch::equal(got[i].weights[j].value, weighted[i]->weights[j].value))
          << got[i].layer << " " << got[i].weights[j].name;
    }
  }
}

TEST_F(KerasH5Test, RoundTripInEveryLayoutVariant) {
  testing::TempDir dir;
  const auto layers = small_layers();
  for (bool vl : {false, true}) {
    for (bool nested : {false, true}) {
      const std::string path = (dir / "w.h5").string();
      write_keras_h5(path, layers, {vl, nested});
      SCOPED_TRACE(std::string(vl ? "vlen" : "fixed") +
                   (nested ? " model_weights" : " root"));
      // Weightless layers are skipped; weight_names order is kept (HDF5
      // itself would list beta before gamma).
      expect_same_layers(read_keras_h5(path), layers);
      EXPECT_EQ(read_keras_layer_names(path),
                (std::vector<std::string>{"conv", "conv_relu", "bn"}));
    }
  }
}

TEST_F(KerasH5Test, ReadsLayerNamesSplitOverSeveralAttributes) {
  // More than 64 KiB of layer names: Keras splits them into layer_names0..N.
  std::vector<KerasLayerWeights> layers;
  for (int i = 0; i < 2500; ++i) {
    const std::string name =
        "a_rather_long_keras_layer_name_" + std::to_string(i);
    layers.push_back({name, {{name + "/bias:0", torch::full({1}, float(i))}}});
  }
  testing::TempDir dir;
  for (bool vl : {false, true}) {
    write_keras_h5((dir / "many.h5").string(), layers, {vl, false});
    expect_same_layers(read_keras_h5((dir / "many.h5").string()), layers);
  }
}

TEST_F(KerasH5Test, MobileNetV2RoundTripWithTop) {
  MobileNetV2 a(true), b(true);
  randomize_bn(*a);
  testing::TempDir dir;
  const std::string path = (dir / "mnv2.h5").string();
  write_keras_h5(path, to_keras_weights(a->keras_layers()));
  auto file = read_keras_h5(path);
  ASSERT_EQ(file.size(), 105u);
  // Keras layout on disk.
  EXPECT_EQ(file[0].weights[0].name, "Conv1/kernel:0");
  EXPECT_EQ(file[0].weights[0].value.sizes(),
            (std::vector<int64_t>{3, 3, 3, 32}));
  EXPECT_EQ(file[2].weights[0].name,
            "expanded_conv_depthwise/depthwise_kernel:0");
  EXPECT_EQ(file[2].weights[0].value.sizes(),
            (std::vector<int64_t>{3, 3, 32, 1}));
  EXPECT_EQ(file.back().weights[0].value.sizes(),
            (std::vector<int64_t>{1280, 1000}));
  b->load_keras(path);
  expect_same_state(*a, *b);
  a->eval();
  b->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::rand({1, 3, 64, 64}) * 2 - 1;
  EXPECT_TRUE(torch::equal(a->forward(x), b->forward(x)));

  // A file with the top loads into a backbone without it.
  MobileNetV2 notop(false);
  notop->load_keras(path);
  auto pa = a->named_parameters();
  for (const auto& p : notop->named_parameters()) {
    EXPECT_TRUE(torch::equal(p.value(), pa[p.key()])) << p.key();
  }
}

TEST_F(KerasH5Test, ResNet50V2RoundTrip) {
  ResNet50V2 a(false), b(false);
  randomize_bn(*a);
  testing::TempDir dir;
  const std::string path = (dir / "r50v2.h5").string();
  write_keras_h5(path, to_keras_weights(a->keras_layers()));
  b->load_keras(path);
  expect_same_state(*a, *b);
}

TEST_F(KerasH5Test, NoTopFileDoesNotFitModelWithTop) {
  MobileNetV2 notop(false);
  testing::TempDir dir;
  const std::string path = (dir / "notop.h5").string();
  write_keras_h5(path, to_keras_weights(notop->keras_layers()));
  MobileNetV2 top(true);
  const std::string msg = model_error([&] { top->load_keras(path); });
  EXPECT_TRUE(contains(msg, path)) << msg;
  EXPECT_TRUE(contains(msg, "'predictions' is missing")) << msg;
}

TEST_F(KerasH5Test, MisshapedWeightNamesFileLayerAndBothShapes) {
  MobileNetV2 a(false);
  auto layers = to_keras_weights(a->keras_layers());
  auto it = std::find_if(layers.begin(), layers.end(), [](const auto& l) {
    return l.layer == "block_1_expand";
  });
  ASSERT_NE(it, layers.end());
  ASSERT_EQ(it->weights[0].value.sizes(), (std::vector<int64_t>{1, 1, 16, 96}));
  it->weights[0].value = torch::zeros({1, 1, 16, 99});
  const std::string layer = it->layer;
  testing::TempDir dir;
  const std::string path = (dir / "bad.h5").string();
  write_keras_h5(path, layers);
  MobileNetV2 b(false);
  const torch::Tensor before = b->named_parameters()["Conv1.weight"].clone();
  const std::string msg = model_error([&] { b->load_keras(path); });
  EXPECT_TRUE(contains(msg, path)) << msg;
  EXPECT_TRUE(contains(msg, "'" + layer + "'")) << msg;
  EXPECT_TRUE(contains(msg, "[1, 1, 16, 99]")) << msg;
  EXPECT_TRUE(contains(msg, "[1, 1, 16, 96]")) << msg;
  // Nothing was copied before the error.
  EXPECT_TRUE(torch::equal(b->named_parameters()["Conv1.weight"], before));
}

TEST_F(KerasH5Test, MissingExtraAndForeignLayers) {
  MobileNetV2 a(false);
  auto layers = to_keras_weights(a->keras_layers());
  testing::TempDir dir;
  const std::string path = (dir / "w.h5").string();

  auto missing = layers;
  missing.erase(missing.begin() + 10);
  write_keras_h5(path, missing);
  std::string msg = model_error([&] { a->load_keras(path); });
  EXPECT_TRUE(contains(msg, path)) << msg;
  EXPECT_TRUE(contains(msg, "'" + layers[10].layer + "' is missing")) << msg;

  auto extra = layers;
  extra.push_back({"my_dense", {{"my_dense/kernel:0", torch::zeros({2, 2})}}});
  write_keras_h5(path, extra);
  msg = model_error([&] { a->load_keras(path); });
  EXPECT_TRUE(contains(msg, "'my_dense' has no counterpart")) << msg;

  ResNet50V2 r(false);
  msg = model_error([&] { r->load_keras(path); });
  EXPECT_TRUE(contains(msg, "different architecture")) << msg;
  EXPECT_TRUE(contains(msg, "'Conv1'")) << msg;
  EXPECT_TRUE(contains(msg, "'conv1_conv'")) << msg;
}

TEST_F(KerasH5Test, WrongWeightNamesAreRejected) {
  MobileNetV2 a(false);
  auto layers = to_keras_weights(a->keras_layers());
  // A biased Conv1 (e.g. from a different Keras variant).
  layers[0].weights.push_back({"Conv1/bias:0", torch::zeros({32})});
  testing::TempDir dir;
  const std::string path = (dir / "w.h5").string();
  write_keras_h5(path, layers);
  const std::string msg = model_error([&] { a->load_keras(path); });
  EXPECT_TRUE(contains(msg, "'Conv1' has weights [kernel, bias]")) << msg;
  EXPECT_TRUE(contains(msg, "expects [kernel]")) << msg;
}

TEST_F(KerasH5Test, UnreadableFilesGiveOneModelErrorAndNoHdf5Stack) {
  testing::TempDir dir;
  const std::string missing = (dir / "nope.h5").string();
  const std::string text = (dir / "text.h5").string();
  testing::write_bytes(text, "this is not HDF5\n");
  const std::string empty = (dir / "empty.h5").string();
  write_keras_h5(empty, {});  // valid HDF5 with an empty layer list

  ::testing::internal::CaptureStderr();
  const std::string m1 = model_error([&] { read_keras_h5(missing); });
  const std::string m2 = model_error([&] { read_keras_h5(text); });
  const std::string stderr_text = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(stderr_text, "");
  EXPECT_TRUE(contains(m1, missing) && contains(m1, "not found")) << m1;
  EXPECT_TRUE(contains(m2, text) && contains(m2, "not an HDF5 file")) << m2;
  EXPECT_TRUE(read_keras_h5(empty).empty());
  MobileNetV2 net(false);
  const std::string m3 = model_error([&] { net->load_keras(empty); });
  EXPECT_TRUE(contains(m3, empty) && contains(m3, "different architecture"))
      << m3;
}

// One-edge chunks: the claimed shape may be any size.
void write_claiming_file(const std::string& path,
                         const std::vector<hsize_t>& dims) {
  cxr::testing::write_claiming_keras_h5(path, dims,
                                        std::vector<hsize_t>(dims.size(), 1));
}

// Found reading the code fuzz/fuzz_keras_h5 reaches: a dataset header
// claiming a huge shape went straight to torch::empty, which threw c10::Error
// (not a ModelError) or, below the size where that fails, exhausted memory.
TEST_F(KerasH5Test, DatasetClaimingHugeShapeIsAModelError) {
  testing::TempDir dir;
  const std::string path = (dir / "huge.h5").string();
  write_claiming_file(path, {hsize_t{1} << 40, hsize_t{1} << 40});
  const std::string msg = model_error([&] { read_keras_h5(path); });
  EXPECT_TRUE(contains(msg, path) && contains(msg, "'kernel'") &&
              contains(msg, "claims more than"))
      << msg;
  // A small claimed shape still reads (as the fill value, zeros).
  write_claiming_file(path, {3, 2});
  const auto layers = read_keras_h5(path);
  ASSERT_EQ(layers.size(), 1u);
  EXPECT_EQ(layers[0].weights[0].value.sizes(), torch::IntArrayRef({3, 2}));
}

TEST_F(KerasH5Test, TruncatedFileIsAModelError) {
  testing::TempDir dir;
  const std::string path = (dir / "w.h5").string();
  MobileNetV2 a(false);
  write_keras_h5(path, to_keras_weights(a->keras_layers()));
  std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);
  ::testing::internal::CaptureStderr();
  const std::string msg = model_error([&] { a->load_keras(path); });
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  EXPECT_TRUE(contains(msg, path)) << msg;
}

TEST_F(KerasH5Test, WriterRejectsRepeatedLayersAndBadPaths) {
  testing::TempDir dir;
  auto layers = small_layers();
  layers.push_back(layers[0]);
  try {
    write_keras_h5((dir / "w.h5").string(), layers);
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    EXPECT_TRUE(contains(e.what(), "'conv'")) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "w.h5"));
  const std::string blocked = (dir / "file").string();
  testing::write_bytes(blocked, "x");
  EXPECT_THROW(write_keras_h5(blocked + "/sub/w.h5", small_layers()), Error);
}

TEST_F(KerasH5Test, CountsMovingStatisticsLikeKeras) {
  auto bn = torch::nn::BatchNorm2d(8);
  EXPECT_EQ(count_keras_parameters(*bn), 32);
  EXPECT_EQ(count_parameters(*bn), 16);
}

}  // namespace
}  // namespace cxr::models
