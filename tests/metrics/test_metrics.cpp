// Hand-computed cases for every metric, plus statistical checks of the
// bootstrap and the Wilson interval.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "cxr/common/error.h"
#include "cxr/metrics/metrics.h"

namespace cxr::metrics {
namespace {

// 8 cases, threshold 0.5 -> tp 3, fp 2, tn 2, fn 1.
const std::vector<double> kScores = {0.9, 0.8, 0.7, 0.6, 0.55, 0.4, 0.3, 0.2};
const std::vector<int> kLabels = {1, 1, 0, 1, 0, 0, 1, 0};

// n cases whose scores separate the classes imperfectly (AUC ~ 0.85).
void synthetic(size_t n,
               uint32_t seed,
               std::vector<double>* scores,
               std::vector<int>* labels) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> noise(0.0, 1.0);
  scores->clear();
  labels->clear();
  for (size_t i = 0; i < n; ++i) {
    const int y = i % 3 == 0 ? 1 : 0;
    const double z = noise(rng) + (y ? 1.5 : 0.0);
    scores->push_back(1.0 / (1.0 + std::exp(-z)));
    labels->push_back(y);
  }
}

TEST(MetricsConfusion, CountsHandCase) {
  const Confusion c = confusion(kScores, kLabels, 0.5);
  EXPECT_EQ(c.tp, 3);
  EXPECT_EQ(c.fp, 2);
  EXPECT_EQ(c.tn, 2);
  EXPECT_EQ(c.fn, 1);
  EXPECT_EQ(c.total(), 8);
  const auto m = c.matrix();
  EXPECT_EQ(m[0][0], 2);  // true negative row
  EXPECT_EQ(m[0][1], 2);
  EXPECT_EQ(m[1][0], 1);
  EXPECT_EQ(m[1][1], 3);
}

TEST(MetricsConfusion, ScoreEqualToThresholdIsPositive) {
  const Confusion c = confusion({0.5, 0.4999}, {1, 1}, 0.5);
  EXPECT_EQ(c.tp, 1);
  EXPECT_EQ(c.fn, 1);
}

TEST(MetricsConfusion, RejectsBadInputs) {
  EXPECT_THROW(confusion({0.1, 0.2}, {1}, 0.5), DataError);
  EXPECT_THROW(confusion({0.1, 0.2}, {1, 2}, 0.5), DataError);
  EXPECT_THROW(confusion({0.1, std::nan("")}, {1, 0}, 0.5), DataError);
  try {
    roc_auc({0.1, 0.2, 0.3}, {0, 1, -1});
    FAIL() << "expected DataError";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("label[2]"), std::string::npos)
        << e.what();
  }
}

TEST(MetricsRates, HandCase) {
  const ThresholdMetrics r = rates(confusion(kScores, kLabels, 0.5));
  EXPECT_DOUBLE_EQ(r.accuracy, 5.0 / 8);
  EXPECT_DOUBLE_EQ(r.precision, 3.0 / 5);
  EXPECT_DOUBLE_EQ(r.recall, 3.0 / 4);
  EXPECT_DOUBLE_EQ(r.specificity, 2.0 / 4);
  EXPECT_DOUBLE_EQ(r.f1, 2.0 / 3);
}

TEST(MetricsRates, UndefinedRatiosAreNaN) {
  // Threshold above every score: no positive predictions.
  ThresholdMetrics r = rates(confusion(kScores, kLabels, 0.95));
  EXPECT_TRUE(std::isnan(r.precision));
  EXPECT_DOUBLE_EQ(r.recall, 0.0);
  EXPECT_DOUBLE_EQ(r.specificity, 1.0);
  EXPECT_DOUBLE_EQ(r.f1, 0.0);
  EXPECT_DOUBLE_EQ(r.accuracy, 0.5);

  // Only negatives, none predicted positive.
  r = rates(confusion({0.1, 0.2, 0.3}, {0, 0, 0}, 0.5));
  EXPECT_TRUE(std::isnan(r.recall));
  EXPECT_TRUE(std::isnan(r.precision));
  EXPECT_TRUE(std::isnan(r.f1));
  EXPECT_DOUBLE_EQ(r.specificity, 1.0);
  EXPECT_DOUBLE_EQ(r.accuracy, 1.0);

  // Only positives: specificity is undefined.
  r = rates(confusion({0.1, 0.7, 0.9}, {1, 1, 1}, 0.5));
  EXPECT_TRUE(std::isnan(r.specificity));
  EXPECT_DOUBLE_EQ(r.precision, 1.0);
  EXPECT_DOUBLE_EQ(r.recall, 2.0 / 3);

  r = rates(Confusion{});
  EXPECT_TRUE(std::isnan(r.accuracy));
}

TEST(MetricsRoc, AucHandCase) {
  // Positives {0.9, 0.8, 0.6, 0.3} beat 4 + 4 + 3 + 1 of 16 negative pairs.
  EXPECT_DOUBLE_EQ(roc_auc(kScores, kLabels), 12.0 / 16);
  EXPECT_DOUBLE_EQ(roc_auc({0.1, 0.4, 0.35, 0.8}, {0, 0, 1, 1}), 0.75);
  EXPECT_DOUBLE_EQ(roc_auc({0.1, 0.2, 0.8, 0.9}, {0, 0, 1, 1}), 1.0);
  EXPECT_DOUBLE_EQ(roc_auc({0.9, 0.8, 0.2, 0.1}, {0, 0, 1, 1}), 0.0);
}

TEST(MetricsRoc, AucTiesCountHalf) {
  // Each tied positive at 0.5 wins 1 (vs 0.2) + 1/2 (vs 0.5); 0.9 wins 2.
  const std::vector<double> s = {0.2, 0.5, 0.5, 0.5, 0.9};
  const std::vector<int> y = {0, 0, 1, 1, 1};
  EXPECT_DOUBLE_EQ(roc_auc(s, y), 5.0 / 6);
  EXPECT_DOUBLE_EQ(roc_auc({0.3, 0.3, 0.3, 0.3}, {0, 1, 0, 1}), 0.5);
}

TEST(MetricsRoc, AucSingleClassIsNaN) {
  EXPECT_TRUE(std::isnan(roc_auc({0.1, 0.2, 0.3}, {1, 1, 1})));
  EXPECT_TRUE(std::isnan(roc_auc({0.1, 0.2, 0.3}, {0, 0, 0})));
  EXPECT_TRUE(std::isnan(roc_auc({}, {})));
}

TEST(MetricsRoc, CurveHandCaseWithTies) {
  const std::vector<double> s = {0.2, 0.5, 0.5, 0.5, 0.9};
  const std::vector<int> y = {0, 0, 1, 1, 1};
  const RocCurve roc = roc_curve(s, y);
  ASSERT_EQ(roc.fpr.size(), 4u);
  ASSERT_EQ(roc.tpr.size(), 4u);
  ASSERT_EQ(roc.thresholds.size(), 4u);
  EXPECT_TRUE(std::isinf(roc.thresholds[0]));
  EXPECT_DOUBLE_EQ(roc.thresholds[1], 0.9);
  EXPECT_DOUBLE_EQ(roc.thresholds[2], 0.5);
  EXPECT_DOUBLE_EQ(roc.thresholds[3], 0.2);
  const std::vector<double> fpr = {0, 0, 0.5, 1};
  const std::vector<double> tpr = {0, 1.0 / 3, 1, 1};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_DOUBLE_EQ(roc.fpr[i], fpr[i]) << i;
    EXPECT_DOUBLE_EQ(roc.tpr[i], tpr[i]) << i;
  }
  // The trapezoid area of the curve (ties drawn as diagonal steps) equals
  // the Mann-Whitney AUC with ties counted 1/2.
  double area = 0;
  for (size_t i = 1; i < roc.fpr.size(); ++i) {
    area += (roc.fpr[i] - roc.fpr[i - 1]) * (roc.tpr[i] + roc.tpr[i - 1]) / 2;
  }
  EXPECT_NEAR(area, roc_auc(s, y), 1e-12);
}

TEST(MetricsRoc, CurveMatchesConfusionAtEachThreshold) {
  const RocCurve roc = roc_curve(kScores, kLabels);
  ASSERT_EQ(roc.thresholds.size(), kScores.size() + 1);
  EXPECT_DOUBLE_EQ(roc.fpr.front(), 0.0);
  EXPECT_DOUBLE_EQ(roc.tpr.front(), 0.0);
  EXPECT_DOUBLE_EQ(roc.fpr.back(), 1.0);
  EXPECT_DOUBLE_EQ(roc.tpr.back(), 1.0);
  for (size_t i = 1; i < roc.thresholds.size(); ++i) {
    EXPECT_LT(roc.thresholds[i], roc.thresholds[i - 1]);
    const ThresholdMetrics r =
        rates(confusion(kScores, kLabels, roc.thresholds[i]));
    EXPECT_DOUBLE_EQ(roc.tpr[i], r.recall) << i;
    EXPECT_DOUBLE_EQ(roc.fpr[i], 1.0 - r.specificity) << i;
  }
}

TEST(MetricsRoc, CurveEdgeCases) {
  EXPECT_TRUE(roc_curve({}, {}).fpr.empty());
  const RocCurve only_pos = roc_curve({0.2, 0.7}, {1, 1});
  ASSERT_EQ(only_pos.tpr.size(), 3u);
  EXPECT_DOUBLE_EQ(only_pos.tpr[1], 0.5);
  EXPECT_TRUE(std::isnan(only_pos.fpr[1]));
}

TEST(MetricsBootstrap, IntervalsContainPointEstimate) {
  std::vector<double> s;
  std::vector<int> y;
  synthetic(300, 7, &s, &y);
  const MetricsWithCi m = evaluate_with_ci(s, y, 0.5, 1000, 3);
  EXPECT_EQ(m.n, 300);
  EXPECT_EQ(m.bootstrap_samples, 1000);
  EXPECT_EQ(m.seed, 3u);
  const ThresholdMetrics r = rates(confusion(s, y, 0.5));
  EXPECT_DOUBLE_EQ(m.accuracy.value, r.accuracy);
  EXPECT_DOUBLE_EQ(m.auc.value, roc_auc(s, y));
  EXPECT_EQ(m.confusion.tp, confusion(s, y, 0.5).tp);
  for (const Interval* i :
       {&m.accuracy, &m.precision, &m.recall, &m.specificity, &m.f1, &m.auc}) {
    EXPECT_LE(i->low, i->value);
    EXPECT_GE(i->high, i->value);
    EXPECT_LT(i->low, i->high);
    EXPECT_GT(i->high - i->low, 0.01);
    EXPECT_LT(i->high - i->low, 0.35);
  }
}

TEST(MetricsBootstrap, DeterministicForSeed) {
  std::vector<double> s;
  std::vector<int> y;
  synthetic(120, 11, &s, &y);
  const MetricsWithCi a = evaluate_with_ci(s, y, 0.5, 300, 42);
  const MetricsWithCi b = evaluate_with_ci(s, y, 0.5, 300, 42);
  const MetricsWithCi c = evaluate_with_ci(s, y, 0.5, 300, 43);
  EXPECT_EQ(a.auc.low, b.auc.low);
  EXPECT_EQ(a.auc.high, b.auc.high);
  EXPECT_EQ(a.f1.low, b.f1.low);
  EXPECT_EQ(a.recall.high, b.recall.high);
  EXPECT_TRUE(a.auc.low != c.auc.low || a.auc.high != c.auc.high ||
              a.accuracy.low != c.accuracy.low);
}

TEST(MetricsBootstrap, NarrowsWithMoreCases) {
  std::vector<double> s;
  std::vector<int> y;
  synthetic(100, 5, &s, &y);
  const MetricsWithCi small = evaluate_with_ci(s, y, 0.5, 500, 1);
  synthetic(1600, 5, &s, &y);
  const MetricsWithCi large = evaluate_with_ci(s, y, 0.5, 500, 1);
  // Width scales like 1/sqrt(n): 16x the cases, about 1/4 of the width.
  const double w_small = small.auc.high - small.auc.low;
  const double w_large = large.auc.high - large.auc.low;
  EXPECT_LT(w_large, 0.5 * w_small);
  EXPECT_GT(w_large, 0.12 * w_small);
  EXPECT_LT(large.accuracy.high - large.accuracy.low,
            0.5 * (small.accuracy.high - small.accuracy.low));
}

TEST(MetricsBootstrap, AccuracyIntervalAgreesWithWilson) {
  // 320 of 400 correct: the bootstrap and Wilson intervals of a proportion
  // should agree to within Monte Carlo noise.
  std::vector<double> s;
  std::vector<int> y;
  for (int i = 0; i < 400; ++i) {
    const int label = i % 2;
    const bool correct = i % 5 != 0;
    y.push_back(label);
    s.push_back((label == 1) == correct ? 0.9 : 0.1);
  }
  const MetricsWithCi m = evaluate_with_ci(s, y, 0.5, 4000, 9);
  EXPECT_DOUBLE_EQ(m.accuracy.value, 0.8);
  const Interval w = wilson_interval(320, 400);
  EXPECT_NEAR(m.accuracy.low, w.low, 0.012);
  EXPECT_NEAR(m.accuracy.high, w.high, 0.012);
}

TEST(MetricsBootstrap, UndefinedReplicatesAreDropped) {
  // One positive, predicted correctly: every replicate that draws it has
  // recall 1, the others have no positives and are dropped.
  const std::vector<double> s = {0.9, 0.1, 0.2, 0.3, 0.6, 0.4};
  const std::vector<int> y = {1, 0, 0, 0, 0, 0};
  const MetricsWithCi m = evaluate_with_ci(s, y, 0.5, 500, 1);
  EXPECT_DOUBLE_EQ(m.recall.value, 1.0);
  EXPECT_DOUBLE_EQ(m.recall.low, 1.0);
  EXPECT_DOUBLE_EQ(m.recall.high, 1.0);
  EXPECT_DOUBLE_EQ(m.auc.value, 1.0);
  EXPECT_FALSE(std::isnan(m.auc.low));
}

TEST(MetricsBootstrap, SingleClassAndNoSamples) {
  const MetricsWithCi m =
      evaluate_with_ci({0.2, 0.6, 0.9}, {1, 1, 1}, 0.5, 200, 1);
  EXPECT_TRUE(std::isnan(m.auc.value));
  EXPECT_TRUE(std::isnan(m.auc.low));
  EXPECT_TRUE(std::isnan(m.auc.high));
  EXPECT_TRUE(std::isnan(m.specificity.low));
  EXPECT_DOUBLE_EQ(m.precision.value, 1.0);

  const MetricsWithCi none = evaluate_with_ci(kScores, kLabels, 0.5, 0, 1);
  EXPECT_DOUBLE_EQ(none.f1.value, 2.0 / 3);
  EXPECT_TRUE(std::isnan(none.f1.low));

  const MetricsWithCi empty = evaluate_with_ci({}, {}, 0.5, 100, 1);
  EXPECT_EQ(empty.n, 0);
  EXPECT_TRUE(std::isnan(empty.accuracy.value));

  EXPECT_THROW(evaluate_with_ci(kScores, kLabels, 0.5, -1, 1), ConfigError);
  EXPECT_THROW(evaluate_with_ci(kScores, kLabels, std::nan(""), 10, 1),
               ConfigError);
}

TEST(MetricsThreshold, ForSensitivityHandCase) {
  // Positive scores, highest first: 0.9, 0.8, 0.6, 0.3.
  EXPECT_DOUBLE_EQ(threshold_for_sensitivity(kScores, kLabels, 0.25), 0.9);
  EXPECT_DOUBLE_EQ(threshold_for_sensitivity(kScores, kLabels, 0.5), 0.8);
  EXPECT_DOUBLE_EQ(threshold_for_sensitivity(kScores, kLabels, 0.7), 0.6);
  EXPECT_DOUBLE_EQ(threshold_for_sensitivity(kScores, kLabels, 0.75), 0.6);
  EXPECT_DOUBLE_EQ(threshold_for_sensitivity(kScores, kLabels, 1.0), 0.3);
  const double t = threshold_for_sensitivity(kScores, kLabels, 0.75);
  EXPECT_GE(rates(confusion(kScores, kLabels, t)).recall, 0.75);
  EXPECT_LT(rates(confusion(kScores, kLabels, std::nextafter(t, 1.0))).recall,
            0.75);
}

TEST(MetricsThreshold, ForSensitivityTiesAndRounding) {
  EXPECT_DOUBLE_EQ(
      threshold_for_sensitivity({0.7, 0.7, 0.2, 0.8}, {1, 1, 1, 0}, 0.5), 0.7);
  // 0.28 * 25 is 7.000000000000001 in floating point; 7 positives suffice.
  std::vector<double> s;
  std::vector<int> y;
  for (int i = 0; i < 25; ++i) {
    s.push_back(1.0 - 0.01 * i);
    y.push_back(1);
  }
  EXPECT_DOUBLE_EQ(threshold_for_sensitivity(s, y, 0.28), s[6]);
}

TEST(MetricsThreshold, ForSensitivityRejectsBadInput) {
  EXPECT_THROW(threshold_for_sensitivity(kScores, kLabels, 0.0), ConfigError);
  EXPECT_THROW(threshold_for_sensitivity(kScores, kLabels, 1.01), ConfigError);
  EXPECT_THROW(threshold_for_sensitivity(kScores, kLabels, std::nan("")),
               ConfigError);
  EXPECT_THROW(threshold_for_sensitivity({0.1, 0.9}, {0, 0}, 0.9), ConfigError);
}

double sigmoid_of_mean_logit(double a, double b) {
  const double la = std::log(a / (1 - a)), lb = std::log(b / (1 - b));
  return 1 / (1 + std::exp(-0.5 * (la + lb)));
}

TEST(MetricsThreshold, YoudenHandCase) {
  // From the top: cuts after 0.8 (2 TP, 0 FP) and after 0.6 (3 TP, 1 FP)
  // both give J = 0.5; the one nearer 0.5 wins, halfway in log-odds.
  const double t = threshold_youden(kScores, kLabels);
  EXPECT_NEAR(t, sigmoid_of_mean_logit(0.6, 0.55), 1e-12);
  const auto r = rates(confusion(kScores, kLabels, t));
  EXPECT_DOUBLE_EQ(r.recall + r.specificity - 1, 0.5);
  EXPECT_DOUBLE_EQ(r.recall, 0.75);
}

TEST(MetricsThreshold, YoudenSeparatesAndMovesOffTheDefault) {
  // Positives all above negatives, but under 0.5: the default threshold
  // misses every positive; the balanced one calls them all.
  const std::vector<double> s = {0.45, 0.4, 0.35, 0.1, 0.05, 0.02};
  const std::vector<int> y = {1, 1, 1, 0, 0, 0};
  const double t = threshold_youden(s, y);
  EXPECT_NEAR(t, sigmoid_of_mean_logit(0.35, 0.1), 1e-12);
  const auto r = rates(confusion(s, y, t));
  EXPECT_DOUBLE_EQ(r.recall, 1.0);
  EXPECT_DOUBLE_EQ(r.specificity, 1.0);
  EXPECT_DOUBLE_EQ(rates(confusion(s, y, 0.5)).recall, 0.0);
}

TEST(MetricsThreshold, YoudenTiesAndDegenerateScores) {
  // Tied scores move together: the cut can only fall between distinct ones.
  const double t = threshold_youden({0.7, 0.7, 0.7, 0.2}, {1, 0, 1, 0});
  EXPECT_NEAR(t, sigmoid_of_mean_logit(0.7, 0.2), 1e-12);
  // One distinct score: no cut separates anything, the default stays.
  EXPECT_DOUBLE_EQ(threshold_youden({0.3, 0.3}, {1, 0}), 0.5);
  // Scores of exactly 0 and 1 are clamped before the log-odds.
  const double e = threshold_youden({1.0, 0.0}, {1, 0});
  EXPECT_GT(e, 0.0);
  EXPECT_LT(e, 1.0);
}

TEST(MetricsThreshold, YoudenRejectsBadInput) {
  EXPECT_THROW(threshold_youden({0.1, 0.9}, {0, 0}), ConfigError);
  EXPECT_THROW(threshold_youden({0.1, 0.9}, {1, 1}), ConfigError);
  EXPECT_THROW(threshold_youden({0.1, 1.5}, {0, 1}), DataError);
  EXPECT_THROW(threshold_youden({0.1, std::nan("")}, {0, 1}), DataError);
  EXPECT_THROW(threshold_youden({0.1}, {0, 1}), DataError);
}

TEST(MetricsWilson, KnownValues) {
  Interval w = wilson_interval(8, 10);
  EXPECT_DOUBLE_EQ(w.value, 0.8);
  EXPECT_NEAR(w.low, 0.4902, 5e-4);
  EXPECT_NEAR(w.high, 0.9433, 5e-4);
  w = wilson_interval(0, 10);
  EXPECT_DOUBLE_EQ(w.low, 0.0);
  EXPECT_NEAR(w.high, 0.2775, 5e-4);
  w = wilson_interval(10, 10);
  EXPECT_NEAR(w.low, 0.7225, 5e-4);
  EXPECT_DOUBLE_EQ(w.high, 1.0);
  // A 200-image test set at 90% accuracy still leaves about +-4 points.
  w = wilson_interval(180, 200);
  EXPECT_NEAR(w.low, 0.8506, 5e-4);
  EXPECT_NEAR(w.high, 0.9343, 5e-4);
}

TEST(MetricsWilson, EdgeCases) {
  const Interval w = wilson_interval(0, 0);
  EXPECT_TRUE(std::isnan(w.value) && std::isnan(w.low) && std::isnan(w.high));
  EXPECT_THROW(wilson_interval(11, 10), ConfigError);
  EXPECT_THROW(wilson_interval(-1, 10), ConfigError);
}

TEST(MetricsCalibration, BrierHandCase) {
  // (0.1^2 + 0.2^2 + 0.6^2 + 0.5^2) / 4
  EXPECT_NEAR(brier_score({0.9, 0.2, 0.6, 0.5}, {1, 0, 0, 1}), 0.165, 1e-12);
  EXPECT_DOUBLE_EQ(brier_score({1.0, 0.0}, {1, 0}), 0.0);
  EXPECT_TRUE(std::isnan(brier_score({}, {})));
  EXPECT_THROW(brier_score({1.5}, {1}), DataError);
  EXPECT_THROW(brier_score({-2.0}, {0}), DataError);
}

TEST(MetricsCalibration, TableHandCase) {
  const std::vector<double> s = {0.05, 0.15, 0.12, 0.95, 1.0, 0.55};
  const std::vector<int> y = {0, 0, 1, 1, 1, 0};
  const std::vector<CalibrationBin> t = calibration_table(s, y, 4);
  ASSERT_EQ(t.size(), 4u);
  EXPECT_DOUBLE_EQ(t[0].lower, 0.0);
  EXPECT_DOUBLE_EQ(t[0].upper, 0.25);
  EXPECT_EQ(t[0].count, 3);
  EXPECT_NEAR(t[0].mean_predicted, 0.32 / 3, 1e-12);
  EXPECT_NEAR(t[0].observed_rate, 1.0 / 3, 1e-12);
  EXPECT_EQ(t[1].count, 0);
  EXPECT_TRUE(std::isnan(t[1].mean_predicted));
  EXPECT_TRUE(std::isnan(t[1].observed_rate));
  EXPECT_EQ(t[2].count, 1);
  EXPECT_DOUBLE_EQ(t[2].observed_rate, 0.0);
  EXPECT_EQ(t[3].count, 2);  // 1.0 falls into the last bin
  EXPECT_DOUBLE_EQ(t[3].upper, 1.0);
  EXPECT_NEAR(t[3].mean_predicted, 0.975, 1e-12);
  EXPECT_DOUBLE_EQ(t[3].observed_rate, 1.0);
  // (3 * |1/3 - 0.32/3| + 1 * 0.55 + 2 * 0.025) / 6
  EXPECT_NEAR(expected_calibration_error(t), 1.28 / 6, 1e-12);
  EXPECT_THROW(calibration_table(s, y, 0), ConfigError);
  EXPECT_TRUE(
      std::isnan(expected_calibration_error(calibration_table({}, {}))));
}

TEST(MetricsJson, SerialisesWithNullForUndefined) {
  const MetricsWithCi m =
      evaluate_with_ci({0.2, 0.6, 0.9}, {1, 1, 1}, 0.5, 50, 4);
  const nlohmann::json j = to_json(m);
  EXPECT_EQ(j.at("n").get<int64_t>(), 3);
  EXPECT_EQ(j.at("bootstrap_samples").get<int>(), 50);
  EXPECT_EQ(j.at("seed").get<uint64_t>(), 4u);
  EXPECT_DOUBLE_EQ(j.at("threshold").get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(j.at("confidence").get<double>(), 0.95);
  EXPECT_EQ(j.at("confusion").at("tp").get<int64_t>(), 2);
  EXPECT_EQ(j.at("confusion").at("fn").get<int64_t>(), 1);
  EXPECT_TRUE(j.at("auc").at("value").is_null());
  EXPECT_TRUE(j.at("specificity").at("low").is_null());
  EXPECT_DOUBLE_EQ(j.at("precision").at("value").get<double>(), 1.0);
  EXPECT_NEAR(j.at("recall").at("value").get<double>(), 2.0 / 3, 1e-12);
  for (const char* key :
       {"accuracy", "precision", "recall", "specificity", "f1", "auc"}) {
    EXPECT_TRUE(j.at(key).contains("low")) << key;
    EXPECT_TRUE(j.at(key).contains("high")) << key;
  }
  const nlohmann::json table =
      to_json(calibration_table({0.1, 0.9}, {0, 1}, 2));
  ASSERT_EQ(table.size(), 2u);
  EXPECT_EQ(table[1].at("count").get<int64_t>(), 1);
  EXPECT_DOUBLE_EQ(table[1].at("observed_rate").get<double>(), 1.0);
}

}  // namespace
}  // namespace cxr::metrics
