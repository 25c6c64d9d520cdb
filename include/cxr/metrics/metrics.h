#pragma once
/// Pure metric functions: confusion matrix, threshold metrics, ROC/AUC,
/// bootstrap confidence intervals, threshold choice. No I/O.
/// Conventions: `scores` are P(positive) (or any monotone score), `labels`
/// are 0/1, index 1 = positive class.
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
};

/// Counts with prediction = score >= threshold.
Confusion confusion(const std::vector<double>& scores,
                    const std::vector<int>& labels, double threshold);

/// Rates from a confusion matrix. Undefined ratios (0/0) are NaN and are
/// reported as such, never silently 0.
struct ThresholdMetrics {
  double accuracy = 0, precision = 0, recall = 0, specificity = 0, f1 = 0;
};
ThresholdMetrics rates(const Confusion& c);

struct RocCurve {
  std::vector<double> fpr, tpr, thresholds;  ///< from (0,0) to (1,1)
};
/// ROC over all distinct thresholds (ties handled as one step).
RocCurve roc_curve(const std::vector<double>& scores,
                   const std::vector<int>& labels);
/// Area under the ROC curve (Mann-Whitney, ties count 1/2). NaN when only
/// one class is present.
double roc_auc(const std::vector<double>& scores, const std::vector<int>& labels);

struct Interval {
  double value = 0, low = 0, high = 0;  ///< point estimate and 95% CI
};
struct MetricsWithCi {
  Interval accuracy, precision, recall, specificity, f1, auc;
  Confusion confusion;
  double threshold = 0.5;
  int64_t n = 0;
  int bootstrap_samples = 0;
};
/// Percentile bootstrap (resampling cases with replacement, seeded) for every
/// metric at `threshold`. Replicates where a metric is undefined are dropped.
MetricsWithCi evaluate_with_ci(const std::vector<double>& scores,
                               const std::vector<int>& labels, double threshold,
                               int bootstrap_samples = 2000,
                               uint64_t seed = 1);

/// Largest threshold whose sensitivity (recall) on these scores is >= target
/// (use validation scores, never test). Throws ConfigError when target is
/// not in (0, 1] or no positives exist.
double threshold_for_sensitivity(const std::vector<double>& scores,
                                 const std::vector<int>& labels, double target);

}  // namespace cxr::metrics
