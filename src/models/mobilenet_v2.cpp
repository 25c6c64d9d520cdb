#include "cxr/models/mobilenet_v2.h"

#include <array>

#include "cxr/models/activation.h"

namespace cxr::models {

namespace nn = torch::nn;
namespace F = torch::nn::functional;

namespace {

// (expansion t, output channels c, stride s) of blocks 0..16: Table 2 of
// Sandler et al. with each "n" row unrolled, as keras.applications does.
struct BlockSpec {
  int64_t expansion, filters, stride;
};
constexpr BlockSpec kBlocks[] = {
    {1, 16, 1}, {6, 24, 2},  {6, 24, 1},  {6, 32, 2},  {6, 32, 1}, {6, 32, 1},
    {6, 64, 2}, {6, 64, 1},  {6, 64, 1},  {6, 64, 1},  {6, 96, 1}, {6, 96, 1},
    {6, 96, 1}, {6, 160, 2}, {6, 160, 1}, {6, 160, 1}, {6, 320, 1}};

// TensorFlow "same" padding for a k x k, stride-s convolution: the total
// padding is split with the extra pixel after (bottom/right), so an even
// input with k=3, s=2 gets (0, 1).
torch::Tensor pad_tf_same(const torch::Tensor& x, int64_t k, int64_t s) {
  auto pads = [&](int64_t n) {
    const int64_t out = (n + s - 1) / s;
    const int64_t total = std::max<int64_t>((out - 1) * s + k - n, 0);
    return std::pair<int64_t, int64_t>{total / 2, total - total / 2};
  };
  auto [top, bottom] = pads(x.size(2));
  auto [left, right] = pads(x.size(3));
  return F::pad(x, F::PadFuncOptions({left, right, top, bottom}));
}

// keras.applications.imagenet_utils.correct_pad for a 3x3 kernel: (1, 1) on
// odd sides, (0, 1) on even sides.
torch::Tensor correct_pad(const torch::Tensor& x) {
  const int64_t top = x.size(2) % 2 == 0 ? 0 : 1;
  const int64_t left = x.size(3) % 2 == 0 ? 0 : 1;
  return F::pad(x, F::PadFuncOptions({left, 1, top, 1}));
}

}  // namespace

MobileNetV2Impl::MobileNetV2Impl(bool include_top, int64_t classes)
    // Keras MobileNetV2 uses BatchNormalization(epsilon=1e-3, momentum=0.999).
    : KerasBackboneImpl("MobileNetV2", include_top, classes, {1e-3, 0.999}) {
  conv1_ = add_conv("Conv1", KerasConvOptions(3, 32, 3).stride(2));
  bn_conv1_ = add_bn("bn_Conv1", 32);
  add_name("Conv1_relu");

  int64_t in = 32;
  for (size_t id = 0; id < std::size(kBlocks); ++id) {
    const BlockSpec& spec = kBlocks[id];
    Block b;
    b.prefix = id == 0 ? "expanded_conv_" : "block_" + std::to_string(id) + "_";
    b.stride = spec.stride;
    b.residual = spec.stride == 1 && in == spec.filters;
    const int64_t hidden = in * spec.expansion;
    const std::string& p = b.prefix;
    if (id != 0) {
      b.expand = add_conv(p + "expand", KerasConvOptions(in, hidden, 1));
      b.expand_bn = add_bn(p + "expand_BN", hidden);
      add_name(p + "expand_relu");
    }
    if (b.stride == 2) add_name(p + "pad");
    // Stride 1 is Keras padding="same", i.e. 1 on every side; stride 2 is
    // padded explicitly (correct_pad) and then "valid".
    b.depthwise = add_conv(p + "depthwise", KerasConvOptions(hidden, hidden, 3)
                                                .stride(b.stride)
                                                .padding(b.stride == 1 ? 1 : 0)
                                                .depthwise(true));
    b.depthwise_bn = add_bn(p + "depthwise_BN", hidden);
    add_name(p + "depthwise_relu");
    b.project =
        add_conv(p + "project", KerasConvOptions(hidden, spec.filters, 1));
    b.project_bn = add_bn(p + "project_BN", spec.filters);
    if (b.residual) add_name(p + "add");
    blocks_.push_back(std::move(b));
    in = spec.filters;
  }

  conv_1_ = add_conv("Conv_1", KerasConvOptions(in, 1280, 1));
  conv_1_bn_ = add_bn("Conv_1_bn", 1280);
  add_name("out_relu");
  if (include_top) {
    add_name("global_average_pooling2d");
    predictions_ = add_dense("predictions", 1280, classes);
  }
}

std::vector<std::string> MobileNetV2Impl::top_layer_names() const {
  return {"global_average_pooling2d", "predictions", "Logits"};
}

namespace {

// Conv -> BN -> ReLU6 (MobileNetV2's unit), each output handed to `tap`
// under its Keras layer name.
template <typename TapFn>
torch::Tensor conv_bn_relu6(torch::Tensor h,
                            nn::Conv2d& conv,
                            nn::BatchNorm2d& bn,
                            const std::array<const char*, 3>& names,
                            TapFn&& tap) {
  h = conv->forward(h);
  tap(names[0], h);
  h = bn->forward(h);
  tap(names[1], h);
  // models::relu6: its backward also runs in bfloat16 (autocast), where
  // torch::relu6's has no CPU kernel in LibTorch 1.13.
  h = models::relu6(h);
  tap(names[2], h);
  return h;
}

}  // namespace

torch::Tensor MobileNetV2Impl::forward_tapped(const torch::Tensor& x,
                                              Tap* tap) {
  auto top_level = [&](const char* name, const torch::Tensor& v) {
    tap_if(tap, name, v);
  };
  torch::Tensor h =
      conv_bn_relu6(pad_tf_same(x, 3, 2), conv1_, bn_conv1_,
                    {"Conv1", "bn_Conv1", "Conv1_relu"}, top_level);
  for (auto& b : blocks_) {
    // Layer names are only built when a tap is requested.
    auto t = [&](const char* suffix, const torch::Tensor& v) {
      if (tap) tap_if(tap, b.prefix + suffix, v);
    };
    const torch::Tensor input = h;
    if (b.expand) {
      h = conv_bn_relu6(h, b.expand, b.expand_bn,
                        {"expand", "expand_BN", "expand_relu"}, t);
    }
    if (b.stride == 2) {
      h = correct_pad(h);
      t("pad", h);
    }
    h = conv_bn_relu6(h, b.depthwise, b.depthwise_bn,
                      {"depthwise", "depthwise_BN", "depthwise_relu"}, t);
    h = b.project->forward(h);
    t("project", h);
    // Linear bottleneck: no activation after the projection (Sandler et al.,
    // Sec. 3.2).
    h = b.project_bn->forward(h);
    t("project_BN", h);
    if (b.residual) {
      h = input + h;
      t("add", h);
    }
  }
  h = conv_bn_relu6(h, conv_1_, conv_1_bn_, {"Conv_1", "Conv_1_bn", "out_relu"},
                    top_level);
  return forward_top(h, "global_average_pooling2d", predictions_, tap);
}

}  // namespace cxr::models
