// Axis ranges and "nice" ticks for the charts: steps of 1, 2, 2.5 or 5
// times a power of ten, and tick labels with just enough decimals.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <utility>

#include "canvas.h"
#include "cxr/common/error.h"
#include "cxr/common/text.h"
#include "cxr/viz/plot.h"

namespace cxr::viz {
namespace detail {
namespace {

// A tick step m * 10^e. Ticks are computed as k * m / 10^-e so that they
// are the doubles nearest to the decimals they print as (0.3, not
// 0.30000000000000004 from 3 * 0.1).
struct Step {
  double mantissa = 1;
  int exponent = 0;
  double tick(double k) const {
    return exponent >= 0 ? k * mantissa * std::pow(10.0, exponent)
                         : k * mantissa / std::pow(10.0, -exponent);
  }
  double value() const { return tick(1); }
};

// `integer` rules out fractional steps (epochs 1..3 should not get 1.25).
Step nice_step(double lo, double hi, int max_ticks, bool integer = false) {
  const int base = static_cast<int>(
      std::floor(std::log10((hi - lo) / std::max(max_ticks, 2))));
  constexpr std::pair<double, int> kSteps[] = {
      {1, 0}, {2, 0}, {25, -1}, {5, 0}, {1, 1}, {2, 1}, {25, 0}, {5, 1}};
  for (const auto& [mantissa, offset] : kSteps) {
    const Step s{mantissa, base + offset};
    if (integer && s.exponent < 0) continue;
    const double step = s.value();
    const double count =
        std::floor(hi / step + 1e-9) - std::ceil(lo / step - 1e-9) + 1;
    if (count <= max_ticks) return s;
  }
  return {1, base + 2};
}

// Multiples of `step` in [lo, hi]. The counter is an int because k + 1 == k
// for huge k (1e9 +- 1e-7 has k ~ 1e17).
std::vector<double> ticks_of(const Step& step,
                             double lo,
                             double hi,
                             int max_ticks) {
  const double first = std::ceil(lo / step.value() - 1e-9);
  const double last = std::floor(hi / step.value() + 1e-9);
  std::vector<double> ticks;
  for (int i = 0; first + i <= last && i < max_ticks; ++i) {
    const double v = step.tick(first + i);
    ticks.push_back(v == 0 ? 0.0 : v);  // no negative zero
  }
  return ticks;
}

}  // namespace

std::string format_tick(double v, double step) {
  if (std::abs(v) < std::abs(step) * 1e-9) v = 0;  // no "-0" or "1e-17"
  const double mag = std::floor(std::log10(step) + 1e-9);
  int decimals = std::max(0, static_cast<int>(-mag));
  const double mantissa = step / std::pow(10.0, mag);
  if (mag <= 0 && std::abs(mantissa - 2.5) < 1e-6) ++decimals;
  char buf[64];
  if (std::abs(v) >= 1e6 || decimals > 6) {
    std::snprintf(buf, sizeof(buf), "%g", v);
  } else {
    std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  }
  return buf;
}

// One axis: explicit limits win; free sides follow the finite data and are
// widened when the data are constant.
Axis make_axis(const AxisSpec& spec, const std::string& what) {
  const double data_lo = spec.data_lo, data_hi = spec.data_hi;
  const std::optional<double> opt_lo = spec.min, opt_hi = spec.max;
  const int max_ticks = spec.max_ticks;
  const bool integer = spec.integer;
  for (const auto& o : {opt_lo, opt_hi}) {
    if (o && !std::isfinite(*o)) {
      throw ConfigError(what + ": axis limit " + shortest(*o) +
                        " is not a finite number");
    }
  }
  if (opt_lo && opt_hi && !(*opt_lo < *opt_hi)) {
    throw ConfigError(what + ": axis min " + shortest(*opt_lo) +
                      " is not below max " + shortest(*opt_hi));
  }
  const bool has_data = data_lo <= data_hi;
  double lo = opt_lo.value_or(has_data ? data_lo : 0.0);
  double hi = opt_hi.value_or(has_data ? data_hi : 1.0);
  if (!(lo < hi)) {
    const double anchor = opt_lo ? lo : hi;
    const double pad = anchor == 0 ? 0.5 : std::abs(anchor) * 0.1;
    if (opt_lo) {
      hi = lo + pad;
    } else if (opt_hi) {
      lo = hi - pad;
    } else {
      lo -= pad;
      hi += pad;
    }
  }
  if (!std::isfinite(hi - lo)) {
    throw ConfigError(what + ": values up to " + shortest(std::max(-lo, hi)) +
                      " are too large to plot");
  }
  // Like matplotlib: free sides get a small margin so that extreme points
  // are not drawn on the frame; ticks are the nice values inside.
  const double margin = 0.03 * (hi - lo);
  if (!opt_lo) lo -= margin;
  if (!opt_hi) hi += margin;
  const Step step = nice_step(lo, hi, max_ticks, integer && hi - lo >= 1);
  Axis a;
  a.lo = lo;
  a.hi = hi;
  a.step = step.value();
  a.ticks = ticks_of(step, lo, hi, max_ticks);
  return a;
}

}  // namespace detail

using namespace detail;

std::vector<double> nice_ticks(double lo, double hi, int max_ticks) {
  if (!std::isfinite(hi - lo) || hi < lo) return {};
  if (hi == lo) return {lo};
  max_ticks = std::max(max_ticks, 2);
  return ticks_of(nice_step(lo, hi, max_ticks), lo, hi, max_ticks);
}

}  // namespace cxr::viz
