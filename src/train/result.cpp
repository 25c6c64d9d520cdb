/// train_run's typed result, read from the config.json it writes, and the
/// summary `cxr train` prints.
#include <iomanip>
#include <sstream>

#include "cxr/train/run.h"

namespace cxr::train {
namespace {

double number_or_nan(const nlohmann::json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : NAN;
}

}  // namespace

TrainResult TrainResult::from_config(const nlohmann::json& config,
                                     const std::string& run_dir) {
  TrainResult r;
  r.run_dir = run_dir;
  r.config = config;
  r.arch = config.at("model").value("arch", std::string());
  const auto& res = config.at("result");
  r.seconds = res.value("seconds", 0.0);
  r.images_per_second = res.value("images_per_second", 0.0);
  r.device = res.value("device", std::string());
  r.best_epoch = res.value("best_epoch", 0);
  r.epochs_run = res.value("epochs_run", 0);
  r.best_val_loss = number_or_nan(res, "best_val_loss");
  if (res.contains("val")) {
    const auto& v = res["val"];
    r.val = ValScores{number_or_nan(v, "accuracy"),
                      number_or_nan(v, "precision"), number_or_nan(v, "recall"),
                      number_or_nan(v, "specificity"), number_or_nan(v, "auc")};
  }
  if (config.contains("threshold")) {
    r.threshold = config["threshold"].value("value", 0.5);
    r.threshold_rule = config["threshold"].value("rule", std::string());
  }
  if (config.contains("calibration")) {
    r.calibration = infer::Calibration::from_json(config["calibration"],
                                                  run_dir + "/config.json");
  }
  if (config.contains("ood") && config["ood"].is_object()) {
    r.ood_threshold = number_or_nan(config["ood"], "threshold");
    r.ood_threshold_rule = config["ood"].value("threshold_rule", std::string());
  }
  return r;
}

void to_json(nlohmann::json& j, const TrainResult& r) {
  j = r.to_json();
}

std::string format_summary(const TrainResult& r) {
  // The numbers as cxr train has always printed them: default stream
  // precision for the run, 4 digits for calibration and the OOD warning.
  std::ostringstream s;
  s << "trained " << r.arch << " in " << r.seconds << " s ("
    << r.images_per_second << " img/s on " << r.device << "), best epoch "
    << r.best_epoch << " of " << r.epochs_run;
  if (r.val) {
    s << "; val accuracy " << r.val->accuracy << ", recall " << r.val->recall
      << ", AUC " << r.val->auc;
  }
  s << "\ndecision threshold " << r.threshold << " (" << r.threshold_rule
    << ")\n";
  s << std::setprecision(4);
  const auto& c = r.calibration;
  if (c.method == "temperature") {
    s << "calibration: temperature " << c.temperature << " (" << c.source
      << ")";
    if (c.fit.contains("ece_before")) {
      s << "; validation ECE " << c.fit["ece_before"].get<double>() << " -> "
        << c.fit["ece_after"].get<double>();
    }
    s << "\n";
  } else {
    s << "calibration: none (" << c.source << ")\n";
  }
  s << "out-of-distribution warning: score > " << r.ood_threshold << " ("
    << r.ood_threshold_rule << ")\n";
  s << "wrote " << r.run_dir
    << "/{config.json,model.safetensors,ood.safetensors,model-card.md,history."
       "csv,"
       "curves.png}\n";
  return s.str();
}

}  // namespace cxr::train
