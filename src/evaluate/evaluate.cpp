#include "cxr/evaluate/evaluate.h"

#include <algorithm>
#include <iomanip>
#include <map>
#include <random>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/common/runtime.h"
#include "cxr/common/vectors.h"
#include "cxr/data/dataset.h"
#include "cxr/infer/fit_trust.h"
#include "cxr/infer/predictor.h"
#include "cxr/metrics/metrics.h"
#include "cxr/viz/plot.h"

namespace fs = std::filesystem;

namespace cxr::evaluate {
namespace {

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

constexpr int kCalibrationBins = 15;

// ECE (with a bootstrap CI), Brier and NLL of probabilities on a split.
nlohmann::json calibration_json(const std::vector<double>& p,
                                const std::vector<int>& y,
                                int replicates) {
  auto ece = [&](const std::vector<double>& pp, const std::vector<int>& yy) {
    return metrics::expected_calibration_error(
        metrics::calibration_table(pp, yy, kCalibrationBins));
  };
  const double value = ece(p, y);
  std::vector<double> reps;
  std::mt19937_64 rng(1);
  std::vector<double> bp(p.size());
  std::vector<int> by(p.size());
  for (int r = 0; r < replicates && !p.empty(); ++r) {
    for (size_t i = 0; i < p.size(); ++i) {
      const size_t k = static_cast<size_t>(rng() % p.size());
      bp[i] = p[k];
      by[i] = y[k];
    }
    reps.push_back(ece(bp, by));
  }
  std::sort(reps.begin(), reps.end());
  auto pct = [&](double q) {
    if (reps.empty()) return std::nan("");
    return reps[static_cast<size_t>(q * static_cast<double>(reps.size() - 1))];
  };
  return {
      {"ece", {{"value", value}, {"low", pct(0.025)}, {"high", pct(0.975)}}},
      {"brier", metrics::brier_score(p, y)},
      {"nll", metrics::log_loss(p, y)},
      {"table",
       metrics::to_json(metrics::calibration_table(p, y, kCalibrationBins))}};
}

// Reliability diagram: observed rate against mean predicted probability per
// bin, before and after calibration, with the diagonal of perfect
// calibration.
void save_reliability(const std::vector<double>& raw,
                      const std::vector<double>& calibrated,
                      const std::vector<int>& y,
                      const std::string& what,
                      const std::string& path) {
  viz::LineChart c;
  c.title = "Reliability, " + what + " (ECE " +
            fmt(metrics::expected_calibration_error(
                metrics::calibration_table(raw, y, kCalibrationBins))) +
            " -> " +
            fmt(metrics::expected_calibration_error(
                metrics::calibration_table(calibrated, y, kCalibrationBins))) +
            ")";
  c.x_label = "mean predicted P(positive) in the bin (15 bins)";
  c.y_label = "observed fraction positive";
  c.x_min = c.y_min = 0;
  c.x_max = c.y_max = 1;
  c.diagonal = true;
  for (bool after : {false, true}) {
    viz::Series s;
    s.name = after ? "calibrated" : "raw";
    s.dashed = !after;
    for (const auto& b : metrics::calibration_table(after ? calibrated : raw, y,
                                                    kCalibrationBins)) {
      if (b.count == 0) continue;
      s.x.push_back(b.mean_predicted);
      s.y.push_back(b.observed_rate);
    }
    c.series.push_back(s);
  }
  viz::save_line_chart(c, path);
}

}  // namespace

nlohmann::json evaluate_run(const EvalOptions& o) {
  const torch::Device device = resolve_device(o.device);
  infer::Predictor pred = infer::Predictor::load(o.run_dir, device);
  const infer::RunConfig& cfg = pred.config();
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
      cfg.train_on() != "train") {
    throw ConfigError(
        "this run trained on " + cfg.train_on() +
        ", so validation is not held out from it; choose the threshold "
        "with a run trained on train (or pass --threshold)");
  }
  auto dopts = cfg.data_options(o.data_root, o.cache_dir);
  if (dopts.root.empty()) {
    throw ConfigError("the run records no data folder; pass --data DIR");
  }
  dopts.skip_bad = o.skip_bad;
  data::Dataset ds = data::load_dataset(dopts);
  if (ds.index.positive != cfg.positive) {
    throw ConfigError("data positive class '" + ds.index.positive +
                      "' differs from the run's '" + cfg.positive + "'");
  }

  std::string rule = cfg.threshold_rule;
  if (o.threshold) {
    pred.set_threshold(pred.raw_threshold_for(*o.threshold));
    rule = "--threshold " + fmt(*o.threshold, 4) + " (calibrated)";
  } else if (o.target_sensitivity || o.balanced_threshold) {
    const auto& val = ds.split(data::Split::kVal);
    auto vp =
        to_doubles(infer::predict_proba(pred.model(), val.images, device));
    if (o.target_sensitivity) {
      pred.set_threshold(metrics::threshold_for_sensitivity(
          vp, to_ints(val.labels), *o.target_sensitivity));
      rule =
          "sensitivity >= " + fmt(*o.target_sensitivity, 3) + " on validation";
    } else {
      pred.set_threshold(metrics::threshold_youden(vp, to_ints(val.labels)));
      rule = "balanced on validation (max sensitivity + specificity)";
    }
  }
  const double threshold = pred.threshold();

  const auto& set = ds.split(split);
  const auto preds = pred.predict(set.images);
  std::vector<double> sc, cal;
  int64_t flagged = 0;
  for (const auto& r : preds) {
    sc.push_back(r.p_raw);
    cal.push_back(r.p);
    flagged += r.in_distribution ? 0 : 1;
  }
  auto lab = to_ints(set.labels);
  auto m = metrics::evaluate_with_ci(sc, lab, threshold, o.bootstrap, 1);
  auto roc = metrics::roc_curve(sc, lab);

  const fs::path out = o.out_dir.empty()
                           ? fs::path(o.run_dir) / ("eval-" + o.split)
                           : fs::path(o.out_dir);
  ensure_dir(out);
  nlohmann::json j = metrics::to_json(m);
  j["split"] = o.split;
  j["run"] = o.run_dir;
  j["model"] = cfg.model.arch;
  j["threshold_rule"] = rule;
  j["threshold_calibrated"] = pred.calibrated_threshold();
  j["classes"] = {{"positive", cfg.positive}, {"negative", cfg.negative}};
  const auto n_correct = m.confusion.tp + m.confusion.tn;
  auto w = metrics::wilson_interval(n_correct, m.n);
  j["accuracy_wilson_95"] = {w.low, w.high};
  // --skip-bad: the files left out, so n is not mistaken for the split's
  // size. A bad image of any split is listed: the whole data set is loaded
  // (validation picks thresholds), and an entry that could not even be
  // listed has no split.
  std::map<std::string, data::Split> split_of;
  for (const auto& smp : ds.index.samples) split_of[smp.path] = smp.split;
  nlohmann::json skipped = nlohmann::json::array();
  for (const auto& b : ds.skipped) {
    const auto it = split_of.find(b.path);
    skipped.push_back(
        {{"file", b.path},
         {"reason", b.reason},
         {"split", it == split_of.end()
                       ? nlohmann::json(nullptr)
                       : nlohmann::json(data::split_name(it->second))}});
  }
  j["skipped"] = skipped;
  j["note"] = "95 % CIs: percentile bootstrap over the " + std::to_string(m.n) +
              " images of the " + o.split +
              " split; with n = " + std::to_string(m.n) +
              " an accuracy CI is about " + fmt(w.high - w.low, 3) +
              " wide, so differences smaller than that are not evidence";
  nlohmann::json rj = {{"fpr", roc.fpr}, {"tpr", roc.tpr}};
  j["roc"] = rj;
  j["calibration"] = {
      {"method", cfg.calibration.method},
      {"temperature", cfg.calibration.temperature},
      {"source", cfg.calibration.source},
      {"bins", kCalibrationBins},
      {"note",
       "ECE over few images per bin is biased upward, so its percentile "
       "bootstrap interval can sit above the point estimate; compare raw "
       "and calibrated on the same images"},
      {"raw", calibration_json(sc, lab, o.bootstrap)},
      {"calibrated", calibration_json(cal, lab, o.bootstrap)}};
  j["ood"] = {
      {"detector", pred.has_detector()},
      {"flagged", flagged},
      {"flag_rate", sc.empty() ? 0.0
                               : static_cast<double>(flagged) /
                                     static_cast<double>(sc.size())},
      {"note", pred.has_detector()
                   ? "feature-space detector on the split's images (input "
                     "checks apply to files, in cxr predict)"
                   : "this run has no OOD detector: fit one with cxr "
                     "calibrate"}};
  write_json_atomic(out / "metrics.json", j);

  std::ostringstream csv;
  csv << "file,label,p_" << cfg.positive << ",p_" << cfg.positive
      << "_raw,decision,correct,ood_score,in_distribution\n";
  for (size_t i = 0; i < sc.size(); ++i) {
    const bool positive = preds[i].positive;
    csv << csv_field(set.paths[i]) << ","
        << (lab[i] ? cfg.positive : cfg.negative) << "," << std::setprecision(6)
        << cal[i] << "," << sc[i] << ","
        << (positive ? cfg.positive : cfg.negative) << ","
        << (positive == (lab[i] == 1) ? 1 : 0) << ","
        << (std::isnan(preds[i].ood_score) ? "" : fmt(preds[i].ood_score, 4))
        << "," << (preds[i].in_distribution ? 1 : 0) << "\n";
  }
  write_text_atomic(out / "predictions.csv", csv.str());

  viz::save_confusion_matrix(m.confusion.matrix(), {cfg.negative, cfg.positive},
                             cfg.model.arch + " on " + o.split +
                                 " (threshold " + fmt(threshold, 3) + ")",
                             (out / "confusion.png").string());
  viz::LineChart rc;
  rc.title = "ROC, " + cfg.model.arch + " on " + o.split + " (AUC " +
             fmt(m.auc.value) + ")";
  rc.x_label = "1 - specificity (false positive rate)";
  rc.y_label = "sensitivity (recall)";
  rc.x_min = rc.y_min = 0;
  rc.x_max = rc.y_max = 1;
  rc.diagonal = true;
  rc.series.push_back({cfg.model.arch, roc.fpr, roc.tpr});
  viz::save_line_chart(rc, (out / "roc.png").string());
  save_reliability(sc, cal, lab, cfg.model.arch + " on " + o.split,
                   (out / "reliability.png").string());
  if (o.split == "test" && o.out_dir.empty()) {
    infer::write_model_card(o.run_dir);
  }
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
  if (j.contains("calibration")) {
    const auto& c = j["calibration"];
    auto line = [&](const char* k) {
      const auto& v = c[k];
      s << "  " << std::left << std::setw(12) << k << std::right << "ECE "
        << fmt(v["ece"]["value"].get<double>()) << " [95% CI "
        << fmt(v["ece"]["low"].is_number() ? v["ece"]["low"].get<double>()
                                           : NAN)
        << ", "
        << fmt(v["ece"]["high"].is_number() ? v["ece"]["high"].get<double>()
                                            : NAN)
        << "]  Brier " << fmt(v["brier"].get<double>()) << "  NLL "
        << fmt(v["nll"].get<double>()) << "\n";
    };
    s << "\ncalibration (" << c["method"].get<std::string>()
      << ", T = " << fmt(c["temperature"].get<double>()) << "):\n";
    line("raw");
    line("calibrated");
  }
  if (j.contains("ood")) {
    const auto& o = j["ood"];
    s << "\nout-of-distribution flags: " << o["flagged"].get<int64_t>()
      << " of " << j["n"].get<int64_t>() << " ("
      << fmt(100 * o["flag_rate"].get<double>(), 1) << " %)"
      << (o["detector"].get<bool>() ? "" : "; no detector in this run") << "\n";
  }
  if (j.contains("skipped") && !j["skipped"].empty()) {
    int64_t here = 0;
    for (const auto& b : j["skipped"]) {
      here += b["split"] == j["split"] ? 1 : 0;
    }
    s << "\nskipped " << j["skipped"].size()
      << " unreadable images (--skip-bad; " << here << " of them in "
      << j["split"].get<std::string>()
      << "): the numbers above leave them out (listed in metrics.json)\n";
  }
  s << "\n" << j["note"].get<std::string>() << "\n";
  return s.str();
}

std::vector<Prediction> predict_files(const PredictOptions& o,
                                      std::string* positive_name) {
  if (o.inputs.empty()) throw ConfigError("give at least one image or folder");
  const torch::Device device = resolve_device(o.device);
  infer::Predictor pred = infer::Predictor::load(o.run_dir, device);
  if (o.threshold) {
    if (!(*o.threshold >= 0 && *o.threshold <= 1)) {
      throw ConfigError("--threshold must be in [0, 1]");
    }
    pred.set_threshold(pred.raw_threshold_for(*o.threshold));
  }
  if (o.batch_size < 1) throw ConfigError("--batch-size must be >= 1");
  pred.batch_size = o.batch_size;
  const std::string& pos = pred.config().positive;
  if (positive_name) *positive_name = pos;
  // With --skip-bad, folders that cannot be listed (a symlink loop, no
  // permission) become error rows like unreadable images.
  std::vector<data::BadFile> unlisted;
  const std::vector<std::string> files =
      data::list_image_files(o.inputs, o.skip_bad ? &unlisted : nullptr);
  std::vector<Prediction> out = pred.predict_files(files, o.skip_bad);
  for (const auto& b : unlisted) {
    Prediction r;
    r.file = b.path;
    r.error = b.reason;
    r.in_distribution = false;
    out.push_back(std::move(r));
  }

  auto reasons = [](const Prediction& r) {
    std::string s;
    for (const auto& x : r.reasons) s += (s.empty() ? "" : "; ") + x;
    return s;
  };
  if (!o.csv_path.empty()) {
    std::ostringstream csv;
    csv << "file,p_" << pos << ",p_" << pos
        << "_raw,decision,ood_score,in_distribution,ood_reasons,error\n";
    for (const auto& r : out) {
      const bool ok = r.error.empty();
      csv << csv_field(r.file) << "," << (ok ? fmt(r.p, 6) : "") << ","
          << (ok ? fmt(r.p_raw, 6) : "") << "," << r.decision << ","
          << (ok && !std::isnan(r.ood_score) ? fmt(r.ood_score, 4) : "") << ","
          << (ok ? (r.in_distribution ? "1" : "0") : "") << ","
          << csv_field(reasons(r)) << "," << csv_field(r.error) << "\n";
    }
    write_text_atomic(o.csv_path, csv.str());
  }
  if (!o.json_path.empty()) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& r : out) {
      nlohmann::json e = {{"file", r.file}};
      if (r.error.empty()) {
        e["p_" + pos] = r.p;
        e["p_" + pos + "_raw"] = r.p_raw;
        e["decision"] = r.decision;
        e["ood_score"] = std::isnan(r.ood_score) ? nlohmann::json(nullptr)
                                                 : nlohmann::json(r.ood_score);
        e["in_distribution"] = r.in_distribution;
        e["ood_reasons"] = r.reasons;
      } else {
        e["error"] = r.error;
      }
      j.push_back(e);
    }
    const auto& cfg = pred.config();
    write_json_atomic(o.json_path,
                      {{"run", o.run_dir},
                       {"threshold", pred.calibrated_threshold()},
                       {"threshold_raw", pred.threshold()},
                       {"calibration",
                        {{"method", cfg.calibration.method},
                         {"temperature", cfg.calibration.temperature}}},
                       {"ood_detector", pred.has_detector()},
                       {"positive", pos},
                       {"predictions", j}});
  }
  return out;
}

}  // namespace cxr::evaluate
