#include "cxr/infer/fit_trust.h"

#include <cmath>
#include <iomanip>
#include <sstream>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/common/runtime.h"
#include "cxr/common/vectors.h"
#include "cxr/data/image_io.h"
#include "cxr/infer/run_config.h"
#include "cxr/metrics/metrics.h"
#include "cxr/version.h"

namespace fs = std::filesystem;

namespace cxr::infer {
namespace {

double ece15(const std::vector<double>& p, const std::vector<int>& y) {
  return metrics::expected_calibration_error(
      metrics::calibration_table(p, y, 15));
}

std::string fmt(double v, int digits = 3) {
  if (!std::isfinite(v)) return "n/a";
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

// The training split's mean image at 32 x 32, for the input checks.
torch::Tensor mean_image(const torch::Tensor& images) {
  auto m = images.to(torch::kFloat32).mean(0).squeeze(0).div(255.0f);
  return data::resize_square(m, 32).contiguous();
}

}  // namespace

nlohmann::json fit_trust(const std::string& dir,
                         const TrustOptions& o,
                         const data::Dataset* preloaded) {
  o.ood.validate();
  const RunConfig cfg = read_run_config(dir);
  if (cfg.status == "training") {
    throw ModelError("run '" + dir + "' has not finished training");
  }
  if (!o.from.empty() && cfg.train_on() == "train") {
    throw ConfigError("--from " + o.from + ": '" + dir +
                      "' trained on train and fits its own temperature on "
                      "validation; --from is for runs trained on train+val");
  }
  const torch::Device device = resolve_device(o.device);
  auto model = load_model(dir, cfg.model, device);
  data::Dataset owned;
  if (!preloaded) {
    auto dopts = cfg.data_options(o.data_root, o.cache_dir);
    if (dopts.root.empty()) {
      throw ConfigError("the run records no data folder; pass --data DIR");
    }
    owned = data::load_dataset(dopts);
  }
  const data::Dataset& ds = preloaded ? *preloaded : owned;
  const auto& train = ds.split(data::Split::kTrain);
  if (train.images.size(2) != cfg.model.input_size) {
    throw ConfigError("data loaded at " + std::to_string(train.images.size(2)) +
                      " px but the run's model takes " +
                      std::to_string(cfg.model.input_size) + " px");
  }
  const std::string rate_pct = fmt(100 * o.ood.false_flag_rate, 0) + " %";

  // The detector: Gaussians on the train split's features.
  auto layers = OodDetector::choose_layers(*model, o.ood.layers);
  if (o.ood.input_layer) layers.insert(layers.begin(), kInputLayer);
  std::vector<torch::Tensor> f_train;
  forward_logits(*model, train.images, device, o.batch_size, layers, &f_train);
  OodDetector det = OodDetector::fit(layers, f_train, train.labels, o.ood);
  det.reference = mean_image(train.images);
  const torch::Tensor s_train = det.score(f_train);
  det.train_quantile = score_quantile(s_train, 1 - o.ood.false_flag_rate);

  Calibration cal;
  if (cfg.train_on() == "train") {
    const auto& val = ds.split(data::Split::kVal);
    std::vector<torch::Tensor> f_val;
    const auto logits = forward_logits(*model, val.images, device, o.batch_size,
                                       layers, &f_val);
    const auto z = to_doubles(logits);
    const auto y = to_ints(val.labels);
    int64_t pos = 0;
    for (int v : y) pos += v;
    if (pos > 0 && pos < static_cast<int64_t>(y.size())) {
      cal.method = "temperature";
      cal.temperature = metrics::fit_temperature(z, y);
      cal.source =
          "validation split of this run (n = " + std::to_string(z.size()) + ")";
    } else {
      cal.source = "none: the validation split has one class only";
    }
    std::vector<double> before, after;
    for (double v : z) {
      before.push_back(1.0 / (1.0 + std::exp(-v)));
      after.push_back(cal.apply(v));
    }
    cal.fit = {{"n", z.size()},
               {"nll_before", metrics::log_loss(before, y)},
               {"nll_after", metrics::log_loss(after, y)},
               {"ece_before", ece15(before, y)},
               {"ece_after", ece15(after, y)},
               {"brier_before", metrics::brier_score(before, y)},
               {"brier_after", metrics::brier_score(after, y)}};
    det.set_threshold(det.score(f_val), o.ood.false_flag_rate,
                      "at most " + rate_pct +
                          " of chest X-rays like the training data flagged "
                          "(95 % upper bound from the " +
                          std::to_string(z.size()) +
                          " held-out validation images)");
  } else if (!o.from.empty()) {
    const RunConfig src = read_run_config(o.from);
    if (src.train_on() != "train") {
      throw ConfigError("--from " + o.from + ": that run trained on " +
                        src.train_on() +
                        "; give the run of the same recipe trained on train");
    }
    if (src.model.arch != cfg.model.arch) {
      throw ConfigError("--from " + o.from + ": that run is a " +
                        src.model.arch + ", this one a " + cfg.model.arch);
    }
    if (src.ood.is_null()) {
      throw ConfigError("--from " + o.from +
                        ": that run has no OOD detector; fit one first with "
                        "cxr calibrate " +
                        o.from);
    }
    const OodDetector sd =
        OodDetector::load((fs::path(o.from) / "ood.pt").string());
    cal = src.calibration;
    cal.source = "run " + o.from + " (same recipe on train; " +
                 src.calibration.source + ")";
    cal.fit = nlohmann::json::object();
    const double shift = sd.threshold - sd.train_quantile;
    det.set_threshold(s_train, o.ood.false_flag_rate, "");
    det.threshold = det.train_quantile + shift;
    det.fitted_flag_rate =
        (s_train > det.threshold).to(torch::kFloat64).mean().item<double>();
    det.threshold_rule = "this run's training-image quantile for " + rate_pct +
                         " plus the held-out shift measured in run " + o.from +
                         " (" + fmt(shift, 2) + ")";
  } else {
    cal.source =
        "none: trained on train+val with no train-only run to "
        "carry a temperature from";
    det.set_threshold(s_train, o.ood.false_flag_rate,
                      "at most " + rate_pct +
                          " of its own training images flagged (no held-out "
                          "data: expect more flags on new chest X-rays)");
  }
  det.save((fs::path(dir) / "ood.pt").string());

  const fs::path cfg_path = fs::path(dir) / "config.json";
  nlohmann::json j = read_json(cfg_path);
  j["calibration"] = cal.to_json();
  j["ood"] = det.summary();
  j["ood"]["fitted_on"] =
      "train split (" + std::to_string(train.size()) + " images)";
  RunConfig with_cal = cfg;
  with_cal.calibration = cal;
  j["threshold"]["calibrated"] = with_cal.threshold_calibrated();
  write_json_atomic(cfg_path, j);
  write_model_card(dir);
  return j;
}

void write_model_card(const std::string& dir) {
  const RunConfig c = read_run_config(dir);
  const fs::path d(dir);
  std::ostringstream s;
  const std::string arch = c.model.arch;
  s << "# Model card: " << arch << " (" << d.filename().string() << ")\n\n";
  s << "## Intended use\n"
    << "Research on COVID-19 assisted diagnosis from frontal chest X-rays: "
       "P("
    << c.positive << ") vs " << c.negative
    << ". **Not for clinical decisions.** Inputs the model does not know "
       "(other populations, body parts, views or devices) are flagged as "
       "out of distribution, but a score is never proof of disease.\n\n";

  s << "## Training data\n";
  s << "- Data: `" << c.data.value("root", std::string("?")) << "` ("
    << c.data.value("layout", std::string("?")) << " layout), "
    << c.model.input_size << " px, trained on " << c.train_on() << ".\n";
  if (c.data.contains("counts")) {
    for (const auto& [split, counts] : c.data["counts"].items()) {
      s << "- " << split << ": ";
      bool first = true;
      for (const auto& [cls, n] : counts.items()) {
        s << (first ? "" : ", ") << n.dump() << " " << cls;
        first = false;
      }
      s << "\n";
    }
  }
  s << "- Known confound: in cxr-seed the classes come from different "
       "hospitals and sources (COVID: mostly BIMCV/PadChest, SIRM, "
       "publications; Normal: RSNA, USA). The model can learn the source "
       "(markers, text, processing, tubes) instead of the disease; read the "
       "Grad-CAM trust checks.\n\n";

  s << "## Decision threshold\n"
    << "- P(" << c.positive << ") >= " << fmt(c.threshold_calibrated(), 4)
    << " (calibrated; " << fmt(c.threshold, 4)
    << " on the model's raw probability) means " << c.positive << ".\n"
    << "- Rule: " << c.threshold_rule << ".\n";
  const fs::path eval = d / "eval-test" / "metrics.json";
  if (fs::exists(eval)) {
    const auto m = read_json(eval);
    auto ci = [&](const char* k) {
      const auto& v = m[k];
      if (!v.is_object() || !v["value"].is_number()) return std::string("n/a");
      return fmt(v["value"].get<double>()) + " [" +
             (v["low"].is_number() ? fmt(v["low"].get<double>()) : "n/a") +
             ", " +
             (v["high"].is_number() ? fmt(v["high"].get<double>()) : "n/a") +
             "]";
    };
    s << "- On the test split (n = " << m.value("n", 0)
      << "): sensitivity (recall) " << ci("recall") << ", specificity "
      << ci("specificity") << ": of 100 " << c.positive
      << " chest X-rays like the test set, about "
      << fmt(100 * m["recall"].value("value", 0.0), 0) << " are called "
      << c.positive << "; of 100 " << c.negative << " ones, about "
      << fmt(100 * (1 - m["specificity"].value("value", 0.0)), 0)
      << " are wrongly called " << c.positive << ".\n\n";
    s << "## Metrics on test (95 % bootstrap CIs, at the threshold)\n"
      << "| metric | value [95 % CI] |\n|---|---|\n";
    for (const char* k :
         {"accuracy", "precision", "recall", "specificity", "f1", "auc"}) {
      s << "| " << k << " | " << ci(k) << " |\n";
    }
    if (m.contains("calibration")) {
      const auto& cm = m["calibration"];
      s << "\n## Calibration on test\n"
        << "| | ECE (15 bins) | Brier | NLL |\n|---|---|---|---|\n";
      for (const char* k : {"raw", "calibrated"}) {
        if (!cm.contains(k)) continue;
        const auto& v = cm[k];
        s << "| " << k << " | " << fmt(v["ece"]["value"].get<double>()) << " ["
          << fmt(v["ece"]["low"].get<double>()) << ", "
          << fmt(v["ece"]["high"].get<double>()) << "] | "
          << fmt(v["brier"].get<double>()) << " | "
          << fmt(v["nll"].get<double>()) << " |\n";
      }
    }
    if (m.contains("ood")) {
      s << "\nOOD flag rate on the test split: "
        << fmt(100 * m["ood"].value("flag_rate", NAN), 1) << " %.\n";
    }
  } else {
    s << "- Not yet evaluated on test: run `cxr evaluate " << dir
      << " --split test` (this card is then rewritten).\n";
  }
  s << "\n## Calibration\n";
  if (c.calibration.method == "temperature") {
    s << "- Temperature scaling, T = " << fmt(c.calibration.temperature, 3)
      << ", fitted on " << c.calibration.source << ".\n";
    const auto& f = c.calibration.fit;
    if (f.contains("ece_before")) {
      s << "- On that data: ECE " << fmt(f["ece_before"].get<double>())
        << " -> " << fmt(f["ece_after"].get<double>()) << ", NLL "
        << fmt(f["nll_before"].get<double>()) << " -> "
        << fmt(f["nll_after"].get<double>()) << ".\n";
    }
  } else {
    s << "- None (" << c.calibration.source
      << "); probabilities are the model's own.\n";
  }
  s << "\n## Out-of-distribution warning\n";
  if (c.ood.is_null()) {
    s << "- No detector (fit one with `cxr calibrate " << dir << "`).\n";
  } else {
    s << "- " << c.ood.value("method", std::string()) << "; layers";
    for (const auto& l : c.ood["layers"]) s << " " << l.get<std::string>();
    s << ".\n- Flag threshold " << fmt(c.ood.value("threshold", NAN), 2) << ": "
      << c.ood.value("threshold_rule", std::string()) << ".\n"
      << "- Input checks before the model: colour photographs, nearly "
         "constant images, extreme aspect ratios, images far smaller than "
         "the model's input, and images unlike (or inverted against) the "
         "training images' mean.\n";
  }
  s << "\n## Known failure modes\n"
    << "- Other populations (e.g. children), other hospitals and devices: "
       "the model's probabilities mean nothing there; heed the warning.\n";
  for (const char* sub : {"explain-misclassified", "explain-examples"}) {
    const fs::path t = d / sub / "trust.json";
    if (!fs::exists(t)) continue;
    const auto tj = read_json(t);
    if (tj.contains("randomization")) {
      s << "- Grad-CAM randomisation check (" << sub << "): mean rank "
        << "correlation "
        << fmt(tj["randomization"].value("mean_rank_correlation", NAN))
        << (tj["randomization"].value("untrustworthy", false)
                ? " (maps barely depend on the weights: untrustworthy)"
                : "")
        << ".\n";
    }
    if (tj.contains("energy") && tj["energy"].contains("mean")) {
      s << "- Grad-CAM energy (" << sub << "): " << tj["energy"]["mean"].dump()
        << " (lung box vs border frame; compare with a uniform map "
        << tj["energy"]["uniform_map"].dump() << ").\n";
    }
  }
  if (fs::exists(d / "explain-misclassified")) {
    s << "- Misclassified test images with their Grad-CAM maps: "
         "`explain-misclassified/index.html`.\n";
  }
  s << "\n## Provenance\n"
    << "- cxr " << (c.cxr_version.empty() ? kVersion : c.cxr_version)
    << ", created " << c.created << ".\n"
    << "- Training options: `" << c.train.dump() << "`.\n"
    << "- Model: `" << c.model.to_json().dump() << "`.\n";
  write_text_atomic(d / "model-card.md", s.str());
}

}  // namespace cxr::infer
