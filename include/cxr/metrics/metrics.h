#pragma once
/// Pure metric functions: confusion matrix, threshold metrics, ROC/AUC,
/// bootstrap confidence intervals, threshold choice, calibration. No I/O.
/// Conventions: `scores` are P(positive) (or any monotone score), `labels`
/// are 0/1, index 1 = positive class.
///
/// Input contract shared by every function taking (scores, labels): both
/// have the same length, labels are 0 or 1 and scores are not NaN;
/// otherwise DataError is thrown naming the first offending index.
#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace cxr::metrics {

struct Confusion {
  int64_t tp = 0, fp = 0, tn = 0, fn = 0;
  /// m[true][pred]
  std::array<std::array<int64_t, 2>, 2> matrix() const {
    return {{{tn, fp}, {fn, tp}}};
  }
  /// Number of cases counted.
  int64_t total() const { return tp + fp + tn + fn; }
};

/// Counts with prediction = score >= threshold.
Confusion confusion(const std::vector<double>& scores,
                    const std::vector<int>& labels,
                    double threshold);

/// Rates from a confusion matrix. Undefined ratios (0/0) are NaN and are
/// reported as such, never silently 0. f1 = 2tp / (2tp + fp + fn), so it is
/// 0 (not NaN) when positives exist but none is predicted, and NaN only when
/// there are neither positive labels nor positive predictions.
struct ThresholdMetrics {
  double accuracy = 0, precision = 0, recall = 0, specificity = 0, f1 = 0;
};
ThresholdMetrics rates(const Confusion& c);

struct RocCurve {
  std::vector<double> fpr, tpr, thresholds;  ///< from (0,0) to (1,1)
};
/// ROC over all distinct thresholds (ties handled as one step). Point i is
/// the operating point of "score >= thresholds[i]"; the first point (0,0)
/// has threshold +infinity. Thresholds are strictly decreasing. Empty input
/// gives an empty curve; with a single class present the undefined rate
/// (fpr without negatives, tpr without positives) is NaN.
RocCurve roc_curve(const std::vector<double>& scores,
                   const std::vector<int>& labels);
/// Area under the ROC curve (Mann-Whitney, ties count 1/2). NaN when only
/// one class is present.
double roc_auc(const std::vector<double>& scores,
               const std::vector<int>& labels);

struct Interval {
  double value = 0, low = 0, high = 0;  ///< point estimate and 95% CI
};
struct MetricsWithCi {
  Interval accuracy, precision, recall, specificity, f1, auc;
  Confusion confusion;
  double threshold = 0.5;
  int64_t n = 0;
  int bootstrap_samples = 0;
  uint64_t seed = 0;  ///< bootstrap seed, recorded for reproducibility
};
/// Percentile bootstrap (resampling cases with replacement, seeded) for every
/// metric at `threshold`. Replicates where a metric is undefined are dropped;
/// low/high are NaN when no replicate defines the metric (or when
/// bootstrap_samples is 0). Uses std::mt19937_64 with a portable index
/// mapping, so results are identical on every platform for a given seed.
/// Throws ConfigError for a NaN threshold or negative bootstrap_samples.
MetricsWithCi evaluate_with_ci(const std::vector<double>& scores,
                               const std::vector<int>& labels,
                               double threshold,
                               int bootstrap_samples = 2000,
                               uint64_t seed = 1);

/// Largest threshold whose sensitivity (recall) on these scores is >= target
/// (use validation scores, never test). Throws ConfigError when target is
/// not in (0, 1] or no positives exist.
double threshold_for_sensitivity(const std::vector<double>& scores,
                                 const std::vector<int>& labels,
                                 double target);

/// The balanced threshold: maximises Youden's J = sensitivity + specificity
/// - 1 on these scores (use validation scores, never test). The threshold is
/// placed halfway, in log-odds, between the two scores either side of the
/// best cut (exact log-odds, not clamped, so that saturated neighbours such
/// as 1 - 1e-9 and 1 - 1e-12 still get a cut strictly between them; a score
/// of exactly 0 or 1 takes the midpoint of the probabilities); among
/// equally good cuts the one closest to 0.5 wins. A single
/// distinct score gives 0.5. Throws ConfigError when a class is missing and
/// DataError when a score is not a probability.
double threshold_youden(const std::vector<double>& scores,
                        const std::vector<int>& labels);

/// Wilson score 95% interval for a proportion successes / n (better than the
/// normal approximation for small n or proportions near 0 or 1). value is
/// successes / n. n == 0 gives NaN for all three. Throws ConfigError when
/// successes is not in [0, n].
Interval wilson_interval(int64_t successes, int64_t n);

/// Mean squared difference between the score and the 0/1 label (lower is
/// better; 0.25 for a constant 0.5). NaN for empty input. Scores must be
/// probabilities in [0, 1] (DataError otherwise).
double brier_score(const std::vector<double>& scores,
                   const std::vector<int>& labels);

/// One bin of a reliability (calibration) table.
struct CalibrationBin {
  double lower = 0, upper = 0;  ///< bin edges of the predicted probability
  double mean_predicted = 0;    ///< mean score in the bin (NaN when empty)
  double observed_rate = 0;     ///< fraction of positives (NaN when empty)
  int64_t count = 0;
};
/// Reliability table with `bins` equal-width bins over [0, 1]; bin i holds
/// scores in [i/bins, (i+1)/bins), the last bin also holds 1.0. Every bin is
/// returned, empty ones with count 0. Scores must be in [0, 1] (DataError
/// otherwise); ConfigError when bins < 1.
std::vector<CalibrationBin> calibration_table(const std::vector<double>& scores,
                                              const std::vector<int>& labels,
                                              int bins = 10);

/// Expected calibration error: count-weighted mean |observed - predicted|
/// over the non-empty bins of a calibration table. NaN when all are empty.
double expected_calibration_error(const std::vector<CalibrationBin>& table);

/// Mean negative log-likelihood (log loss, natural log) of 0/1 labels under
/// P(positive) = scores; probabilities are clamped to [1e-12, 1 - 1e-12] so
/// one confident mistake costs about 27.6, not infinity. NaN for empty input.
double log_loss(const std::vector<double>& scores,
                const std::vector<int>& labels);

/// Temperature scaling (Guo et al. 2017): the T > 0 that minimises the mean
/// NLL of labels under sigmoid(logit / T), found by Newton's method on
/// log T (the NLL is smooth in it) with a bisection fallback, within
/// [1e-3, 1e3]. Use validation logits, never test. Throws DataError for a
/// non-finite logit and ConfigError when a class is missing (then T is not
/// identifiable).
double fit_temperature(const std::vector<double>& logits,
                       const std::vector<int>& labels);

/// JSON for reports. Undefined values (NaN) are written as null.
/// {"value", "low", "high"}
nlohmann::json to_json(const Interval& interval);
/// {"tp", "fp", "tn", "fn"}
nlohmann::json to_json(const Confusion& confusion);
/// {"n", "threshold", "bootstrap_samples", "seed", "confidence",
///  "confusion", "accuracy", "precision", "recall", "specificity", "f1",
///  "auc"}
nlohmann::json to_json(const MetricsWithCi& metrics);
/// [{"lower", "upper", "mean_predicted", "observed_rate", "count"}, ...]
nlohmann::json to_json(const std::vector<CalibrationBin>& table);

}  // namespace cxr::metrics
