// Classification metrics, ROC/AUC, bootstrap intervals and calibration.
#include "cxr/metrics/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include "cxr/common/error.h"
#include "cxr/common/text.h"

namespace cxr::metrics {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// Two-sided 95% standard normal quantile.
constexpr double kZ95 = 1.959963984540054;

double ratio(double num, double den) {
  return den == 0 ? kNaN : num / den;
}

void check_inputs(const char* fn,
                  const std::vector<double>& scores,
                  const std::vector<int>& labels) {
  if (scores.size() != labels.size()) {
    throw DataError(std::string(fn) + ": " + std::to_string(scores.size()) +
                    " scores but " + std::to_string(labels.size()) +
                    " labels; they must pair up one to one");
  }
  for (size_t i = 0; i < scores.size(); ++i) {
    if (labels[i] != 0 && labels[i] != 1) {
      throw DataError(std::string(fn) + ": label[" + std::to_string(i) +
                      "] is " + std::to_string(labels[i]) +
                      "; labels must be 0 (negative) or 1 (positive)");
    }
    if (std::isnan(scores[i])) {
      throw DataError(std::string(fn) + ": score[" + std::to_string(i) +
                      "] is NaN; the model output is not usable (diverged "
                      "training or corrupt checkpoint?)");
    }
  }
}

void check_probabilities(const char* fn, const std::vector<double>& scores) {
  for (size_t i = 0; i < scores.size(); ++i) {
    if (!(scores[i] >= 0.0 && scores[i] <= 1.0)) {
      throw DataError(std::string(fn) + ": score[" + std::to_string(i) +
                      "] = " + shortest(scores[i]) +
                      " is not a probability in [0, 1]; pass P(positive), "
                      "not logits");
    }
  }
}

// The mean of `loss(score, label)` over probabilities (Brier, log loss),
// after the shared input checks; NaN for empty input.
template <typename Loss>
double mean_loss(const char* fn,
                 const std::vector<double>& scores,
                 const std::vector<int>& labels,
                 Loss loss) {
  check_inputs(fn, scores, labels);
  check_probabilities(fn, scores);
  if (scores.empty()) return kNaN;
  double sum = 0;
  for (size_t i = 0; i < scores.size(); ++i) sum += loss(scores[i], labels[i]);
  return sum / static_cast<double>(scores.size());
}

// Indices sorted by ascending score, split into groups of tied scores; the
// AUC and ROC walk the groups so that ties are handled as one step.
struct SortedScores {
  std::vector<size_t> order;
  std::vector<size_t> group_end;  // exclusive end in `order` of each group
};

SortedScores sort_scores(const std::vector<double>& scores) {
  SortedScores s;
  s.order.resize(scores.size());
  std::iota(s.order.begin(), s.order.end(), size_t{0});
  std::stable_sort(s.order.begin(), s.order.end(),
                   [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  for (size_t k = 1; k <= s.order.size(); ++k) {
    if (k == s.order.size() || scores[s.order[k]] != scores[s.order[k - 1]]) {
      s.group_end.push_back(k);
    }
  }
  return s;
}

// Mann-Whitney AUC with case weights (bootstrap multiplicities); `weights`
// null means every case counts once. Each positive scores 1 for every
// negative below it and 1/2 for every tied negative.
double weighted_auc(const SortedScores& s,
                    const std::vector<int>& labels,
                    const std::vector<int64_t>* weights) {
  double neg_below = 0, pos_total = 0, num = 0;
  size_t start = 0;
  for (size_t end : s.group_end) {
    double pos = 0, neg = 0;
    for (size_t k = start; k < end; ++k) {
      const size_t i = s.order[k];
      const double w = weights ? static_cast<double>((*weights)[i]) : 1.0;
      (labels[i] == 1 ? pos : neg) += w;
    }
    num += pos * (neg_below + 0.5 * neg);
    neg_below += neg;
    pos_total += pos;
    start = end;
  }
  if (pos_total == 0 || neg_below == 0) return kNaN;
  return num / (pos_total * neg_below);
}

// Uniform index in [0, n) from raw engine output. std::uniform_int_distribution
// is implementation-defined, so it would make the bootstrap differ between
// standard libraries; rejection sampling keeps it unbiased and portable.
uint64_t uniform_index(std::mt19937_64& rng, uint64_t n) {
  const uint64_t max = std::numeric_limits<uint64_t>::max();
  const uint64_t rem = (max % n + 1) % n;  // 2^64 mod n
  uint64_t x;
  do {
    x = rng();
  } while (rem != 0 && x > max - rem);
  return x % n;
}

// Linear-interpolation percentile (the default of numpy and R type 7).
double percentile(std::vector<double> v, double p) {
  if (v.empty()) return kNaN;
  std::sort(v.begin(), v.end());
  const double h = (static_cast<double>(v.size()) - 1) * p;
  const size_t lo = static_cast<size_t>(std::floor(h));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (h - static_cast<double>(lo)) * (v[hi] - v[lo]);
}

nlohmann::json number_or_null(double v) {
  if (std::isfinite(v)) return v;
  return nullptr;
}

}  // namespace

Confusion confusion(const std::vector<double>& scores,
                    const std::vector<int>& labels,
                    double threshold) {
  check_inputs("confusion", scores, labels);
  Confusion c;
  for (size_t i = 0; i < scores.size(); ++i) {
    const bool pred = scores[i] >= threshold;
    if (labels[i] == 1) {
      ++(pred ? c.tp : c.fn);
    } else {
      ++(pred ? c.fp : c.tn);
    }
  }
  return c;
}

ThresholdMetrics rates(const Confusion& c) {
  const double tp = static_cast<double>(c.tp);
  const double fp = static_cast<double>(c.fp);
  const double tn = static_cast<double>(c.tn);
  const double fn = static_cast<double>(c.fn);
  ThresholdMetrics m;
  m.accuracy = ratio(tp + tn, tp + fp + tn + fn);
  m.precision = ratio(tp, tp + fp);
  m.recall = ratio(tp, tp + fn);
  m.specificity = ratio(tn, tn + fp);
  m.f1 = ratio(2 * tp, 2 * tp + fp + fn);
  return m;
}

RocCurve roc_curve(const std::vector<double>& scores,
                   const std::vector<int>& labels) {
  check_inputs("roc_curve", scores, labels);
  RocCurve roc;
  if (scores.empty()) return roc;
  const double pos_total =
      static_cast<double>(std::count(labels.begin(), labels.end(), 1));
  const double neg_total = static_cast<double>(labels.size()) - pos_total;
  const SortedScores s = sort_scores(scores);
  roc.fpr.push_back(ratio(0, neg_total));
  roc.tpr.push_back(ratio(0, pos_total));
  roc.thresholds.push_back(std::numeric_limits<double>::infinity());
  // Walk the tie groups from the highest score down: lowering the threshold
  // past a group admits all of its cases at once.
  double tp = 0, fp = 0;
  size_t end = s.order.size();
  for (size_t g = s.group_end.size(); g-- > 0;) {
    const size_t start = g == 0 ? 0 : s.group_end[g - 1];
    for (size_t k = start; k < end; ++k) {
      (labels[s.order[k]] == 1 ? tp : fp) += 1;
    }
    roc.fpr.push_back(ratio(fp, neg_total));
    roc.tpr.push_back(ratio(tp, pos_total));
    roc.thresholds.push_back(scores[s.order[start]]);
    end = start;
  }
  return roc;
}

double roc_auc(const std::vector<double>& scores,
               const std::vector<int>& labels) {
  check_inputs("roc_auc", scores, labels);
  return weighted_auc(sort_scores(scores), labels, nullptr);
}

MetricsWithCi evaluate_with_ci(const std::vector<double>& scores,
                               const std::vector<int>& labels,
                               double threshold,
                               int bootstrap_samples,
                               uint64_t seed) {
  check_inputs("evaluate_with_ci", scores, labels);
  if (std::isnan(threshold)) {
    throw ConfigError(
        "evaluate_with_ci: the threshold is NaN; pass a number "
        "such as 0.5");
  }
  if (bootstrap_samples < 0) {
    throw ConfigError("evaluate_with_ci: bootstrap_samples is " +
                      std::to_string(bootstrap_samples) +
                      "; use 0 (no intervals) or a positive count like 2000");
  }
  MetricsWithCi out;
  out.threshold = threshold;
  out.n = static_cast<int64_t>(scores.size());
  out.bootstrap_samples = bootstrap_samples;
  out.seed = seed;
  out.confusion = confusion(scores, labels, threshold);

  const SortedScores sorted = sort_scores(scores);
  const ThresholdMetrics point = rates(out.confusion);
  const std::array<double, 6> values = {
      point.accuracy, point.precision,
      point.recall,   point.specificity,
      point.f1,       weighted_auc(sorted, labels, nullptr)};

  std::array<std::vector<double>, 6> samples;
  const size_t n = scores.size();
  if (n > 0 && bootstrap_samples > 0) {
    for (auto& s : samples) s.reserve(static_cast<size_t>(bootstrap_samples));
    std::vector<char> predicted(n);
    for (size_t i = 0; i < n; ++i) predicted[i] = scores[i] >= threshold;
    std::mt19937_64 rng(seed);
    // A replicate is represented by how often each case was drawn, which
    // lets every replicate reuse the one sort of the scores.
    std::vector<int64_t> weights(n);
    for (int b = 0; b < bootstrap_samples; ++b) {
      std::fill(weights.begin(), weights.end(), 0);
      for (size_t k = 0; k < n; ++k) ++weights[uniform_index(rng, n)];
      Confusion c;
      for (size_t i = 0; i < n; ++i) {
        const int64_t w = weights[i];
        if (labels[i] == 1) {
          (predicted[i] ? c.tp : c.fn) += w;
        } else {
          (predicted[i] ? c.fp : c.tn) += w;
        }
      }
      const ThresholdMetrics r = rates(c);
      const std::array<double, 6> rep = {
          r.accuracy,    r.precision, r.recall,
          r.specificity, r.f1,        weighted_auc(sorted, labels, &weights)};
      for (size_t m = 0; m < rep.size(); ++m) {
        if (!std::isnan(rep[m])) samples[m].push_back(rep[m]);
      }
    }
  }
  std::array<Interval*, 6> targets = {&out.accuracy, &out.precision,
                                      &out.recall,   &out.specificity,
                                      &out.f1,       &out.auc};
  for (size_t m = 0; m < targets.size(); ++m) {
    targets[m]->value = values[m];
    targets[m]->low = percentile(samples[m], 0.025);
    targets[m]->high = percentile(samples[m], 0.975);
  }
  return out;
}

double threshold_for_sensitivity(const std::vector<double>& scores,
                                 const std::vector<int>& labels,
                                 double target) {
  if (!(target > 0.0 && target <= 1.0)) {
    throw ConfigError("target sensitivity " + shortest(target) +
                      " is not in (0, 1]; use e.g. 0.95");
  }
  check_inputs("threshold_for_sensitivity", scores, labels);
  std::vector<double> positives;
  for (size_t i = 0; i < scores.size(); ++i) {
    if (labels[i] == 1) positives.push_back(scores[i]);
  }
  if (positives.empty()) {
    throw ConfigError(
        "cannot choose a threshold for sensitivity " + shortest(target) +
        ": the scores contain no positive cases; use a validation set that "
        "holds both classes");
  }
  std::sort(positives.begin(), positives.end(), std::greater<double>());
  // The k highest positives must be at or above the threshold; the slack
  // keeps e.g. 0.28 * 25 = 7.000000000000001 from demanding 8 cases.
  const double p = static_cast<double>(positives.size());
  const size_t k =
      static_cast<size_t>(std::clamp(std::ceil(target * p - 1e-9), 1.0, p));
  return positives[k - 1];
}

double threshold_youden(const std::vector<double>& scores,
                        const std::vector<int>& labels) {
  check_inputs("threshold_youden", scores, labels);
  check_probabilities("threshold_youden", scores);
  double pos = 0, neg = 0;
  for (int y : labels) (y == 1 ? pos : neg) += 1;
  if (pos == 0 || neg == 0) {
    throw ConfigError(
        "cannot choose a balanced (Youden) threshold: the scores hold " +
        std::string(pos == 0 ? "no positive" : "no negative") +
        " cases; use a validation set that holds both classes");
  }
  // Walk the cuts between adjacent distinct scores from the top: above a cut
  // everything is called positive. J = sensitivity + specificity - 1.
  const SortedScores s = sort_scores(scores);
  // Exact log-odds, not clamped: two saturated neighbours (1 - 1e-9 and
  // 1 - 1e-12) would both clamp to the same value and the cut would land
  // outside the gap it scored. 1 - p is exact near 1 (Sterbenz), so the
  // logits stay distinct for every pair of distinct doubles in (0, 1).
  const auto logit = [](double p) { return std::log(p) - std::log1p(-p); };
  // The cut strictly between lo and hi: the midpoint of their logits, or,
  // when a score is exactly 0 or 1 (infinite logit) or the sigmoid rounds
  // onto a neighbour, the midpoint of the probabilities.
  const auto cut = [&](double hi, double lo) {
    const double m = 0.5 * (logit(hi) + logit(lo));
    double t = std::isfinite(m) ? 1.0 / (1.0 + std::exp(-m)) : NAN;
    if (!(t > lo && t < hi)) t = lo + 0.5 * (hi - lo);
    return t;
  };
  double tp = 0, fp = 0;
  double best_j = -2, best_t = 0.5;
  for (size_t g = s.group_end.size(); g-- > 1;) {
    const size_t begin = s.group_end[g - 1];
    for (size_t k = begin; k < s.group_end[g]; ++k) {
      (labels[s.order[k]] == 1 ? tp : fp) += 1;
    }
    const double j = tp / pos - fp / neg;
    // The cut lies halfway (in log-odds) between this group and the next
    // lower score, so that neither neighbour sits on the threshold.
    const double hi = scores[s.order[begin]];
    const double lo = scores[s.order[begin - 1]];
    const double t = cut(hi, lo);
    const bool better = j > best_j + 1e-12;
    const bool tie = std::abs(j - best_j) <= 1e-12;
    if (better || (tie && std::abs(t - 0.5) < std::abs(best_t - 0.5))) {
      best_j = j;
      best_t = t;
    }
  }
  return best_t;
}

Interval wilson_interval(int64_t successes, int64_t n) {
  if (n < 0 || successes < 0 || successes > n) {
    throw ConfigError("wilson_interval: " + std::to_string(successes) +
                      " successes out of " + std::to_string(n) +
                      " trials is impossible; successes must be in [0, n]");
  }
  if (n == 0) return {kNaN, kNaN, kNaN};
  const double nn = static_cast<double>(n);
  const double p = static_cast<double>(successes) / nn;
  const double z2 = kZ95 * kZ95;
  const double denom = 1 + z2 / nn;
  const double center = (p + z2 / (2 * nn)) / denom;
  const double half =
      kZ95 * std::sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn)) / denom;
  return {p, std::max(0.0, center - half), std::min(1.0, center + half)};
}

double brier_score(const std::vector<double>& scores,
                   const std::vector<int>& labels) {
  return mean_loss("brier_score", scores, labels, [](double p, int y) {
    const double d = p - y;
    return d * d;
  });
}

std::vector<CalibrationBin> calibration_table(const std::vector<double>& scores,
                                              const std::vector<int>& labels,
                                              int bins) {
  if (bins < 1) {
    throw ConfigError("calibration_table: " + std::to_string(bins) +
                      " bins requested; use at least 1 (10 is usual)");
  }
  check_inputs("calibration_table", scores, labels);
  check_probabilities("calibration_table", scores);
  std::vector<CalibrationBin> table(static_cast<size_t>(bins));
  std::vector<double> score_sum(table.size(), 0), pos_sum(table.size(), 0);
  for (size_t i = 0; i < scores.size(); ++i) {
    const size_t b =
        std::min(static_cast<size_t>(scores[i] * bins), table.size() - 1);
    ++table[b].count;
    score_sum[b] += scores[i];
    pos_sum[b] += labels[i];
  }
  for (size_t b = 0; b < table.size(); ++b) {
    CalibrationBin& bin = table[b];
    bin.lower = static_cast<double>(b) / bins;
    bin.upper = static_cast<double>(b + 1) / bins;
    const double count = static_cast<double>(bin.count);
    bin.mean_predicted = ratio(score_sum[b], count);
    bin.observed_rate = ratio(pos_sum[b], count);
  }
  return table;
}

double expected_calibration_error(const std::vector<CalibrationBin>& table) {
  double total = 0, sum = 0;
  for (const CalibrationBin& bin : table) {
    if (bin.count == 0) continue;
    const double count = static_cast<double>(bin.count);
    total += count;
    sum += count * std::abs(bin.observed_rate - bin.mean_predicted);
  }
  return ratio(sum, total);
}

double log_loss(const std::vector<double>& scores,
                const std::vector<int>& labels) {
  return mean_loss("log_loss", scores, labels, [](double s, int y) {
    const double p = std::clamp(s, 1e-12, 1.0 - 1e-12);
    return -(y ? std::log(p) : std::log1p(-p));
  });
}

double fit_temperature(const std::vector<double>& logits,
                       const std::vector<int>& labels) {
  check_inputs("fit_temperature", logits, labels);
  int64_t pos = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (!std::isfinite(logits[i])) {
      throw DataError("fit_temperature: logit " + std::to_string(i) +
                      " is not finite");
    }
    pos += labels[i];
  }
  if (pos == 0 || pos == static_cast<int64_t>(labels.size())) {
    throw ConfigError(
        "fit_temperature: both classes are needed to fit a temperature");
  }
  // NLL(u) with T = exp(u): mean over i of softplus(-y'_i z_i / T), where
  // y' = +-1. Its derivatives in u are sums of stable logistic terms.
  auto derivs = [&](double u, double* g, double* h) {
    const double inv_t = std::exp(-u);
    double sg = 0, sh = 0;
    for (size_t i = 0; i < logits.size(); ++i) {
      const double m = (labels[i] ? 1.0 : -1.0) * logits[i] * inv_t;
      const double s = 1.0 / (1.0 + std::exp(m));  // sigmoid(-m)
      sg += s * m;                                 // d/du of softplus(-m)
      sh += s * (1.0 - s) * m * m - s * m;
    }
    const double n = static_cast<double>(logits.size());
    *g = sg / n;
    *h = sh / n;
  };
  // The NLL is unimodal in u; bracket the root of its derivative.
  double lo = std::log(1e-3), hi = std::log(1e3), u = 0.0;
  double g = 0, h = 0;
  derivs(lo, &g, &h);
  if (g >= 0) return std::exp(lo);
  derivs(hi, &g, &h);
  if (g <= 0) return std::exp(hi);
  for (int it = 0; it < 200; ++it) {
    derivs(u, &g, &h);
    if (std::abs(g) < 1e-12) break;
    if (g > 0) {
      hi = u;
    } else {
      lo = u;
    }
    double next = h > 0 ? u - g / h : 0.5 * (lo + hi);
    if (!(next > lo && next < hi)) next = 0.5 * (lo + hi);
    if (std::abs(next - u) < 1e-12) {
      u = next;
      break;
    }
    u = next;
  }
  return std::exp(u);
}

nlohmann::json to_json(const Interval& interval) {
  return {{"value", number_or_null(interval.value)},
          {"low", number_or_null(interval.low)},
          {"high", number_or_null(interval.high)}};
}

nlohmann::json to_json(const Confusion& confusion) {
  return {{"tp", confusion.tp},
          {"fp", confusion.fp},
          {"tn", confusion.tn},
          {"fn", confusion.fn}};
}

nlohmann::json to_json(const MetricsWithCi& metrics) {
  return {{"n", metrics.n},
          {"threshold", number_or_null(metrics.threshold)},
          {"bootstrap_samples", metrics.bootstrap_samples},
          {"seed", metrics.seed},
          {"confidence", 0.95},
          {"confusion", to_json(metrics.confusion)},
          {"accuracy", to_json(metrics.accuracy)},
          {"precision", to_json(metrics.precision)},
          {"recall", to_json(metrics.recall)},
          {"specificity", to_json(metrics.specificity)},
          {"f1", to_json(metrics.f1)},
          {"auc", to_json(metrics.auc)}};
}

nlohmann::json to_json(const std::vector<CalibrationBin>& table) {
  nlohmann::json rows = nlohmann::json::array();
  for (const CalibrationBin& bin : table) {
    rows.push_back({{"lower", bin.lower},
                    {"upper", bin.upper},
                    {"mean_predicted", number_or_null(bin.mean_predicted)},
                    {"observed_rate", number_or_null(bin.observed_rate)},
                    {"count", bin.count}});
  }
  return rows;
}

}  // namespace cxr::metrics
