// Calibration metrics (log loss, Brier, ECE), temperature scaling and the
// run's calibrated threshold: recovered temperatures on simulated logits,
// hand-computed values on a tiny example, and errors.
#include <cmath>
#include <limits>
#include <random>

#include "cxr/common/error.h"
#include "cxr/infer/run_config.h"
#include "cxr/metrics/metrics.h"
#include "test_util.h"

namespace {

namespace m = cxr::metrics;

double sigmoid(double z) {
  return 1.0 / (1.0 + std::exp(-z));
}

// n logits z ~ N(0, 3^2) and labels y ~ Bernoulli(sigmoid(z / t_true)).
void simulate(double t_true,
              uint64_t seed,
              int n,
              std::vector<double>* z,
              std::vector<int>* y) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 3.0);
  std::uniform_real_distribution<double> unif(0.0, 1.0);
  z->clear();
  y->clear();
  for (int i = 0; i < n; ++i) {
    const double v = normal(rng);
    z->push_back(v);
    y->push_back(unif(rng) < sigmoid(v / t_true) ? 1 : 0);
  }
}

double nll_at(const std::vector<double>& z,
              const std::vector<int>& y,
              double t) {
  std::vector<double> p;
  for (double v : z) p.push_back(sigmoid(v / t));
  return m::log_loss(p, y);
}

void expect_recovers(double t_true, double tolerance) {
  std::vector<double> z;
  std::vector<int> y;
  simulate(t_true, 7, 20000, &z, &y);
  const double t = m::fit_temperature(z, y);
  EXPECT_NEAR(t, t_true, tolerance);
  // And it is the minimiser of the NLL, not just close to the truth.
  const double best = nll_at(z, y, t);
  EXPECT_LE(best, nll_at(z, y, t * 1.01) + 1e-12);
  EXPECT_LE(best, nll_at(z, y, t / 1.01) + 1e-12);
  // Over-confident logits (T > 1) get a better NLL after scaling.
  if (t_true > 1) {
    EXPECT_LT(best, nll_at(z, y, 1.0));
  }
}

TEST(CalibrationFit, RecoversAKnownTemperature) {
  expect_recovers(2.5, 0.1);
  expect_recovers(0.5, 0.05);
}

TEST(CalibrationFit, PerfectlyCalibratedLogitsGiveAboutOne) {
  std::vector<double> z;
  std::vector<int> y;
  simulate(1.0, 11, 20000, &z, &y);
  EXPECT_NEAR(m::fit_temperature(z, y), 1.0, 0.05);
}

TEST(CalibrationFit, ScalingTheLogitsScalesTheTemperature) {
  std::vector<double> z;
  std::vector<int> y;
  simulate(1.5, 3, 5000, &z, &y);
  const double t = m::fit_temperature(z, y);
  std::vector<double> z3;
  for (double v : z) z3.push_back(3 * v);
  EXPECT_NEAR(m::fit_temperature(z3, y), 3 * t, 1e-6 * t);
}

TEST(CalibrationFit, Errors) {
  // One class only: T is not identifiable.
  EXPECT_THROW(m::fit_temperature({0.5, -1.0, 2.0}, {1, 1, 1}),
               cxr::ConfigError);
  EXPECT_THROW(m::fit_temperature({0.5, -1.0, 2.0}, {0, 0, 0}),
               cxr::ConfigError);
  // Non-finite logits.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_THROW(m::fit_temperature({0.5, nan, 2.0}, {1, 0, 1}), cxr::DataError);
  EXPECT_THROW(m::fit_temperature({0.5, inf, 2.0}, {1, 0, 1}), cxr::DataError);
  EXPECT_THROW(m::fit_temperature({0.5, -inf, 2.0}, {1, 0, 1}), cxr::DataError);
  // Size mismatch and a label that is not 0/1.
  EXPECT_THROW(m::fit_temperature({0.5, 1.0}, {1, 0, 1}), cxr::DataError);
  EXPECT_THROW(m::fit_temperature({0.5, 1.0, 2.0}, {1, 0, 2}), cxr::DataError);
}

// scores {0.9, 0.1, 0.62, 0.64, 0.3}, labels {1, 0, 1, 0, 1}.
//
// Brier = (0.1^2 + 0.1^2 + 0.38^2 + 0.64^2 + 0.7^2) / 5
//       = (0.01 + 0.01 + 0.1444 + 0.4096 + 0.49) / 5 = 1.064 / 5 = 0.2128.
// Log loss = -(ln 0.9 + ln 0.9 + ln 0.62 + ln 0.36 + ln 0.3) / 5
//          = (0.1053605 * 2 + 0.4780358 + 1.0216512 + 1.2039728) / 5
//          = 2.9143809 / 5 = 0.58287618.
// 15 bins of width 1/15: 0.9 -> 13.5 (bin 13), 0.1 -> 1.5 (bin 1),
// 0.62 -> 9.3 and 0.64 -> 9.6 (bin 9: mean 0.63, observed 1/2),
// 0.3 -> 4.5 (bin 4).
// ECE = (|1 - 0.9| + |0 - 0.1| + 2 |0.5 - 0.63| + |1 - 0.3|) / 5
//     = (0.1 + 0.1 + 0.26 + 0.7) / 5 = 1.16 / 5 = 0.232.
TEST(CalibrationMetrics, HandComputedExample) {
  const std::vector<double> p = {0.9, 0.1, 0.62, 0.64, 0.3};
  const std::vector<int> y = {1, 0, 1, 0, 1};
  EXPECT_NEAR(m::brier_score(p, y), 0.2128, 1e-12);
  EXPECT_NEAR(m::log_loss(p, y), 0.58287618, 1e-8);

  const auto table = m::calibration_table(p, y, 15);
  ASSERT_EQ(table.size(), 15u);
  int64_t total = 0;
  for (const auto& b : table) total += b.count;
  EXPECT_EQ(total, 5);
  EXPECT_EQ(table[9].count, 2);
  EXPECT_NEAR(table[9].mean_predicted, 0.63, 1e-12);
  EXPECT_NEAR(table[9].observed_rate, 0.5, 1e-12);
  EXPECT_EQ(table[13].count, 1);
  EXPECT_EQ(table[1].count, 1);
  EXPECT_EQ(table[4].count, 1);
  EXPECT_NEAR(table[9].lower, 9.0 / 15, 1e-12);
  EXPECT_NEAR(table[9].upper, 10.0 / 15, 1e-12);
  EXPECT_EQ(table[0].count, 0);
  EXPECT_TRUE(std::isnan(table[0].mean_predicted));
  EXPECT_NEAR(m::expected_calibration_error(table), 0.232, 1e-12);
}

TEST(CalibrationMetrics, EdgeCases) {
  // A constant 0.5 has Brier 0.25 and log loss ln 2.
  EXPECT_NEAR(m::brier_score({0.5, 0.5}, {0, 1}), 0.25, 1e-15);
  EXPECT_NEAR(m::log_loss({0.5, 0.5}, {0, 1}), std::log(2.0), 1e-15);
  // One confident mistake costs about -ln(1e-12) = 27.631, not infinity
  // (1 - (1 - 1e-12) is not exactly 1e-12 in double precision).
  EXPECT_NEAR(m::log_loss({1.0}, {0}), -std::log(1e-12), 1e-3);
  EXPECT_NEAR(m::log_loss({0.0}, {1}), -std::log(1e-12), 1e-3);
  // Perfect predictions: 0 Brier, ~0 NLL, 0 ECE (1.0 falls in the last bin).
  EXPECT_EQ(m::brier_score({0.0, 1.0}, {0, 1}), 0.0);
  EXPECT_LT(m::log_loss({0.0, 1.0}, {0, 1}), 1e-11);
  const auto t = m::calibration_table({0.0, 1.0}, {0, 1}, 15);
  EXPECT_EQ(t.back().count, 1);
  EXPECT_EQ(m::expected_calibration_error(t), 0.0);
  // Empty input: NaN.
  EXPECT_TRUE(std::isnan(m::log_loss({}, {})));
  EXPECT_TRUE(std::isnan(m::brier_score({}, {})));
  EXPECT_TRUE(std::isnan(
      m::expected_calibration_error(m::calibration_table({}, {}, 15))));
  // Not probabilities, mismatched sizes, bad bins.
  EXPECT_THROW(m::log_loss({1.5}, {1}), cxr::DataError);
  EXPECT_THROW(m::log_loss({0.5, 0.2}, {1}), cxr::DataError);
  EXPECT_THROW(m::brier_score({-0.1}, {0}), cxr::DataError);
  EXPECT_THROW(m::calibration_table({0.5}, {1}, 0), cxr::ConfigError);
}

TEST(CalibrationApply, ScalarAndTensorAgree) {
  cxr::infer::Calibration c;
  c.method = "temperature";
  c.temperature = 1.7;
  const auto z = torch::linspace(-8, 8, 101, torch::kFloat64);
  const auto p = c.apply(z);
  for (int64_t i = 0; i < z.numel(); ++i) {
    const double v = z[i].item<double>();
    EXPECT_NEAR(p[i].item<double>(), c.apply(v), 1e-12);
    EXPECT_NEAR(c.apply(v), sigmoid(v / 1.7), 1e-12);
  }
  // T = 1 is the identity on probabilities.
  cxr::infer::Calibration none;
  EXPECT_NEAR(none.apply(0.8), sigmoid(0.8), 1e-15);
}

TEST(CalibrationApply, DecisionAtTheThresholdIsUnchanged) {
  std::mt19937_64 rng(5);
  std::normal_distribution<double> normal(0.0, 4.0);
  for (double temperature : {0.4, 1.0, 2.3}) {
    for (double threshold : {0.05, 0.3, 0.5, 0.72, 0.97}) {
      cxr::infer::RunConfig cfg;
      cfg.threshold = threshold;
      cfg.calibration.method = "temperature";
      cfg.calibration.temperature = temperature;
      const double tc = cfg.threshold_calibrated();
      // The calibrated threshold is the calibrated probability of the
      // threshold's logit.
      EXPECT_NEAR(tc,
                  sigmoid(std::log(threshold / (1 - threshold)) / temperature),
                  1e-12);
      int disagreements = 0, positives = 0;
      for (int i = 0; i < 2000; ++i) {
        const double z = normal(rng);
        const bool raw = sigmoid(z) >= threshold;
        const bool calibrated = cfg.calibration.apply(z) >= tc;
        disagreements += raw != calibrated ? 1 : 0;
        positives += raw ? 1 : 0;
      }
      EXPECT_EQ(disagreements, 0) << "T " << temperature << " t " << threshold;
      EXPECT_GT(positives, 0);
      EXPECT_LT(positives, 2000);
    }
  }
  // Thresholds 0 and 1 map to themselves.
  cxr::infer::RunConfig cfg;
  cfg.calibration.temperature = 2;
  cfg.threshold = 0;
  EXPECT_EQ(cfg.threshold_calibrated(), 0.0);
  cfg.threshold = 1;
  EXPECT_EQ(cfg.threshold_calibrated(), 1.0);
  // T > 1 pulls the calibrated threshold towards 0.5, T < 1 away from it.
  cfg.threshold = 0.8;
  EXPECT_LT(cfg.threshold_calibrated(), 0.8);
  EXPECT_GT(cfg.threshold_calibrated(), 0.5);
  cfg.calibration.temperature = 0.5;
  EXPECT_GT(cfg.threshold_calibrated(), 0.8);
}

TEST(CalibrationApply, JsonRoundTripAndBadValues) {
  cxr::infer::Calibration c;
  c.method = "temperature";
  c.temperature = 1.234;
  c.source = "validation";
  const auto back = cxr::infer::Calibration::from_json(c.to_json(), "x");
  EXPECT_EQ(back.method, "temperature");
  EXPECT_DOUBLE_EQ(back.temperature, 1.234);
  EXPECT_EQ(back.source, "validation");
  // Absent: none, T = 1.
  const auto none = cxr::infer::Calibration::from_json(nullptr, "x");
  EXPECT_EQ(none.method, "none");
  EXPECT_EQ(none.temperature, 1.0);
  auto j = c.to_json();
  for (double t : {0.0, -1.0}) {
    j["temperature"] = t;
    EXPECT_THROW(cxr::infer::Calibration::from_json(j, "x"), cxr::ModelError)
        << t;
  }
  j["temperature"] = 1.0;
  j["method"] = "platt";
  EXPECT_THROW(cxr::infer::Calibration::from_json(j, "x"), cxr::ModelError);
  j["method"] = "temperature";
  j["temperature"] = "warm";
  EXPECT_THROW(cxr::infer::Calibration::from_json(j, "x"), cxr::ModelError);
}

}  // namespace
