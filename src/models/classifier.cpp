// The Classifier contract's shared code: the model config's JSON, taps and
// their checks, parameter counts.
#include <algorithm>

#include "cxr/common/error.h"
#include "cxr/models/classifier.h"

namespace cxr::models {

// config.json's "model" object: one field list for both directions (keys are
// the member names; arch and input_size are required, the rest default).
// Packed by hand: clang-format would put one name on each line.
// clang-format off
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(ModelConfig,
    arch, input_size, filters, batch_norm, dropout, head_units, mean, std,
    pretrained)
// clang-format on

nlohmann::json ModelConfig::to_json() const {
  return *this;
}

ModelConfig ModelConfig::from_json(const nlohmann::json& j) {
  try {
    j.at("arch").get<std::string>();
    j.at("input_size").get<int>();
    return j.get<ModelConfig>();
  } catch (const nlohmann::json::exception& e) {
    throw ModelError(std::string("model config is incomplete or has a wrong "
                                 "type: ") +
                     e.what());
  }
}

std::vector<torch::Tensor> ClassifierImpl::trainable_parameters() {
  std::vector<torch::Tensor> out;
  for (auto& p : parameters()) {
    if (p.requires_grad()) out.push_back(p);
  }
  return out;
}

void ClassifierImpl::maybe_tap(Tap* tap,
                               const char* name,
                               const torch::Tensor& t) {
  if (tap) tap->record(name, t);
}

void ClassifierImpl::check_tap(const Tap* tap) const {
  if (!tap) return;
  auto names = tap_names();
  auto known = [&](const std::string& n) {
    return std::find(names.begin(), names.end(), n) != names.end();
  };
  std::string bad;
  if (!tap->layer.empty() && !known(tap->layer)) bad = tap->layer;
  for (const auto& kv : tap->more) {
    if (bad.empty() && !known(kv.first)) bad = kv.first;
  }
  if (bad.empty()) return;
  throw ConfigError(unknown_layer_message(
      "--layer " + bad, "this " + config_.arch + " model", names));
}

std::string unknown_layer_message(const std::string& what,
                                  const std::string& model,
                                  const std::vector<std::string>& valid) {
  std::string list;
  for (const auto& n : valid) list += (list.empty() ? "" : ", ") + n;
  return what + ": no such layer in " + model +
         "; valid layers (input to output): " + list;
}

int64_t count_parameters(torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

}  // namespace cxr::models
