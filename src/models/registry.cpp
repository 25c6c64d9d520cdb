#include "cxr/common/error.h"
#include "cxr/models/baseline.h"
#include "cxr/models/transfer.h"

namespace cxr::models {

Classifier make_model(const ModelConfig& config) {
  if (config.input_size < 16 || config.input_size > 1024) {
    throw ConfigError("--size " + std::to_string(config.input_size) +
                      ": use 16..1024 pixels");
  }
  if (config.arch == "baseline") {
    return std::make_shared<BaselineCnnImpl>(config);
  }
  if (is_transfer(config.arch)) {
    return make_transfer_model(config);
  }
  throw ModelError("--model " + config.arch +
                   ": unknown model; use baseline, mobilenetv2 or resnet50v2");
}

bool is_transfer(const std::string& arch) {
  return arch == "mobilenetv2" || arch == "resnet50v2";
}

}  // namespace cxr::models
