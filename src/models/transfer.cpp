// Temporary: replaced by the MobileNetV2/ResNet50V2 implementation.
#include "cxr/models/transfer.h"

#include "cxr/common/error.h"

namespace cxr::models {
Classifier make_transfer_model(const ModelConfig& config) {
  throw ModelError("--model " + config.arch + ": not implemented yet");
}
}  // namespace cxr::models
