#include "cxr/models/resnet50_v2.h"

namespace cxr::models {

namespace F = torch::nn::functional;
using torch::indexing::None;
using torch::indexing::Slice;

namespace {

// (bottleneck filters, blocks, stride of the last block) per stack, as
// ResNet50V2's stack_fn: stack2(x, 64, 3), (128, 4), (256, 6),
// (512, 3, stride1=1).
struct StackSpec {
  int64_t filters, blocks, stride;
};
constexpr StackSpec kStacks[] = {
    {64, 3, 2}, {128, 4, 2}, {256, 6, 2}, {512, 3, 1}};

}  // namespace

ResNet50V2Impl::ResNet50V2Impl(bool include_top, int64_t classes)
    // keras.applications.resnet_v2: BatchNormalization(epsilon=1.001e-5)
    // with the default momentum 0.99.
    : KerasBackboneImpl("ResNet50V2", include_top, classes, {1.001e-5, 0.99}) {
  add_name("conv1_pad");
  // ZeroPadding2D(3) + Conv2D(64, 7, strides=2, use_bias=True): the padding
  // is symmetric, so the conv pads itself.
  conv1_conv_ = add_conv(
      "conv1_conv", KerasConvOptions(3, 64, 7).stride(2).padding(3).bias(true));
  add_name("pool1_pad");
  add_name("pool1_pool");

  int64_t in = 64;
  for (size_t s = 0; s < std::size(kStacks); ++s) {
    const StackSpec& spec = kStacks[s];
    const int64_t f = spec.filters;
    for (int64_t i = 1; i <= spec.blocks; ++i) {
      Block b;
      b.prefix = "conv" + std::to_string(s + 2) + "_block" + std::to_string(i);
      b.stride = i == spec.blocks ? spec.stride : 1;
      const std::string& p = b.prefix;
      // Keras model.layers order: by graph depth, so the shortcut
      // (`_0_conv` or the auto-named max-pool) comes right before `_3_conv`.
      b.preact_bn = add_bn(p + "_preact_bn", in);
      add_name(p + "_preact_relu");
      b.conv1 = add_conv(p + "_1_conv", KerasConvOptions(in, f, 1));
      b.bn1 = add_bn(p + "_1_bn", f);
      add_name(p + "_1_relu");
      add_name(p + "_2_pad");
      b.conv2 = add_conv(p + "_2_conv",
                         KerasConvOptions(f, f, 3).stride(b.stride).padding(1));
      b.bn2 = add_bn(p + "_2_bn", f);
      add_name(p + "_2_relu");
      if (i == 1)
        b.conv0 =
            add_conv(p + "_0_conv", KerasConvOptions(in, 4 * f, 1).bias(true));
      b.conv3 =
          add_conv(p + "_3_conv", KerasConvOptions(f, 4 * f, 1).bias(true));
      add_name(p + "_out");
      blocks_.push_back(std::move(b));
      in = 4 * f;
    }
  }
  post_bn_ = add_bn("post_bn", in);
  add_name("post_relu");
  if (include_top) {
    add_name("avg_pool");
    predictions_ = add_dense("predictions", in, classes);
  }
}

std::vector<std::string> ResNet50V2Impl::top_layer_names() const {
  return {"avg_pool", "predictions", "probs"};
}

torch::Tensor ResNet50V2Impl::forward_tapped(const torch::Tensor& x, Tap* tap) {
  if (tap && tap->wants("conv1_pad")) {
    tap->record("conv1_pad", F::pad(x, F::PadFuncOptions({3, 3, 3, 3})));
  }
  torch::Tensor h = conv1_conv_->forward(x);
  tap_if(tap, "conv1_conv", h);
  // Keras pads with zeros before MaxPooling2D(3, strides=2); the stem has no
  // activation yet (pre-activation), so zeros can win against negative
  // values and torch's -inf max-pool padding would differ.
  h = F::pad(h, F::PadFuncOptions({1, 1, 1, 1}));
  tap_if(tap, "pool1_pad", h);
  h = torch::max_pool2d(h, 3, 2);
  tap_if(tap, "pool1_pool", h);

  for (auto& b : blocks_) {
    auto t = [&](const char* suffix, const torch::Tensor& v) {
      if (tap) tap_if(tap, b.prefix + suffix, v);
    };
    torch::Tensor preact = b.preact_bn->forward(h);
    t("_preact_bn", preact);
    preact = torch::relu(preact);
    t("_preact_relu", preact);
    torch::Tensor y = b.conv1->forward(preact);
    t("_1_conv", y);
    y = b.bn1->forward(y);
    t("_1_bn", y);
    y = torch::relu(y);
    t("_1_relu", y);
    if (tap && tap->wants(b.prefix + "_2_pad")) {
      tap->record(b.prefix + "_2_pad",
                  F::pad(y, F::PadFuncOptions({1, 1, 1, 1})));
    }
    y = b.conv2->forward(y);
    t("_2_conv", y);
    y = b.bn2->forward(y);
    t("_2_bn", y);
    y = torch::relu(y);
    t("_2_relu", y);
    torch::Tensor shortcut;
    if (b.conv0) {
      shortcut = b.conv0->forward(preact);
      t("_0_conv", shortcut);
    } else if (b.stride > 1) {
      // MaxPooling2D(1, strides=s) is plain subsampling.
      shortcut = h.index({Slice(), Slice(), Slice(None, None, b.stride),
                          Slice(None, None, b.stride)});
    } else {
      shortcut = h;
    }
    y = b.conv3->forward(y);
    t("_3_conv", y);
    h = shortcut + y;
    t("_out", h);
  }

  h = post_bn_->forward(h);
  tap_if(tap, "post_bn", h);
  h = torch::relu(h);
  tap_if(tap, "post_relu", h);
  return forward_top(h, "avg_pool", predictions_, tap);
}

}  // namespace cxr::models
