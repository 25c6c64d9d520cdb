// The report's charts: the ROC legend shows every model's whole name with
// its AUC (it used to cut the third one off), and charts come as SVG.
#include <string>

#include "cxr/common/error.h"
#include "cxr/viz/plot.h"
#include "test_util.h"

namespace cxr::viz {
namespace {

// Three curves named as a study names its models, AUC last.
LineChart roc_like(LineChart::Legend legend) {
  LineChart c;
  c.title = "ROC on the test split";
  c.x_label = "1 - specificity";
  c.y_label = "sensitivity";
  c.x_min = c.y_min = 0;
  c.x_max = c.y_max = 1;
  c.diagonal = true;
  c.legend = legend;
  c.height = 600;
  for (const char* n :
       {"Baseline CNN (refit on train+val) (AUC 0.983)",
        "MobileNetV2 (ImageNet) frozen -> fine-tuned (train; threshold "
        "chosen on val) (AUC 0.994)",
        "MobileNetV2 (ImageNet) frozen -> fine-tuned (refit on train+val; "
        "threshold of the train run) (AUC 0.994)"}) {
    c.series.push_back({n, {0, 0.1, 1}, {0, 0.9, 1}});
  }
  return c;
}

std::string joined(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += (s.empty() ? "" : " ") + l;
  return s;
}

TEST(ReportFigures, LegendBelowShowsEveryNameWhole) {
  const LineChart c = roc_like(LineChart::Legend::kBelow);
  const std::vector<std::string> lines = legend_lines(c);
  std::string names;
  for (const auto& s : c.series) names += (names.empty() ? "" : " ") + s.name;
  EXPECT_EQ(joined(lines), names);
  EXPECT_EQ(joined(lines).find("\xE2\x80\xA6"), std::string::npos);
  // A narrow chart wraps the names instead of cutting them.
  LineChart narrow = c;
  narrow.width = 300;
  const std::vector<std::string> wrapped = legend_lines(narrow);
  EXPECT_GT(wrapped.size(), lines.size());
  EXPECT_EQ(joined(wrapped), names);
}

TEST(ReportFigures, LegendInsideShortensLongNames) {
  // What the report's ROC did before: the legend inside the plot cut the
  // third model's name, AUC included.
  const std::vector<std::string> lines =
      legend_lines(roc_like(LineChart::Legend::kInside));
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], "Baseline CNN (refit on train+val) (AUC 0.983)");
  EXPECT_NE(lines[2].find("\xE2\x80\xA6"), std::string::npos) << lines[2];
  EXPECT_EQ(lines[2].find("(AUC 0.994)"), std::string::npos);
}

TEST(ReportFigures, ChartAsSvgInPixels) {
  const std::string svg = line_chart_svg(roc_like(LineChart::Legend::kBelow));
  EXPECT_NE(svg.find("<svg"), std::string::npos);
  EXPECT_NE(svg.find("width=\"720px\""), std::string::npos);
  EXPECT_NE(svg.find("height=\"600px\""), std::string::npos);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  LineChart bad = roc_like(LineChart::Legend::kBelow);
  bad.width = 10;
  EXPECT_THROW(line_chart_svg(bad), ConfigError);
  EXPECT_THROW(legend_lines(bad), ConfigError);
}

}  // namespace
}  // namespace cxr::viz
