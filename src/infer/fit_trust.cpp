#include "cxr/infer/fit_trust.h"

#include <cmath>
#include <initializer_list>
#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/common/json_field.h"
#include "cxr/common/runtime.h"
#include "cxr/common/text.h"
#include "cxr/common/vectors.h"
#include "cxr/data/image_io.h"
#include "cxr/infer/run_config.h"
#include "cxr/metrics/metrics.h"

namespace fs = std::filesystem;

namespace cxr::infer {
namespace {

double ece15(const std::vector<double>& p, const std::vector<int>& y) {
  return metrics::expected_calibration_error(
      metrics::calibration_table(p, y, 15));
}

// The training split's mean image at 32 x 32, for the input checks.
torch::Tensor mean_image(const torch::Tensor& images) {
  auto m = images.to(torch::kFloat32).mean(0).squeeze(0).div(255.0f);
  return data::resize_square(m, 32).contiguous();
}

void check_run(const std::string& dir,
               const RunConfig& cfg,
               const TrustOptions& o) {
  if (cfg.status == "training") {
    throw ModelError("run '" + dir + "' has not finished training");
  }
  if (!o.from.empty() && cfg.train_on() == "train") {
    throw ConfigError("--from " + o.from + ": '" + dir +
                      "' trained on train and fits its own temperature on "
                      "validation; --from is for runs trained on train+val");
  }
}

// The run's data (unless preloaded), checked against the model's input.
const data::Dataset& run_data(const RunConfig& cfg,
                              const TrustOptions& o,
                              const data::Dataset* preloaded,
                              data::Dataset& owned) {
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
  return ds;
}

/// What every threshold rule below works from: the model, its detector
/// fitted on the train split's features, and those scores.
struct Fit {
  models::Classifier model;
  torch::Device device;
  std::vector<std::string> layers;
  OodDetector det;
  torch::Tensor s_train;
  std::string rate_pct;  ///< the false-flag rate in words ("5 %")
};

Fit fit_detector(const RunConfig& cfg,
                 const std::string& dir,
                 const TrustOptions& o,
                 const data::ImageSet& train) {
  const torch::Device device = resolve_device(o.device);
  auto model = load_model(dir, cfg.model, device);
  auto layers = OodDetector::choose_layers(*model, o.ood.layers);
  if (o.ood.input_layer) layers.insert(layers.begin(), kInputLayer);
  std::vector<torch::Tensor> f_train;
  forward_logits(*model, train.images, device, o.batch_size, layers, &f_train);
  OodDetector det = OodDetector::fit(layers, f_train, train.labels, o.ood);
  det.reference = mean_image(train.images);
  torch::Tensor s_train = det.score(f_train);
  det.train_quantile = score_quantile(s_train, 1 - o.ood.false_flag_rate);
  return {model,   device,
          layers,  std::move(det),
          s_train, fixed(100 * o.ood.false_flag_rate, 0) + " %"};
}

// A run trained on train: temperature and detector threshold on its own
// validation split.
Calibration fit_on_validation(Fit& f,
                              const data::ImageSet& val,
                              const TrustOptions& o) {
  Calibration cal;
  std::vector<torch::Tensor> f_val;
  const auto logits = forward_logits(*f.model, val.images, f.device,
                                     o.batch_size, f.layers, &f_val);
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
  f.det.set_threshold(f.det.score(f_val), o.ood.false_flag_rate,
                      "at most " + f.rate_pct +
                          " of chest X-rays like the training data flagged "
                          "(95 % upper bound from the " +
                          std::to_string(z.size()) +
                          " held-out validation images)");
  return cal;
}

// A run trained on train+val with --from: the train-only run's temperature
// and the held-out shift of its detector threshold.
Calibration carry_from(Fit& f, const RunConfig& cfg, const TrustOptions& o) {
  const RunConfig src = read_run_config(o.from);
  if (src.train_on() != "train") {
    throw ConfigError("--from " + o.from + ": that run trained on " +
                      src.train_on() +
                      "; give the run of the same recipe trained on train");
  }
  if (src.model.arch != cfg.model.arch) {
    throw ConfigError("--from " + o.from + ": that run is a " + src.model.arch +
                      ", this one a " + cfg.model.arch);
  }
  if (src.ood.is_null()) {
    throw ConfigError("--from " + o.from +
                      ": that run has no OOD detector; fit one first with "
                      "cxr calibrate " +
                      o.from);
  }
  const OodDetector sd = OodDetector::load(ood_file(o.from));
  Calibration cal = src.calibration;
  cal.source = "run " + o.from + " (same recipe on train; " +
               src.calibration.source + ")";
  cal.fit = nlohmann::json::object();
  const double shift = sd.threshold - sd.train_quantile;
  auto& det = f.det;
  det.set_threshold(f.s_train, o.ood.false_flag_rate, "");
  det.threshold = det.train_quantile + shift;
  det.fitted_flag_rate =
      (f.s_train > det.threshold).to(torch::kFloat64).mean().item<double>();
  det.threshold_rule = "this run's training-image quantile for " + f.rate_pct +
                       " plus the held-out shift measured in run " + o.from +
                       " (" + fixed(shift, 2) + ")";
  return cal;
}

// A run trained on train+val without --from: no calibration, a threshold
// from its own training images.
Calibration without_held_out(Fit& f, const TrustOptions& o) {
  Calibration cal;
  cal.source =
      "none: trained on train+val with no train-only run to "
      "carry a temperature from";
  f.det.set_threshold(f.s_train, o.ood.false_flag_rate,
                      "at most " + f.rate_pct +
                          " of its own training images flagged (no held-out "
                          "data: expect more flags on new chest X-rays)");
  return cal;
}

nlohmann::json write_config(const std::string& dir,
                            const RunConfig& cfg,
                            const Calibration& cal,
                            const OodDetector& det,
                            int64_t n_train) {
  const fs::path cfg_path = fs::path(dir) / "config.json";
  nlohmann::json j = read_json(cfg_path);
  j["calibration"] = cal.to_json();
  j["ood"] = det.summary();
  j["ood"]["fitted_on"] =
      "train split (" + std::to_string(n_train) + " images)";
  RunConfig with_cal = cfg;
  with_cal.calibration = cal;
  j["threshold"]["calibrated"] = with_cal.threshold_calibrated();
  write_json_atomic(cfg_path, j);
  return j;
}

}  // namespace

nlohmann::json fit_trust(const std::string& dir,
                         const TrustOptions& o,
                         const data::Dataset* preloaded) {
  o.ood.validate();
  const RunConfig cfg = read_run_config(dir);
  check_run(dir, cfg, o);
  data::Dataset owned;
  const data::Dataset& ds = run_data(cfg, o, preloaded, owned);
  const auto& train = ds.split(data::Split::kTrain);
  Fit f = fit_detector(cfg, dir, o, train);
  Calibration cal;
  if (cfg.train_on() == "train") {
    cal = fit_on_validation(f, ds.split(data::Split::kVal), o);
  } else if (!o.from.empty()) {
    cal = carry_from(f, cfg, o);
  } else {
    cal = without_held_out(f, o);
  }
  f.det.save((fs::path(dir) / kOodFile).string());
  // A detector left by an older cxr would be stale beside the new one.
  std::error_code stale;
  fs::remove(fs::path(dir) / "ood.pt", stale);
  nlohmann::json j = write_config(dir, cfg, cal, f.det, train.size());
  write_model_card(dir);
  return j;
}

std::string format_trust_summary(const nlohmann::json& cfg) {
  // cfg is a config.json, and one from an older, interrupted or hand-edited
  // run may lack any key: each value is looked up (const operator[] on a
  // missing key is undefined behaviour) and what is missing is named on a
  // note line instead of crashing or printing a blank.
  std::vector<std::string> lacks;
  auto num = [&](std::initializer_list<std::string> path,
                 const std::string& name) {
    const nlohmann::json& v = json_field(cfg, path);
    if (!v.is_number()) {
      lacks.push_back(name);
      return std::string("n/a");
    }
    std::ostringstream t;
    t << std::setprecision(4) << v.get<double>();
    return t.str();
  };
  auto str = [&](std::initializer_list<std::string> path,
                 const std::string& name) {
    const nlohmann::json& v = json_field(cfg, path);
    if (v.is_string()) return v.get<std::string>();
    lacks.push_back(name);
    return std::string("n/a");
  };
  std::ostringstream s;
  const nlohmann::json& c = json_field(cfg, "calibration");
  if (!c.is_object()) {
    lacks.push_back("calibration");
    s << "calibration: n/a\n";
  } else if (json_text(c, "method") == "temperature") {
    s << "calibration: temperature "
      << num({"calibration", "temperature"}, "calibration.temperature") << " ("
      << str({"calibration", "source"}, "calibration.source") << ")";
    if (!json_field(c, {"fit", "ece_before"}).is_null()) {
      s << "; validation ECE "
        << num({"calibration", "fit", "ece_before"},
               "calibration.fit.ece_before")
        << " -> "
        << num({"calibration", "fit", "ece_after"},
               "calibration.fit.ece_after");
    }
    s << "\n";
  } else {
    s << "calibration: none (" << json_text(c, "source") << ")\n";
  }
  if (!json_field(cfg, "ood").is_object()) {
    lacks.push_back("ood");
    s << "out-of-distribution warning: n/a\n";
  } else {
    s << "out-of-distribution warning: score > "
      << num({"ood", "threshold"}, "ood.threshold") << " ("
      << str({"ood", "threshold_rule"}, "ood.threshold_rule") << ")\n";
  }
  s << missing_keys_note("config.json", lacks, "cxr calibrate RUN refits them");
  return s.str();
}

}  // namespace cxr::infer
