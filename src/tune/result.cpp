/// run_tune's typed result (best.json), the summary `cxr tune` prints, and
/// the default search space.
#include <cmath>
#include <sstream>

#include "cxr/models/classifier.h"
#include "cxr/tune/tune.h"

namespace cxr::tune {
namespace {

/// A number as best.json writes it (null for NaN): the summary has always
/// printed the JSON values.
std::string json_text(double v) {
  return std::isnan(v) ? "null" : nlohmann::json(v).dump();
}

}  // namespace

nlohmann::json TuneResult::to_json() const {
  nlohmann::json j = {{"metric", metric},
                      {"mode", mode},
                      {"trials", trials},
                      {"trials_run_now", trials_run_now},
                      {"budget_minutes", budget_minutes.value_or(0)},
                      {"budget_exhausted", budget_exhausted},
                      {"minutes", minutes},
                      {"best", best.to_json()}};
  if (refit) {
    j["refit"] = {{"run_dir", refit->run_dir},
                  {"epochs", refit->epochs},
                  {"test",
                   {{"accuracy", metrics::to_json(refit->accuracy)},
                    {"recall", metrics::to_json(refit->recall)},
                    {"specificity", metrics::to_json(refit->specificity)},
                    {"auc", metrics::to_json(refit->auc)}}}};
  }
  return j;
}

std::string format_summary(const TuneResult& r) {
  std::ostringstream s;
  const auto& b = r.best;
  s << "best of " << r.trials << " trials by " << r.metric << ": " << b.key
    << "  (val loss " << json_text(b.val_loss) << ", acc "
    << json_text(b.val_accuracy) << ", AUC " << json_text(b.val_auc)
    << ", best epoch " << b.best_epoch << ")\n";
  if (r.refit) {
    const auto& f = *r.refit;
    s << "refit " << f.run_dir << ": test accuracy "
      << json_text(f.accuracy.value) << " [" << json_text(f.accuracy.low)
      << ", " << json_text(f.accuracy.high) << "], recall "
      << json_text(f.recall.value) << ", AUC " << json_text(f.auc.value)
      << "\n";
  }
  s << "wrote " << r.out_dir
    << "/{trials.csv,results.md,best.json,trials.jsonl}\n";
  return s.str();
}

std::vector<std::string> default_space(const std::string& arch) {
  // The baseline's width matters most; a transfer model's backbone is
  // fixed, so its head's dropout is searched instead.
  if (models::is_transfer(arch)) return {"dropout=0.3,0.5", "lr=1e-3,3e-4"};
  return {"filters=16,32", "lr=1e-3,3e-4"};
}

}  // namespace cxr::tune
