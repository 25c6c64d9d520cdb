// JSON encoding of the API's answers: a run's info, predictions and the
// images inside them (PNG data URLs).
#include <cmath>
#include <filesystem>

#include "cxr/common/base64.h"
#include "cxr/common/fs.h"
#include "internal.h"

namespace fs = std::filesystem;

namespace cxr::serve {
namespace {

json number_or_null(double v) {
  return std::isfinite(v) ? json(v) : json(nullptr);
}

/// Test sensitivity/specificity of the run (eval-test/metrics.json), only
/// when they were measured at the threshold the server decides with;
/// otherwise null, since numbers at another threshold would mislead.
json test_metrics(const std::string& dir, double raw_threshold) {
  const fs::path p = fs::path(dir) / "eval-test" / "metrics.json";
  std::error_code ec;
  if (!fs::exists(p, ec)) return nullptr;
  try {
    const json m = read_json(p);
    if (!m.contains("threshold") || !m["threshold"].is_number() ||
        std::abs(m["threshold"].get<double>() - raw_threshold) > 1e-9) {
      return nullptr;
    }
    return {{"sensitivity", m.at("recall").at("value")},
            {"specificity", m.at("specificity").at("value")},
            {"n", m.at("n")}};
  } catch (const std::exception&) {
    return nullptr;
  }
}

/// The run's model-card.md, or null when it has none (or it is unreadable).
json model_card(const std::string& dir) {
  const fs::path card_path = fs::path(dir) / "model-card.md";
  std::error_code ec;
  if (!fs::exists(card_path, ec)) return nullptr;
  try {
    return read_text(card_path);
  } catch (const std::exception&) {
    return nullptr;
  }
}

}  // namespace

std::string png_data_url(const torch::Tensor& image) {
  return "data:image/png;base64," + base64(data::encode_png(image));
}

/// The decoded image for display: longest side <= 1024 (area averaging), as
/// a gray PNG, so a browser can show any upload, DICOM included.
std::string preview_of(const data::GrayImage& image) {
  torch::Tensor px = image.pixels;
  const int64_t h = px.size(0), w = px.size(1), side = std::max(h, w);
  constexpr int64_t kMax = 1024;
  if (side > kMax) {
    const int64_t nh = std::max<int64_t>(1, h * kMax / side);
    const int64_t nw = std::max<int64_t>(1, w * kMax / side);
    namespace F = torch::nn::functional;
    px = F::interpolate(px.unsqueeze(0).unsqueeze(0),
                        F::InterpolateFuncOptions()
                            .size(std::vector<int64_t>{nh, nw})
                            .mode(torch::kArea))
             .squeeze(0)
             .squeeze(0);
  }
  return png_data_url(px.clamp(0, 1));
}

json model_info(const Model& m) {
  const auto& pred = *m.predictor;
  const auto& cfg = pred.config();
  return {{"id", m.id},
          {"arch", cfg.model.arch},
          {"input_size", cfg.model.input_size},
          {"threshold", pred.calibrated_threshold()},
          {"threshold_raw", pred.threshold()},
          {"threshold_rule", cfg.threshold_rule},
          {"calibrated", cfg.calibration.method != "none"},
          {"has_detector", pred.has_detector()},
          {"positive", cfg.positive},
          {"negative", cfg.negative},
          {"test", test_metrics(m.dir, pred.threshold())},
          {"card", model_card(m.dir)}};
}

json prediction_json(const Upload& file,
                     const data::GrayImage& img,
                     const infer::Prediction& p,
                     double threshold,
                     bool maps,
                     bool preview) {
  json r = {{"name", file.name}};
  r["p"] = p.p;
  r["p_raw"] = p.p_raw;
  r["logit"] = p.logit;
  r["positive"] = p.positive;
  r["decision"] = p.decision;
  r["threshold"] = threshold;
  r["in_distribution"] = p.in_distribution;
  r["ood_score"] = number_or_null(p.ood_score);
  r["reasons"] = p.reasons;
  r["width"] = img.info.width;
  r["height"] = img.info.height;
  r["format"] = img.info.format;
  if (preview) r["preview"] = preview_of(img);
  if (maps && p.positive_map.defined()) {
    r["maps"] = {{"positive", png_data_url(p.positive_map.clamp(0, 1))},
                 {"negative", png_data_url(p.negative_map.clamp(0, 1))},
                 {"encoding", "gray"}};
  }
  return r;
}

}  // namespace cxr::serve
