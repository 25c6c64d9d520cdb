#include "cxr/infer/run_config.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <map>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/common/precision.h"
#include "cxr/common/vectors.h"
#include "cxr/infer/gradcam.h"
#include "cxr/models/layout.h"
#include "cxr/models/weights_file.h"

namespace fs = std::filesystem;

namespace cxr::infer {

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

double Calibration::apply(double logit) const {
  return 1.0 / (1.0 + std::exp(-logit / temperature));
}

torch::Tensor Calibration::apply(const torch::Tensor& logits) const {
  return torch::sigmoid(logits / temperature);
}

nlohmann::json Calibration::to_json() const {
  return {{"method", method},
          {"temperature", temperature},
          {"source", source},
          {"fit", fit}};
}

Calibration Calibration::from_json(const nlohmann::json& j,
                                   const std::string& where) {
  Calibration c;
  if (j.is_null()) return c;
  try {
    c.method = j.value("method", std::string("none"));
    c.temperature = j.value("temperature", 1.0);
    c.source = j.value("source", std::string());
    c.fit = j.value("fit", nlohmann::json::object());
  } catch (const nlohmann::json::exception& e) {
    throw ModelError("'" + where + "': bad \"calibration\" (" + e.what() +
                     "); re-fit it with cxr calibrate");
  }
  if (c.method != "none" && c.method != "temperature") {
    throw ModelError("'" + where + "': unknown calibration method '" +
                     c.method + "'; re-fit it with cxr calibrate");
  }
  if (!(std::isfinite(c.temperature) && c.temperature > 0)) {
    throw ModelError("'" + where + "': calibration temperature " +
                     std::to_string(c.temperature) +
                     " is not a positive number; re-fit it with cxr "
                     "calibrate");
  }
  return c;
}

std::string RunConfig::train_on() const {
  return train.value("train_on", std::string("train"));
}

double RunConfig::threshold_calibrated() const {
  if (threshold <= 0 || threshold >= 1) return threshold;
  return calibration.apply(std::log(threshold / (1 - threshold)));
}

data::DatasetOptions RunConfig::data_options(
    const std::string& root_override, const std::string& cache_dir) const {
  data::DatasetOptions o;
  o.root =
      root_override.empty() ? data.value("root", std::string()) : root_override;
  o.size = data.value("size", o.size);
  o.seed = data.value("seed", o.seed);
  o.train_fraction = data.value("train_fraction", o.train_fraction);
  o.val_fraction = data.value("val_fraction", o.val_fraction);
  o.positive = data.value("positive", o.positive);
  o.cache_dir = cache_dir;
  return o;
}

namespace {

/// Every number read_run_config passes on is checked here, so a hand-edited
/// or damaged config.json is a ModelError naming the field, not a model
/// that silently decides with a threshold of 7 or a 0 px input.
void check_run_fields(const nlohmann::json& j,
                      const RunConfig& c,
                      const std::string& where) {
  auto bad = [&](const std::string& field, const std::string& value,
                 const std::string& want) {
    throw ModelError("'" + where + "': field " + field + " is " + value +
                     ", expected " + want + "; fix it or retrain the run");
  };
  auto text = [](const nlohmann::json& v) { return v.dump(); };
  const auto& m = j.at("model");
  if (c.model.input_size < 8 || c.model.input_size > 4096) {
    bad("model.input_size", std::to_string(c.model.input_size),
        "an image size in 8..4096 px");
  }
  if (j.contains("data") && j["data"].contains("size")) {
    const auto& s = j["data"]["size"];
    if (!s.is_number_integer() || s.get<int64_t>() < 8 ||
        s.get<int64_t>() > 4096) {
      bad("data.size", text(s), "an image size in 8..4096 px");
    }
  }
  if (!(c.model.dropout >= 0 && c.model.dropout < 1)) {
    bad("model.dropout", text(m.value("dropout", nlohmann::json())),
        "a number in [0, 1)");
  }
  if (c.model.head_units < 1) {
    bad("model.head_units", std::to_string(c.model.head_units),
        "an integer >= 1");
  }
  for (int f : c.model.filters) {
    if (f < 1)
      bad("model.filters", text(m.value("filters", nlohmann::json())),
          "channels >= 1");
  }
  // mean/std: a number or a list of numbers (per channel); std divides.
  for (const char* key : {"mean", "std"}) {
    if (!m.contains(key)) continue;
    const auto& v = m[key];
    const std::vector<nlohmann::json> items =
        v.is_array() ? v.get<std::vector<nlohmann::json>>()
                     : std::vector<nlohmann::json>{v};
    for (const auto& x : items) {
      const bool ok = x.is_number() && std::isfinite(x.get<double>()) &&
                      (std::string(key) == "mean" || x.get<double>() > 0);
      if (!ok) {
        bad(std::string("model.") + key, text(v),
            std::string(key) == "mean" ? "finite numbers"
                                       : "positive finite numbers");
      }
    }
  }
  if (c.positive.empty() || c.negative.empty() || c.positive == c.negative) {
    bad("classes", text(j.at("classes")),
        "two different non-empty class names");
  }
  if (c.ood.is_object() && c.ood.contains("threshold") &&
      !c.ood["threshold"].is_null()) {
    const auto& t = c.ood["threshold"];
    if (!t.is_number() || !std::isfinite(t.get<double>())) {
      bad("ood.threshold", text(t), "a finite number");
    }
  }
}

}  // namespace

RunConfig read_run_config(const std::string& dir) {
  const fs::path d(dir);
  if (!fs::is_directory(d)) {
    throw ModelError("run folder '" + dir +
                     "' does not exist; pass the --out folder of cxr train");
  }
  const fs::path cfg = d / "config.json";
  if (!fs::exists(cfg)) {
    throw ModelError("'" + cfg.string() +
                     "' is missing: not a cxr run folder (train one with "
                     "cxr train)");
  }
  nlohmann::json j;
  try {
    j = read_json(cfg);
  } catch (const DataError& e) {
    throw ModelError(e.what());
  }
  // value() on a non-object throws nlohmann's type_error (found by
  // fuzz_run_folder: a config.json holding 1).
  if (!j.is_object()) {
    throw ModelError("'" + cfg.string() +
                     "' is not a cxr run config (not a JSON object); "
                     "restore it or retrain the run");
  }
  if (!j.contains("format") || !j.at("format").is_string() ||
      j.at("format").get<std::string>() != kRunFormat) {
    throw ModelError("'" + cfg.string() +
                     "' is not a cxr run config (format '" +
                     (j.contains("format") ? j.at("format").dump() : "?") +
                     "', expected '" + kRunFormat + "')");
  }
  RunConfig c;
  c.dir = dir;
  try {
    c.model = models::ModelConfig::from_json(j.at("model"));
    c.positive = j.at("classes").at("positive").get<std::string>();
    c.negative = j.at("classes").at("negative").get<std::string>();
    c.threshold = j.at("threshold").at("value").get<double>();
    c.threshold_rule = j.at("threshold").value("rule", std::string());
    c.ood = j.value("ood", nlohmann::json());
    c.data = j.value("data", nlohmann::json::object());
    c.train = j.value("train", nlohmann::json::object());
    c.result = j.value("result", nlohmann::json::object());
    c.status = j.value("status", std::string());
    c.cxr_version = j.value("cxr_version", std::string());
    c.created = j.value("created", std::string());
  } catch (const nlohmann::json::exception& e) {
    throw ModelError("'" + cfg.string() + "' is incomplete (" + e.what() +
                     "); re-run cxr train to recreate it");
  }
  if (!(c.threshold >= 0 && c.threshold <= 1)) {
    throw ModelError("'" + cfg.string() + "': threshold " +
                     std::to_string(c.threshold) +
                     " is not a probability in [0, 1]; fix or retrain");
  }
  check_run_fields(j, c, cfg.string());
  c.calibration = Calibration::from_json(
      j.value("calibration", nlohmann::json()), cfg.string());
  return c;
}

namespace {

/// model.pt of run folders written before model.safetensors (LibTorch's
/// archive: a zip of pickles and TorchScript source that torch::jit::load
/// compiles). Trusted input: LibTorch crashes on some hostile files
/// (docs/reliability.md, "Second campaign"); cxr reads it only when the run
/// folder has no model.safetensors.
void load_legacy_weights(const fs::path& weights,
                         models::ClassifierImpl& model,
                         const models::ModelConfig& config) {
  try {
    // Module::load replaces tensors whatever their shape: compare against
    // the shapes config.json implies so a mismatch is refused, not used.
    std::map<std::string, std::vector<int64_t>> expected;
    for (const auto& p : model.named_parameters()) {
      expected[p.key()] = p.value().sizes().vec();
    }
    for (const auto& b : model.named_buffers()) {
      expected[b.key()] = b.value().sizes().vec();
    }
    torch::serialize::InputArchive ar;
    ar.load_from(weights.string(), torch::kCPU);
    model.load(ar);
    auto check = [&](const std::string& name, const torch::Tensor& t) {
      if (t.sizes().vec() != expected[name]) {
        throw ModelError("'" + weights.string() +
                         "' does not match config.json: tensor '" + name +
                         "' is " + c10::str(t.sizes()) + ", the model needs " +
                         c10::str(c10::IntArrayRef(expected[name])) +
                         "; retrain or restore the matching config.json");
      }
    };
    for (const auto& p : model.named_parameters()) check(p.key(), p.value());
    for (const auto& b : model.named_buffers()) check(b.key(), b.value());
    // Pooling makes the shapes of a 48 px and a 32 px model agree: compare
    // the recorded input size (model.pt files older than the entry lack it).
    c10::IValue size;
    if (ar.try_read(kInputSizeKey, size) && size.isInt() &&
        size.toInt() != config.input_size) {
      throw ModelError("'" + weights.string() + "' was trained at " +
                       std::to_string(size.toInt()) +
                       " px but config.json says " +
                       std::to_string(config.input_size) +
                       " px; the weights belong to another run: retrain or "
                       "restore the matching model.pt");
    }
  } catch (const Error&) {
    throw;  // already names the file and the fix
  } catch (const c10::Error& e) {
    std::string why = e.what_without_backtrace();
    why = why.substr(0, why.find('\n'));
    throw ModelError("'" + weights.string() +
                     "' is corrupt or does not match config.json (" + why +
                     "); retrain or restore the file");
  } catch (const std::exception& e) {
    // TorchScript's unpickler throws plain std exceptions on some corrupt
    // archives (std::out_of_range from a map lookup, std::runtime_error from
    // its parser: found by fuzz_run_folder).
    std::string why = e.what();
    why = why.substr(0, why.find('\n'));
    throw ModelError("'" + weights.string() + "' is corrupt (" + why +
                     "); retrain or restore the file");
  }
}

/// model.safetensors: read by cxr's own checked reader (models/weights_file.h)
/// and matched tensor by tensor against the model config.json describes.
void load_safetensors_weights(const fs::path& weights,
                              models::ClassifierImpl& model,
                              const models::ModelConfig& config) {
  const std::string fix =
      "retrain the run or restore its model.safetensors and config.json";
  const auto meta =
      models::load_module_weights(weights.string(), model, fix, "config.json");
  // Pooling makes the shapes of a 48 px and a 32 px model agree: the
  // input size the weights were trained at is part of the file.
  const auto it = meta.find(kInputSizeKey);
  const std::string digits = it == meta.end() ? "" : it->second;
  const bool number =
      !digits.empty() && digits.size() <= 6 &&
      digits.find_first_not_of("0123456789") == std::string::npos;
  if (!number) {
    throw ModelError(
        "'" + weights.string() + "' lacks __metadata__." + kInputSizeKey +
        " (the input size in px the weights were trained at); " + fix);
  }
  if (std::stoi(digits) != config.input_size) {
    throw ModelError("'" + weights.string() + "' was trained at " + digits +
                     " px but config.json says " +
                     std::to_string(config.input_size) +
                     " px; the weights belong to another run: retrain or "
                     "restore the matching model.safetensors");
  }
}

}  // namespace

models::Classifier load_model(const std::string& dir,
                              const models::ModelConfig& config,
                              const torch::Device& device) {
  const fs::path d(dir);
  models::Classifier model;
  try {
    model = models::make_model(config);
  } catch (const ConfigError& e) {
    throw ModelError("'" + (d / "config.json").string() +
                     "' describes an invalid model: " + e.what());
  }
  const fs::path weights = d / models::kWeightsFile;
  const fs::path legacy = d / "model.pt";
  fs::path used = weights;
  if (fs::exists(weights)) {
    load_safetensors_weights(weights, *model, config);
  } else if (fs::exists(legacy)) {
    used = legacy;
    load_legacy_weights(legacy, *model, config);
  } else {
    throw ModelError("'" + weights.string() +
                     "' is missing; the run did not finish (use cxr train "
                     "--resume)");
  }
  // NaN/Inf weights would surface later as a NaN loss or NaN predictions
  // and be blamed on the learning rate; the file itself is the problem.
  auto finite = [](const torch::Tensor& t) {
    return !t.is_floating_point() || torch::isfinite(t).all().item<bool>();
  };
  bool all_finite = true;
  for (const auto& p : model->named_parameters()) {
    all_finite = all_finite && finite(p.value());
  }
  for (const auto& b : model->named_buffers()) {
    all_finite = all_finite && finite(b.value());
  }
  if (!all_finite) {
    throw ModelError("'" + used.string() +
                     "' holds non-finite weights (NaN/Inf); the file is "
                     "corrupt or the run diverged; retrain it");
  }
  model->to(device);
  model->eval();
  return model;
}

namespace {

/// One layer's features for the detector: [n, 2C], per-channel spatial mean
/// and standard deviation (for kInputLayer, of the image's 8 x 8 cells).
torch::Tensor layer_features(const std::string& layer,
                             const torch::Tensor& x,
                             const models::Tap& tap) {
  namespace F = torch::nn::functional;
  if (layer == kInputLayer) {
    // The image itself on an 8 x 8 grid: each cell's mean and standard
    // deviation (the layout of the anatomy, and its sharpness).
    auto opts = F::AdaptiveAvgPool2dFuncOptions({8, 8});
    auto m = F::adaptive_avg_pool2d(x, opts);
    auto sd = (F::adaptive_avg_pool2d(x * x, opts) - m * m).clamp_min(0).sqrt();
    return torch::cat({m.flatten(1), sd.flatten(1)}, 1).to(torch::kCPU);
  }
  const auto it = tap.more.find(layer);
  const torch::Tensor a =
      (it != tap.more.end() && it->second.defined() ? it->second
                                                    : tap.activation)
          .detach()
          .to(torch::kFloat32);
  auto mean = a.mean({2, 3});
  auto sd = (a.pow(2).mean({2, 3}) - mean.pow(2)).clamp_min(0).sqrt();
  return torch::cat({mean, sd}, 1).to(torch::kCPU);
}

}  // namespace

ForwardResult forward(models::ClassifierImpl& model,
                      const torch::Tensor& images,
                      const torch::Device& device,
                      const ForwardOptions& o) {
  const bool maps = !o.cam_layer.empty();
  // Grad-CAM needs a graph; everything else runs without one.
  torch::AutoGradMode grad_mode(maps);
  // --precision bf16: the forward pass under bfloat16 autocast; logits,
  // features and maps are converted to float32 below.
  AutocastGuard autocast(device);
  models::EvalModeGuard eval(model);
  const int64_t n = images.size(0);
  const int batch_size = std::max(1, o.batch_size);
  models::use_device_layout(model, device);
  std::vector<torch::Tensor> out, pos, neg;
  std::vector<std::vector<torch::Tensor>> feats(o.layers.size());
  models::Tap tap;
  tap.layer = o.cam_layer;
  for (const auto& l : o.layers) {
    if (l != kInputLayer && l != o.cam_layer) tap.more[l] = torch::Tensor();
  }
  const bool tapped = maps || !tap.more.empty();
  for (int64_t s = 0; s < n; s += batch_size) {
    const int64_t e = std::min(n, s + batch_size);
    auto x = models::device_layout(
        images.slice(0, s, e).to(device).to(torch::kFloat32).div_(255.0f),
        device);
    // The input requires grad so the tapped activation is in the graph even
    // when the layers before it are frozen.
    if (maps) x.requires_grad_(true);
    const torch::Tensor logits =
        tapped ? model.forward_tapped(x, &tap) : model.forward(x);
    out.push_back(logits.detach().to(torch::kFloat32).to(torch::kCPU));
    for (size_t k = 0; k < o.layers.size(); ++k) {
      feats[k].push_back(layer_features(o.layers[k], x.detach(), tap));
    }
    if (!maps) continue;
    if (!tap.activation.defined() || tap.activation.dim() != 4) {
      throw ConfigError("--layer " + o.cam_layer + ": gives " +
                        shape_of(tap.activation) +
                        ", not a feature map [N, C, h, w]; choose a "
                        "convolutional layer (see --list-layers)");
    }
    // Images are independent in eval mode, so the gradient of the summed
    // logits holds every image's own; autograd::grad runs only the part of
    // the graph between the logit and the tapped layer, and frees it.
    auto grads = torch::autograd::grad({logits.sum()}, {tap.activation},
                                       /*grad_outputs=*/{},
                                       /*retain_graph=*/false,
                                       /*create_graph=*/false,
                                       /*allow_unused=*/true);
    auto act = tap.activation.detach().to(torch::kFloat32);
    auto grad = grads[0].defined() ? grads[0].detach().to(torch::kFloat32)
                                   : torch::zeros_like(act);
    const int64_t h = images.size(2), w = images.size(3);
    pos.push_back(
        normalize_and_upsample(gradcam_weighting(act, grad), h, w).cpu());
    neg.push_back(
        normalize_and_upsample(gradcam_weighting(act, -grad), h, w).cpu());
  }
  ForwardResult r;
  r.logits = out.empty() ? torch::empty({0}) : torch::cat(out);
  for (auto& f : feats) {
    r.features.push_back(f.empty() ? torch::empty({0, 0}) : torch::cat(f));
  }
  if (maps) {
    const int64_t h = images.size(2), w = images.size(3);
    r.positive_maps = pos.empty() ? torch::empty({0, h, w}) : torch::cat(pos);
    r.negative_maps = neg.empty() ? torch::empty({0, h, w}) : torch::cat(neg);
  }
  return r;
}

torch::Tensor forward_logits(models::ClassifierImpl& model,
                             const torch::Tensor& images,
                             const torch::Device& device,
                             int batch_size,
                             const std::vector<std::string>& layers,
                             std::vector<torch::Tensor>* features) {
  ForwardOptions o;
  o.batch_size = batch_size;
  o.layers = layers;
  auto r = forward(model, images, device, o);
  if (features) *features = std::move(r.features);
  return r.logits;
}

torch::Tensor predict_proba(models::ClassifierImpl& model,
                            const torch::Tensor& images,
                            const torch::Device& device,
                            int batch_size) {
  return torch::sigmoid(forward_logits(model, images, device, batch_size));
}

}  // namespace cxr::infer
