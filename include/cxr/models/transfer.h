#pragma once
/// ImageNet transfer classifiers (MobileNetV2, ResNet50V2): backbone with
/// Keras layer names -> global average pooling -> Dense(head_units, relu) ->
/// Dropout -> Dense(1) logit. Input grayscale in [0,1] is repeated to 3
/// channels and scaled as Keras does (x * 2 - 1).
#include "cxr/models/classifier.h"

namespace cxr::models {

/// Builds config.arch ("mobilenetv2" or "resnet50v2") with random weights.
Classifier make_transfer_model(const ModelConfig& config);

}  // namespace cxr::models
