#include "cxr/evaluate/evaluate.h"

#include <iomanip>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/common/runtime.h"
#include "cxr/data/dataset.h"
#include "cxr/metrics/metrics.h"
#include "cxr/train/run.h"
#include "cxr/train/run_dir.h"
#include "cxr/viz/plot.h"

namespace fs = std::filesystem;

namespace cxr::evaluate {
namespace {

std::vector<double> doubles(const torch::Tensor& x) {
  auto t = x.to(torch::kFloat64).contiguous();
  return {t.data_ptr<double>(), t.data_ptr<double>() + t.numel()};
}

std::vector<int> ints(const torch::Tensor& x) {
  auto t = x.to(torch::kInt32).contiguous();
  return {t.data_ptr<int>(), t.data_ptr<int>() + t.numel()};
}

std::string fmt(double v, int p = 3) {
  if (std::isnan(v)) return "n/a";
  std::ostringstream s;
  s << std::fixed << std::setprecision(p) << v;
  return s.str();
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

}  // namespace

nlohmann::json evaluate_run(const EvalOptions& o) {
  const torch::Device device = resolve_device(o.device);
  auto run = train::load_run(o.run_dir, device);
  const data::Split split = data::parse_split(o.split);
  if ((o.threshold ? 1 : 0) + (o.target_sensitivity ? 1 : 0) +
          (o.balanced_threshold ? 1 : 0) >
      1) {
    throw ConfigError(
        "give only one of --threshold, --target-sensitivity and "
        "--balanced-threshold");
  }
  if (o.threshold && !(*o.threshold >= 0 && *o.threshold <= 1)) {
    throw ConfigError("--threshold must be in [0, 1]");
  }
  if (o.bootstrap < 100) throw ConfigError("--bootstrap must be >= 100");
  if ((o.target_sensitivity || o.balanced_threshold) &&
      run.meta.train.train_on != "train") {
    throw ConfigError(
        "this run trained on " + run.meta.train.train_on +
        ", so validation is not held out from it; choose the threshold "
        "with a run trained on train (or pass --threshold)");
  }
  auto dopts =
      train::data_options_from(run.meta.data, o.data_root, o.cache_dir);
  if (dopts.root.empty()) {
    throw ConfigError("the run records no data folder; pass --data DIR");
  }
  data::Dataset ds = data::load_dataset(dopts);
  if (ds.index.positive != run.meta.positive) {
    throw ConfigError("data positive class '" + ds.index.positive +
                      "' differs from the run's '" + run.meta.positive + "'");
  }

  double threshold = run.meta.threshold;
  std::string rule = run.meta.threshold_rule;
  if (o.threshold) {
    threshold = *o.threshold;
    rule = "--threshold " + fmt(threshold, 4);
  } else if (o.target_sensitivity || o.balanced_threshold) {
    const auto& val = ds.split(data::Split::kVal);
    auto vp = doubles(train::predict_proba(*run.model, val.images, device));
    if (o.target_sensitivity) {
      threshold = metrics::threshold_for_sensitivity(vp, ints(val.labels),
                                                     *o.target_sensitivity);
      rule =
          "sensitivity >= " + fmt(*o.target_sensitivity, 3) + " on validation";
    } else {
      threshold = metrics::threshold_youden(vp, ints(val.labels));
      rule = "balanced on validation (max sensitivity + specificity)";
    }
  }

  const auto& set = ds.split(split);
  auto probs = train::predict_proba(*run.model, set.images, device);
  auto sc = doubles(probs);
  auto lab = ints(set.labels);
  auto m = metrics::evaluate_with_ci(sc, lab, threshold, o.bootstrap, 1);
  auto roc = metrics::roc_curve(sc, lab);

  const fs::path out = o.out_dir.empty()
                           ? fs::path(o.run_dir) / ("eval-" + o.split)
                           : fs::path(o.out_dir);
  ensure_dir(out);
  nlohmann::json j = metrics::to_json(m);
  j["split"] = o.split;
  j["run"] = o.run_dir;
  j["model"] = run.meta.model.arch;
  j["threshold_rule"] = rule;
  j["classes"] = {{"positive", run.meta.positive},
                  {"negative", run.meta.negative}};
  const auto n_correct = m.confusion.tp + m.confusion.tn;
  auto w = metrics::wilson_interval(n_correct, m.n);
  j["accuracy_wilson_95"] = {w.low, w.high};
  j["note"] = "95 % CIs: percentile bootstrap over the " + std::to_string(m.n) +
              " images of the " + o.split +
              " split; with n = " + std::to_string(m.n) +
              " an accuracy CI is about " + fmt(w.high - w.low, 3) +
              " wide, so differences smaller than that are not evidence";
  nlohmann::json rj = {{"fpr", roc.fpr}, {"tpr", roc.tpr}};
  j["roc"] = rj;
  write_json_atomic(out / "metrics.json", j);

  std::ostringstream csv;
  csv << "file,label,p_" << run.meta.positive << ",decision,correct\n";
  for (size_t i = 0; i < sc.size(); ++i) {
    const bool pred = sc[i] >= threshold;
    csv << csv_field(set.paths[i]) << ","
        << (lab[i] ? run.meta.positive : run.meta.negative) << ","
        << std::setprecision(6) << sc[i] << ","
        << (pred ? run.meta.positive : run.meta.negative) << ","
        << (pred == (lab[i] == 1) ? 1 : 0) << "\n";
  }
  write_text_atomic(out / "predictions.csv", csv.str());

  viz::save_confusion_matrix(m.confusion.matrix(),
                             {run.meta.negative, run.meta.positive},
                             run.meta.model.arch + " on " + o.split +
                                 " (threshold " + fmt(threshold, 3) + ")",
                             (out / "confusion.png").string());
  viz::LineChart rc;
  rc.title = "ROC, " + run.meta.model.arch + " on " + o.split + " (AUC " +
             fmt(m.auc.value) + ")";
  rc.x_label = "1 - specificity (false positive rate)";
  rc.y_label = "sensitivity (recall)";
  rc.x_min = rc.y_min = 0;
  rc.x_max = rc.y_max = 1;
  rc.diagonal = true;
  rc.series.push_back({run.meta.model.arch, roc.fpr, roc.tpr});
  viz::save_line_chart(rc, (out / "roc.png").string());
  return j;
}

std::string format_metrics(const nlohmann::json& j) {
  std::ostringstream s;
  const auto& c = j["confusion"];
  const std::string pos = j["classes"]["positive"],
                    neg = j["classes"]["negative"];
  s << j["model"].get<std::string>() << " on " << j["split"].get<std::string>()
    << " (n = " << j["n"].get<int64_t>() << ", threshold "
    << fmt(j["threshold"].get<double>(), 3) << ": "
    << j["threshold_rule"].get<std::string>() << ")\n\n";
  s << "                 predicted " << neg << "  predicted " << pos << "\n";
  s << "  true " << std::left << std::setw(9) << neg << std::right
    << std::setw(12) << c["tn"].get<int64_t>() << std::setw(12)
    << c["fp"].get<int64_t>() << "\n";
  s << "  true " << std::left << std::setw(9) << pos << std::right
    << std::setw(12) << c["fn"].get<int64_t>() << std::setw(12)
    << c["tp"].get<int64_t>() << "\n\n";
  for (const char* k :
       {"accuracy", "precision", "recall", "specificity", "f1", "auc"}) {
    const auto& m = j[k];
    s << "  " << std::left << std::setw(12) << k << std::right
      << fmt(m["value"].is_number() ? m["value"].get<double>() : NAN)
      << "  [95% CI "
      << fmt(m["low"].is_number() ? m["low"].get<double>() : NAN) << ", "
      << fmt(m["high"].is_number() ? m["high"].get<double>() : NAN) << "]\n";
  }
  s << "\n" << j["note"].get<std::string>() << "\n";
  return s.str();
}

std::vector<Prediction> predict_files(const PredictOptions& o,
                                      std::string* positive_name) {
  if (o.inputs.empty()) throw ConfigError("give at least one image or folder");
  const torch::Device device = resolve_device(o.device);
  auto run = train::load_run(o.run_dir, device);
  const double threshold = o.threshold.value_or(run.meta.threshold);
  if (!(threshold >= 0 && threshold <= 1)) {
    throw ConfigError("--threshold must be in [0, 1]");
  }
  if (positive_name) *positive_name = run.meta.positive;
  const std::vector<std::string> files = data::list_image_files(o.inputs);
  const int size = run.meta.model.input_size;
  std::vector<Prediction> out(files.size());
  std::vector<torch::Tensor> batch;
  std::vector<size_t> batch_ids;
  auto flush = [&] {
    if (batch.empty()) return;
    auto x = torch::stack(batch).mul(255.0f).round().to(torch::kUInt8);
    auto p = train::predict_proba(*run.model, x, device, o.batch_size);
    for (size_t k = 0; k < batch_ids.size(); ++k) {
      auto& r = out[batch_ids[k]];
      r.probability = p[static_cast<int64_t>(k)].item<double>();
      r.decision =
          r.probability >= threshold ? run.meta.positive : run.meta.negative;
    }
    batch.clear();
    batch_ids.clear();
  };
  for (size_t i = 0; i < files.size(); ++i) {
    out[i].file = files[i];
    try {
      auto img = data::read_gray(files[i]);
      // Same path as training: resize, quantise to 8 bits, model normalises.
      batch.push_back(data::resize_square(img.pixels, size).unsqueeze(0));
      batch_ids.push_back(i);
    } catch (const DataError& e) {
      if (!o.skip_bad) {
        throw DataError(std::string(e.what()) +
                        " (pass --skip-bad to predict the rest)");
      }
      out[i].error = e.what();
    }
    if (static_cast<int>(batch.size()) >= o.batch_size) flush();
  }
  flush();

  if (!o.csv_path.empty()) {
    std::ostringstream csv;
    csv << "file,p_" << run.meta.positive << ",decision,error\n";
    for (const auto& r : out) {
      csv << csv_field(r.file) << ","
          << (r.error.empty() ? fmt(r.probability, 6) : "") << "," << r.decision
          << "," << csv_field(r.error) << "\n";
    }
    write_text_atomic(o.csv_path, csv.str());
  }
  if (!o.json_path.empty()) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& r : out) {
      nlohmann::json e = {{"file", r.file}};
      if (r.error.empty()) {
        e["p_" + run.meta.positive] = r.probability;
        e["decision"] = r.decision;
      } else {
        e["error"] = r.error;
      }
      j.push_back(e);
    }
    write_json_atomic(o.json_path, {{"run", o.run_dir},
                                    {"threshold", threshold},
                                    {"positive", run.meta.positive},
                                    {"predictions", j}});
  }
  return out;
}

}  // namespace cxr::evaluate
