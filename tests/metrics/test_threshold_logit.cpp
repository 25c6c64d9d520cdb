// The balanced threshold is chosen in log-odds: with saturated neighbours
// (probabilities that a 1e-7 clamp would merge) it still lies strictly
// inside the gap it scored, so the cut it reports is the cut it scored.
#include <cmath>

#include "cxr/metrics/metrics.h"
#include "test_util.h"

namespace {

TEST(ThresholdYoudenLogit, SaturatedNeighboursKeepTheCutInsideTheGap) {
  // Negatives up to 1 - 1e-9 (logit ~20.7), positives from 1 - 1e-12
  // (logit ~27.6): the only perfect cut lies between those two.
  const double lo = 1.0 - 1e-9, hi = 1.0 - 1e-12;
  const std::vector<double> scores = {0.2, 0.5, lo, hi, 1.0 - 1e-13};
  const std::vector<int> labels = {0, 0, 0, 1, 1};
  const double t = cxr::metrics::threshold_youden(scores, labels);
  EXPECT_GT(t, lo);
  EXPECT_LT(t, hi);
  // Midpoint of the neighbouring logits, then the sigmoid.
  const auto logit = [](double p) { return std::log(p) - std::log1p(-p); };
  const double want = 1.0 / (1.0 + std::exp(-0.5 * (logit(lo) + logit(hi))));
  EXPECT_NEAR(std::log(1 - t), std::log(1 - want), 1e-6);
  // The threshold separates the classes as scored: J = 1.
  const auto r =
      cxr::metrics::rates(cxr::metrics::confusion(scores, labels, t));
  EXPECT_DOUBLE_EQ(r.recall, 1.0);
  EXPECT_DOUBLE_EQ(r.specificity, 1.0);
}

TEST(ThresholdYoudenLogit, ExactZeroAndOneStillCutBetweenTheNeighbours) {
  // Infinite logits fall back to the probability midpoint, still inside.
  const std::vector<double> scores = {0.0, 1.0};
  const std::vector<int> labels = {0, 1};
  const double t = cxr::metrics::threshold_youden(scores, labels);
  EXPECT_GT(t, 0.0);
  EXPECT_LT(t, 1.0);
  const std::vector<double> high = {0.3, 1.0};
  const double u = cxr::metrics::threshold_youden(high, labels);
  EXPECT_GT(u, 0.3);
  EXPECT_LT(u, 1.0);
}

}  // namespace
