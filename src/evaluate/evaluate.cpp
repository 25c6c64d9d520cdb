#include "cxr/evaluate/evaluate.h"

#include <algorithm>
#include <iomanip>
#include <random>
#include <sstream>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/common/runtime.h"
#include "cxr/common/text.h"
#include "cxr/common/vectors.h"
#include "cxr/data/dataset.h"
#include "cxr/dist/dist.h"
#include "cxr/infer/fit_trust.h"
#include "cxr/infer/predictor.h"
#include "cxr/metrics/metrics.h"
#include "cxr/viz/plot.h"
#include "sharded.h"

namespace fs = std::filesystem;

namespace cxr::evaluate {
namespace {

// Exact text of a double (strtod reads it back bit for bit).
std::string hexfloat(double v) {
  std::ostringstream s;
  s << std::hexfloat << v;
  return s.str();
}

constexpr int kCalibrationBins = 15;

double ece_of(const std::vector<double>& p, const std::vector<int>& y) {
  return metrics::expected_calibration_error(
      metrics::calibration_table(p, y, kCalibrationBins));
}

// ECE (with a bootstrap CI), Brier and NLL of probabilities on a split.
CalibrationScore calibration_score(const std::vector<double>& p,
                                   const std::vector<int>& y,
                                   int replicates) {
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
    reps.push_back(ece_of(bp, by));
  }
  std::sort(reps.begin(), reps.end());
  auto pct = [&](double q) {
    if (reps.empty()) return std::nan("");
    return reps[static_cast<size_t>(q * static_cast<double>(reps.size() - 1))];
  };
  CalibrationScore c;
  c.ece = {ece_of(p, y), pct(0.025), pct(0.975)};
  c.brier = metrics::brier_score(p, y);
  c.nll = metrics::log_loss(p, y);
  c.table = metrics::calibration_table(p, y, kCalibrationBins);
  return c;
}

nlohmann::json to_json(const CalibrationScore& c) {
  // The ECE's NaNs stay numbers here (written as null), as before.
  return {{"ece",
           {{"value", c.ece.value}, {"low", c.ece.low}, {"high", c.ece.high}}},
          {"brier", c.brier},
          {"nll", c.nll},
          {"table", metrics::to_json(c.table)}};
}

// The threshold options that conflict or need a held-out validation split,
// refused before any image is read.
void check_options(const EvalOptions& o, const infer::RunConfig& cfg) {
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
  if (o.batch_size < 1) throw ConfigError("--batch-size must be >= 1");
  if ((o.target_sensitivity || o.balanced_threshold) &&
      cfg.train_on() != "train") {
    throw ConfigError(
        "this run trained on " + cfg.train_on() +
        ", so validation is not held out from it; choose the threshold "
        "with a run trained on train (or pass --threshold)");
  }
}

data::Dataset load_data(const EvalOptions& o, const infer::RunConfig& cfg) {
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
  return ds;
}

// Sets the Predictor's threshold from the options (a fixed one, or a rule
// on validation); returns the rule as metrics.json words it.
std::string choose_threshold(const EvalOptions& o,
                             const data::Dataset& ds,
                             infer::Predictor& pred,
                             const torch::Device& device) {
  if (o.threshold) {
    pred.set_threshold(pred.raw_threshold_for(*o.threshold));
    return "--threshold " + fixed(*o.threshold, 4) + " (calibrated)";
  }
  if (!o.target_sensitivity && !o.balanced_threshold) {
    return pred.config().threshold_rule;
  }
  const auto& val = ds.split(data::Split::kVal);
  const auto vp =
      to_doubles(infer::predict_proba(pred.model(), val.images, device));
  if (o.target_sensitivity) {
    pred.set_threshold(metrics::threshold_for_sensitivity(
        vp, to_ints(val.labels), *o.target_sensitivity));
    return "sensitivity >= " + fixed(*o.target_sensitivity, 3) +
           " on validation";
  }
  pred.set_threshold(metrics::threshold_youden(vp, to_ints(val.labels)));
  return "balanced on validation (max sensitivity + specificity)";
}

// The split's predictions as the metric functions take them.
struct Scores {
  std::vector<Prediction> preds;
  std::vector<double> raw, calibrated;
  std::vector<int> labels;
  int64_t flagged = 0;
};

// Sharded (--nproc): each rank scores its whole batches of the split, and
// every rank gets all rows back in the split's order.
Scores score(const infer::Predictor& pred, const data::ImageSet& set) {
  Scores s;
  auto& ctx = dist::world();
  const auto [begin, end] = detail::batch_shard(
      set.images.size(0), pred.batch_size, ctx.rank(), ctx.world_size());
  detail::say_shard("evaluate", "images", ctx, begin, end, set.images.size(0));
  s.preds = detail::gather_predictions(
      ctx, pred.predict(set.images.slice(0, begin, end)));
  for (const auto& r : s.preds) {
    s.raw.push_back(r.p_raw);
    s.calibrated.push_back(r.p);
    s.flagged += r.in_distribution ? 0 : 1;
  }
  s.labels = to_ints(set.labels);
  return s;
}

EvaluateResult::Calibration calibration_of(const infer::RunConfig& cfg,
                                           const Scores& s,
                                           int bootstrap) {
  EvaluateResult::Calibration c;
  c.method = cfg.calibration.method;
  c.temperature = cfg.calibration.temperature;
  c.source = cfg.calibration.source;
  c.bins = kCalibrationBins;
  c.note =
      "ECE over few images per bin is biased upward, so its percentile "
      "bootstrap interval can sit above the point estimate; compare raw "
      "and calibrated on the same images";
  c.raw = calibration_score(s.raw, s.labels, bootstrap);
  c.calibrated = calibration_score(s.calibrated, s.labels, bootstrap);
  return c;
}

EvaluateResult::Ood ood_of(const infer::Predictor& pred, const Scores& s) {
  EvaluateResult::Ood o;
  o.detector = pred.has_detector();
  o.flagged = s.flagged;
  o.flag_rate = s.raw.empty() ? 0.0
                              : static_cast<double>(s.flagged) /
                                    static_cast<double>(s.raw.size());
  o.note = o.detector
               ? "feature-space detector on the split's images (input "
                 "checks apply to files, in cxr predict)"
               : "this run has no OOD detector: fit one with cxr calibrate";
  return o;
}

EvaluateResult measure(const EvalOptions& o,
                       const infer::Predictor& pred,
                       const data::Dataset& ds,
                       const Scores& s,
                       const std::string& rule) {
  const infer::RunConfig& cfg = pred.config();
  EvaluateResult r;
  r.split = o.split;
  r.run = o.run_dir;
  r.model = cfg.model.arch;
  r.positive = cfg.positive;
  r.negative = cfg.negative;
  r.metrics = metrics::evaluate_with_ci(s.raw, s.labels, pred.threshold(),
                                        o.bootstrap, 1);
  r.threshold_rule = rule;
  r.threshold_calibrated = pred.calibrated_threshold();
  const auto& m = r.metrics;
  r.accuracy_wilson =
      metrics::wilson_interval(m.confusion.tp + m.confusion.tn, m.n);
  // --skip-bad: the files left out, so n is not mistaken for the split's
  // size. A bad image of any split is listed: the whole data set is loaded
  // (validation picks thresholds).
  r.skipped = data::skipped_images(ds);
  r.note = "95 % CIs: percentile bootstrap over the " + std::to_string(m.n) +
           " images of the " + o.split +
           " split; with n = " + std::to_string(m.n) +
           " an accuracy CI is about " +
           fixed(r.accuracy_wilson.high - r.accuracy_wilson.low, 3) +
           " wide, so differences smaller than that are not evidence";
  r.roc = metrics::roc_curve(s.raw, s.labels);
  r.calibration = calibration_of(cfg, s, o.bootstrap);
  r.ood = ood_of(pred, s);
  return r;
}

void write_predictions_csv(const fs::path& path,
                           const EvaluateResult& r,
                           const data::ImageSet& set,
                           const Scores& s) {
  std::ostringstream csv;
  csv << "file,label,p_" << r.positive << ",p_" << r.positive
      << "_raw,decision,correct,ood_score,in_distribution\n";
  for (size_t i = 0; i < s.raw.size(); ++i) {
    const auto& p = s.preds[i];
    const bool positive = p.positive;
    csv << csv_field(set.paths[i]) << ","
        << (s.labels[i] ? r.positive : r.negative) << ","
        << std::setprecision(6) << s.calibrated[i] << "," << s.raw[i] << ","
        << (positive ? r.positive : r.negative) << ","
        << (positive == (s.labels[i] == 1) ? 1 : 0) << ","
        << (std::isnan(p.ood_score) ? "" : fixed(p.ood_score, 4)) << ","
        << (p.in_distribution ? 1 : 0) << "\n";
  }
  write_text_atomic(path, csv.str());
}

// Reliability diagram: observed rate against mean predicted probability per
// bin, before and after calibration, with the diagonal of perfect
// calibration.
void save_reliability(const EvaluateResult::Calibration& c,
                      const std::string& what,
                      const std::string& path) {
  viz::LineChart chart;
  chart.title = "Reliability, " + what + " (ECE " + fixed(c.raw.ece.value) +
                " -> " + fixed(c.calibrated.ece.value) + ")";
  chart.x_label = "mean predicted P(positive) in the bin (15 bins)";
  chart.y_label = "observed fraction positive";
  chart.x_min = chart.y_min = 0;
  chart.x_max = chart.y_max = 1;
  chart.diagonal = true;
  for (bool after : {false, true}) {
    viz::Series s;
    s.name = after ? "calibrated" : "raw";
    s.dashed = !after;
    for (const auto& b : (after ? c.calibrated : c.raw).table) {
      if (b.count == 0) continue;
      s.x.push_back(b.mean_predicted);
      s.y.push_back(b.observed_rate);
    }
    chart.series.push_back(s);
  }
  viz::save_line_chart(chart, path);
}

void save_figures(const fs::path& out, const EvaluateResult& r) {
  const std::string what = r.model + " on " + r.split;
  viz::save_confusion_matrix(
      r.metrics.confusion.matrix(), {r.negative, r.positive},
      what + " (threshold " + fixed(r.metrics.threshold, 3) + ")",
      (out / "confusion.png").string());
  viz::LineChart rc;
  rc.title = "ROC, " + what + " (AUC " + fixed(r.metrics.auc.value) + ")";
  rc.x_label = "1 - specificity (false positive rate)";
  rc.y_label = "sensitivity (recall)";
  rc.x_min = rc.y_min = 0;
  rc.x_max = rc.y_max = 1;
  rc.diagonal = true;
  rc.series.push_back({r.model, r.roc.fpr, r.roc.tpr});
  viz::save_line_chart(rc, (out / "roc.png").string());
  save_reliability(r.calibration, what, (out / "reliability.png").string());
}

}  // namespace

nlohmann::json EvaluateResult::to_json() const {
  nlohmann::json j = metrics::to_json(metrics);
  j["split"] = split;
  j["run"] = run;
  j["model"] = model;
  j["threshold_rule"] = threshold_rule;
  j["threshold_calibrated"] = threshold_calibrated;
  j["classes"] = {{"positive", positive}, {"negative", negative}};
  j["accuracy_wilson_95"] = {accuracy_wilson.low, accuracy_wilson.high};
  nlohmann::json sk = nlohmann::json::array();
  for (const auto& b : skipped) {
    sk.push_back({{"file", b.file},
                  {"reason", b.reason},
                  {"split", b.split.empty() ? nlohmann::json(nullptr)
                                            : nlohmann::json(b.split)}});
  }
  j["skipped"] = sk;
  j["note"] = note;
  j["roc"] = {{"fpr", roc.fpr}, {"tpr", roc.tpr}};
  j["calibration"] = {
      {"method", calibration.method},
      {"temperature", calibration.temperature},
      {"source", calibration.source},
      {"bins", calibration.bins},
      {"note", calibration.note},
      {"raw", evaluate::to_json(calibration.raw)},
      {"calibrated", evaluate::to_json(calibration.calibrated)}};
  j["ood"] = {{"detector", ood.detector},
              {"flagged", ood.flagged},
              {"flag_rate", ood.flag_rate},
              {"note", ood.note}};
  return j;
}

EvaluateResult evaluate_run(const EvalOptions& o) {
  const torch::Device device = resolve_device(o.device);
  infer::Predictor pred = infer::Predictor::load(o.run_dir, device);
  const data::Split split = data::parse_split(o.split);
  check_options(o, pred.config());
  pred.batch_size = o.batch_size;
  const data::Dataset ds = load_data(o, pred.config());
  const std::string rule = choose_threshold(o, ds, pred, device);
  auto& ctx = dist::world();
  if (ctx.distributed()) {
    // Every rank chose the threshold from the same validation scores (no
    // rank waits for another's); rank 0's, bit for bit, decides everywhere.
    pred.set_threshold(
        std::stod(ctx.all_gather(ctx.is_main() ? hexfloat(pred.threshold())
                                               : std::string())
                      .at(0)));
  }
  const auto& set = ds.split(split);
  const Scores s = score(pred, set);
  // The metrics (and their bootstrap) on rank 0 from all the rows, as one
  // process computes them; it alone writes.
  if (!ctx.is_main()) return {};
  const EvaluateResult r = measure(o, pred, ds, s, rule);

  const fs::path out = o.out_dir.empty()
                           ? fs::path(o.run_dir) / ("eval-" + o.split)
                           : fs::path(o.out_dir);
  ensure_dir(out);
  write_json_atomic(out / "metrics.json", r.to_json());
  write_predictions_csv(out / "predictions.csv", r, set, s);
  save_figures(out, r);
  if (o.split == "test" && o.out_dir.empty()) {
    infer::write_model_card(o.run_dir);
  }
  return r;
}

std::string format_summary(const EvaluateResult& r) {
  std::ostringstream s;
  const auto& m = r.metrics;
  const auto& c = m.confusion;
  s << r.model << " on " << r.split << " (n = " << m.n << ", threshold "
    << fixed(m.threshold, 3) << ": " << r.threshold_rule << ")\n\n";
  s << "                 predicted " << r.negative << "  predicted "
    << r.positive << "\n";
  s << "  true " << std::left << std::setw(9) << r.negative << std::right
    << std::setw(12) << c.tn << std::setw(12) << c.fp << "\n";
  s << "  true " << std::left << std::setw(9) << r.positive << std::right
    << std::setw(12) << c.fn << std::setw(12) << c.tp << "\n\n";
  const std::pair<const char*, const metrics::Interval*> rows[] = {
      {"accuracy", &m.accuracy},
      {"precision", &m.precision},
      {"recall", &m.recall},
      {"specificity", &m.specificity},
      {"f1", &m.f1},
      {"auc", &m.auc}};
  for (const auto& [name, v] : rows) {
    s << "  " << std::left << std::setw(12) << name << std::right
      << fixed(v->value) << "  [95% CI " << fixed(v->low) << ", "
      << fixed(v->high) << "]\n";
  }
  const auto& cal = r.calibration;
  auto line = [&](const char* name, const CalibrationScore& v) {
    s << "  " << std::left << std::setw(12) << name << std::right << "ECE "
      << fixed(v.ece.value) << " [95% CI " << fixed(v.ece.low) << ", "
      << fixed(v.ece.high) << "]  Brier " << fixed(v.brier) << "  NLL "
      << fixed(v.nll) << "\n";
  };
  s << "\ncalibration (" << cal.method << ", T = " << fixed(cal.temperature)
    << "):\n";
  line("raw", cal.raw);
  line("calibrated", cal.calibrated);
  s << "\nout-of-distribution flags: " << r.ood.flagged << " of " << m.n << " ("
    << fixed(100 * r.ood.flag_rate, 1) << " %)"
    << (r.ood.detector ? "" : "; no detector in this run") << "\n";
  if (!r.skipped.empty()) {
    const auto here = std::count_if(
        r.skipped.begin(), r.skipped.end(),
        [&](const data::SkippedImage& b) { return b.split == r.split; });
    s << "\nskipped " << r.skipped.size() << " unreadable images (--skip-bad; "
      << here << " of them in " << r.split
      << "): the numbers above leave them out (listed in metrics.json)\n";
  }
  s << "\n" << r.note << "\n";
  return s.str();
}

}  // namespace cxr::evaluate
