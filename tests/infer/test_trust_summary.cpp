// format_trust_summary (what cxr calibrate prints) on config.json files
// that lack keys. Before it read through json_field, each of the incomplete
// configs below aborted the process (nlohmann type_error thrown from a
// value() or get() on the null or garbage that const operator[] returns for a
// missing key, which is undefined behaviour).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "cxr/infer/fit_trust.h"

namespace {

using cxr::infer::format_trust_summary;

nlohmann::json full_config() {
  return {{"calibration",
           {{"method", "temperature"},
            {"temperature", 1.23456},
            {"source", "validation split (400 images)"},
            {"fit", {{"ece_before", 0.0812345}, {"ece_after", 0.0201}}}}},
          {"ood",
           {{"threshold", 3.14159},
            {"threshold_rule", "at most 5 % of validation flagged"}}}};
}

TEST(TrustSummary, CompleteConfigPrintsTwoLines) {
  // Byte for byte what the summary printed before it handled missing keys.
  EXPECT_EQ(format_trust_summary(full_config()),
            "calibration: temperature 1.235 (validation split (400 images)); "
            "validation ECE 0.08123 -> 0.0201\n"
            "out-of-distribution warning: score > 3.142 (at most 5 % of "
            "validation flagged)\n");
}

TEST(TrustSummary, UncalibratedRunSaysNone) {
  nlohmann::json cfg = full_config();
  cfg["calibration"] = {{"method", "none"}, {"source", "none: no val split"}};
  const std::string s = format_trust_summary(cfg);
  EXPECT_NE(s.find("calibration: none (none: no val split)\n"),
            std::string::npos)
      << s;
  EXPECT_EQ(s.find("note:"), std::string::npos) << s;
}

TEST(TrustSummary, EmptyOrNonObjectConfigNamesWhatIsMissing) {
  for (const nlohmann::json& cfg : {nlohmann::json::object(), nlohmann::json(),
                                    nlohmann::json::array({1, 2})}) {
    const std::string s = format_trust_summary(cfg);
    EXPECT_EQ(s,
              "calibration: n/a\n"
              "out-of-distribution warning: n/a\n"
              "note: config.json has no calibration, ood (an older or "
              "interrupted run wrote it): cxr calibrate RUN refits them\n")
        << cfg.dump();
  }
}

TEST(TrustSummary, MissingInnerKeysAreNamedAndShownAsNa) {
  nlohmann::json cfg = full_config();
  cfg["calibration"].erase("source");
  cfg["calibration"].erase("temperature");
  cfg["calibration"]["fit"].erase("ece_after");
  cfg["ood"].erase("threshold_rule");
  cfg["ood"]["threshold"] = "high";  // present, but no number
  const std::string s = format_trust_summary(cfg);
  EXPECT_NE(s.find("calibration: temperature n/a (n/a); validation ECE "
                   "0.08123 -> n/a\n"),
            std::string::npos)
      << s;
  EXPECT_NE(s.find("out-of-distribution warning: score > n/a (n/a)\n"),
            std::string::npos)
      << s;
  EXPECT_NE(s.find("note: config.json has no calibration.temperature, "
                   "calibration.source, calibration.fit.ece_after, "
                   "ood.threshold, ood.threshold_rule"),
            std::string::npos)
      << s;
}

}  // namespace
