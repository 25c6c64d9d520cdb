// The report's summary ("What this study shows"), table of contents and
// trust-check tables, built from a study folder written here: every number
// they show must be a number of these files at the shown rounding, and the
// words must follow the numbers (change a file, the text changes). Set
// CXR_TEST_REPORT_DIR to keep the HTML for looking at it.
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "cxr/common/text.h"
#include "cxr/report/report.h"
#include "report_test_util.h"
#include "test_util.h"

namespace cxr::report {
namespace {

namespace fs = std::filesystem;
using namespace cxr::testing;
using nlohmann::json;

json ci(double value, double low, double high) {
  return {{"value", value}, {"low", low}, {"high", high}};
}

json metrics(double acc, double low, double high, const std::string& rule) {
  return {{"n", 200},
          {"confidence", 0.95},
          {"classes", {{"positive", "COVID"}, {"negative", "Normal"}}},
          {"accuracy", ci(acc, low, high)},
          {"auc", ci(0.99381, 0.98612, 0.99889)},
          {"threshold", 0.3309673198412341},
          {"threshold_rule", rule},
          {"ood", {{"detector", true}, {"flag_rate", 0.015}, {"flagged", 3}}}};
}

// explain's summary.json with trust checks; `cascade` false writes the
// older format (one randomisation step, no cascade).
json explain_summary(bool cascade, const std::vector<double>& guided) {
  json t;
  t["deletion"] = {{"fractions", {0.1, 0.2, 0.5}},
                   {"cell_pixels", 14},
                   {"random_repeats", 3},
                   {"mean_drop_guided", guided},
                   {"mean_drop_random", {0.09871, 0.28234, 0.43866}}};
  t["energy"] = {
      {"uniform_map",
       {{"lung", 0.5249999999999999}, {"border", 0.2944000000000001}}},
      {"mean", {{"lung", 0.6859069}, {"border", 0.1659268}}},
      {"correct", {{"lung", 0.684148}, {"border", 0.1646904}}},
      {"wrong", {{"lung", nullptr}, {"border", nullptr}}}};
  if (cascade) {
    t["randomization"] = {{"cascade",
                           {{{"layer", "fc"},
                             {"mean_rank_correlation", 0.61234},
                             {"mean_abs_rank_correlation", 0.71234}},
                            {{"layer", "block2_conv"},
                             {"mean_rank_correlation", 0.2},
                             {"mean_abs_rank_correlation", 0.30456}},
                            {{"layer", "block1_conv"},
                             {"mean_rank_correlation", -0.01},
                             {"mean_abs_rank_correlation", 0.08765}}}},
                          {"untrustworthy_above", 0.5},
                          {"tolerance", 0.1},
                          {"untrustworthy", false}};
  } else {
    t["randomization"] = {{"mean_rank_correlation", 0.17297417},
                          {"modules", {"fc", "block5_bn", "block5_conv"}},
                          {"untrustworthy_above", 0.5},
                          {"untrustworthy", false}};
  }
  return {{"images", 6}, {"layer", "block2_relu"}, {"trust", t}};
}

const std::vector<double> kGuided = {0.32712, 0.39949, 0.55531};

// <root>/study with models A (best; new trust format) and B (older
// format), and the data's README with the source statement.
fs::path write_study(const fs::path& root) {
  const fs::path study = root / "study";
  write_json(study / "study.json", {{"data", (root / "data").string()},
                                    {"minutes", 1.5},
                                    {"models",
                                     {{{"name", "Model A"}, {"run", "a"}},
                                      {{"name", "Model B"}, {"run", "b"}}}}});
  fs::create_directories(root / "data");
  std::ofstream(root / "data" / "README.md") << "# data\n\nFacts:\n"
                                                "- Every image is gray.\n"
                                                "- The classes come from "
                                                "different hospitals and\n"
                                                "  sources (A: Spain; B: "
                                                "USA).\n"
                                                "- Research use only.\n";
  write_json(study / "a/eval-test/metrics.json",
             metrics(0.975, 0.95, 0.995,
                     "balanced on validation of run /x/y/b (same recipe)"));
  write_json(study / "a/explain-examples/summary.json",
             explain_summary(true, kGuided));
  write_json(study / "b/eval-test/metrics.json",
             metrics(0.955, 0.925, 0.98, "balanced on validation"));
  write_json(study / "b/explain-examples/summary.json",
             explain_summary(false, {0.17458, 0.18766, 0.62009}));
  return study;
}

std::string report(const fs::path& study, const fs::path& out) {
  ReportOptions o;
  o.inputs = {study.string()};
  o.out_path = out.string();
  write_report(o);
  return read_text(out);
}

// The HTML of section `id`: from its heading to the next one.
std::string section(const std::string& html, const std::string& id) {
  const size_t a = html.find("<h2 id=\"" + id + "\">");
  if (a == std::string::npos) return "";
  const size_t b = html.find("<h2 ", a + 1);
  return html.substr(a, b == std::string::npos ? std::string::npos : b - a);
}

// Text without tags; with `drop_quoted`, the contents of <code> and <q>
// (paths, quotations of other files) dropped too, as they are not numbers
// the report computes.
std::string text_of(std::string h, bool drop_quoted = true) {
  for (const char* tag : {"code", "q"}) {
    if (!drop_quoted) break;
    const std::string open = std::string("<") + tag + ">",
                      close = std::string("</") + tag + ">";
    for (size_t a; (a = h.find(open)) != std::string::npos;) {
      const size_t b = h.find(close, a);
      h.erase(
          a, b == std::string::npos ? std::string::npos : b + close.size() - a);
    }
  }
  std::string out;
  bool in_tag = false;
  for (char c : h) {
    if (c == '<') in_tag = true;
    if (!in_tag) out += c;
    if (c == '>') in_tag = false;
  }
  return out;
}

// Numbers as written in running text ("0.975", "-0.01", "20"), not digits
// inside words ("V2", "block1").
std::vector<std::string> numbers_in(const std::string& t) {
  std::vector<std::string> out;
  for (size_t i = 0; i < t.size();) {
    const bool minus = t[i] == '-' && i + 1 < t.size() &&
                       std::isdigit(static_cast<unsigned char>(t[i + 1]));
    const bool starts = std::isdigit(static_cast<unsigned char>(t[i])) || minus;
    const bool word_before =
        i > 0 && (std::isalnum(static_cast<unsigned char>(t[i - 1])) ||
                  t[i - 1] == '_' || t[i - 1] == '.');
    if (!starts || word_before) {
      ++i;
      continue;
    }
    size_t j = i + 1;
    while (j < t.size() &&
           (std::isdigit(static_cast<unsigned char>(t[j])) ||
            (t[j] == '.' && j + 1 < t.size() &&
             std::isdigit(static_cast<unsigned char>(t[j + 1]))))) {
      ++j;
    }
    if (j >= t.size() || !std::isalpha(static_cast<unsigned char>(t[j]))) {
      out.push_back(t.substr(i, j - i));
    }
    i = j;
  }
  return out;
}

// Every way a number of the files may be shown: three decimals, a
// percentage with one or no decimals, an integer.
void allow(const json& j, std::set<std::string>* ok) {
  if (j.is_object() || j.is_array()) {
    for (const auto& v : j) allow(v, ok);
  } else if (j.is_number()) {
    const double v = j.get<double>();
    ok->insert(fixed(v, 3));
    ok->insert(fixed(100 * v, 1));
    if (std::abs(100 * v - std::round(100 * v)) < 1e-9) {
      ok->insert(fixed(100 * v, 0));
    }
    if (v == std::round(v)) ok->insert(fixed(v, 0));
  }
}

// The rows of every <table class="cls"> (cell texts), in page order.
std::vector<std::vector<std::vector<std::string>>> tables(
    const std::string& html, const std::string& cls) {
  std::vector<std::vector<std::vector<std::string>>> out;
  const std::string open = "<table class=\"" + cls + "\">";
  for (size_t a = html.find(open); a != std::string::npos;
       a = html.find(open, a + 1)) {
    const std::string t = html.substr(a, html.find("</table>", a) - a);
    std::vector<std::vector<std::string>> rows;
    for (size_t r = t.find("<tr>"); r != std::string::npos;
         r = t.find("<tr>", r + 1)) {
      const std::string row = t.substr(r, t.find("</tr>", r) - r);
      std::vector<std::string> cells;
      for (size_t c = row.find("<td>"); c != std::string::npos;
           c = row.find("<td>", c + 1)) {
        cells.push_back(
            text_of(row.substr(c, row.find("</td>", c) - c), false));
      }
      if (!cells.empty()) rows.push_back(cells);
    }
    out.push_back(rows);
  }
  return out;
}

TEST(ReportSummary, NumbersInTextAreFound) {
  // The check below is only as good as this: numbers in words are not
  // numbers, signed and unsigned decimals and integers are.
  EXPECT_EQ(numbers_in("MobileNetV2 0.975 [0.950, 0.995] (n = 200), "
                       "block1_conv -0.010 at 20 %; 3rd."),
            (std::vector<std::string>{"0.975", "0.950", "0.995", "200",
                                      "-0.010", "20"}));
}

TEST(ReportSummary, SectionsAndTableOfContents) {
  TempDir tmp;
  const std::string html = report(write_study(report_out_dir(tmp)),
                                  report_out_dir(tmp) / "summary.html");
  // The summary opens the page, right after the table of contents.
  const size_t toc = html.find("<nav class=\"toc\"");
  ASSERT_NE(toc, std::string::npos);
  EXPECT_LT(toc, html.find("<h2 id=\"summary\">"));
  EXPECT_EQ(html.find("<h2 "), html.find("<h2 id=\"summary\">"));
  // Every section heading has its entry in the table of contents.
  for (size_t a = html.find("<h2 id=\""); a != std::string::npos;
       a = html.find("<h2 id=\"", a + 1)) {
    const size_t s = a + 8;
    const std::string id = html.substr(s, html.find('"', s) - s);
    EXPECT_TRUE(contains(html.substr(toc, html.find("</nav>") - toc),
                         "<a href=\"#" + id + "\">"))
        << id;
  }
  for (const char* id : {"summary", "results", "roc", "trust"}) {
    EXPECT_FALSE(section(html, id).empty()) << id;
  }
  // Trust checks as figures (SVG) and tables, not key dumps.
  const std::string trust = section(html, "trust");
  EXPECT_TRUE(contains(trust, "data:image/svg+xml;base64,"));
  EXPECT_EQ(tables(trust, "trust-deletion").size(), 2u);
  EXPECT_EQ(tables(trust, "trust-energy").size(), 2u);
  EXPECT_EQ(tables(trust, "trust-cascade").size(), 1u);  // A only
  EXPECT_FALSE(contains(html, "deletion.mean_drop_guided"));
  // Printable and readable at 1280 px: print rules, nothing fixed.
  EXPECT_TRUE(contains(html, "@media print"));
  EXPECT_TRUE(contains(html, "break-before:page"));
  EXPECT_FALSE(contains(html, "position:fixed"));
}

TEST(ReportSummary, EveryNumberShownComesFromTheFiles) {
  TempDir tmp;
  const fs::path study = write_study(report_out_dir(tmp));
  const std::string html = report(study, report_out_dir(tmp) / "summary.html");

  std::set<std::string> ok;
  for (const char* f :
       {"a/eval-test/metrics.json", "a/explain-examples/summary.json",
        "b/eval-test/metrics.json", "b/explain-examples/summary.json"}) {
    std::ifstream in(study / f);
    allow(json::parse(in), &ok);
  }
  // Derived: the difference of the accuracies, the best model's CI width,
  // the cascade's step numbers.
  ok.insert(fixed(0.975 - 0.955));
  ok.insert(fixed(0.995 - 0.95));
  ok.insert("1");
  ok.insert("3");
  const std::string summary = text_of(section(html, "summary"));
  ASSERT_FALSE(summary.empty());
  EXPECT_GT(numbers_in(summary).size(), 30u);
  for (const std::string& n : numbers_in(summary)) {
    EXPECT_TRUE(ok.count(n))
        << n << " is not a number of the files in: " << summary;
  }

  // The sentences, at the shown rounding.
  EXPECT_TRUE(
      contains(summary,
               "Model A has the highest accuracy, 0.975 [0.950, 0.995] "
               "(n = 200). Next is Model B, 0.955 [0.925, 0.980]. The "
               "difference, 0.020, is smaller than the width of the best "
               "model's 95 % CI (0.045), and the two intervals overlap: "
               "not distinguishable at n = 200."))
      << summary;
  EXPECT_TRUE(contains(summary,
                       "Model A: 0.331, balanced on validation of run b (same "
                       "recipe)"));
  EXPECT_TRUE(
      contains(summary,
               "blanking the 20 % of cells the maps rank highest dropped "
               "P by 0.399 against 0.282 for random cells: faithful"));
  EXPECT_TRUE(contains(summary,
                       "randomisation cascade passes: mean |rank correlation| "
                       "0.712 after step 1, 0.088 after step 3 (the maps "
                       "decorrelate as the cascade goes deeper)"));
  EXPECT_TRUE(contains(summary,
                       "lung box 0.686 of the map mass (uniform map 0.525), "
                       "border frame 0.166 (uniform map 0.294): more on the "
                       "lungs than a uniform map"));
  // B's older explain folder: the cascade is said to be missing.
  EXPECT_TRUE(contains(summary,
                       "dropped P by 0.188 against 0.282 for random cells: not "
                       "faithful for these images"));
  EXPECT_TRUE(
      contains(summary,
               "randomisation cascade not available for this run (made "
               "by an older version); its single-step check left a rank "
               "correlation of 0.173"));
  EXPECT_TRUE(contains(summary, "Model A 1.5 %; Model B 1.5 %"));
  EXPECT_TRUE(
      contains(section(html, "summary"),
               "<q>The classes come from different hospitals and sources "
               "(A: Spain; B: USA).</q>"));

  // The trust tables, cell by cell.
  const std::string trust = section(html, "trust");
  const auto del = tables(trust, "trust-deletion");
  ASSERT_EQ(del.size(), 2u);
  ASSERT_EQ(del[0].size(), 3u);
  const std::vector<double> random = {0.09871, 0.28234, 0.43866};
  for (size_t i = 0; i < 3; ++i) {
    const std::vector<std::string> want = {
        std::vector<std::string>{"10 %", "20 %", "50 %"}[i], fixed(kGuided[i]),
        fixed(random[i]), fixed(kGuided[i] - random[i])};
    EXPECT_EQ(del[0][i], want) << "row " << i;
  }
  const auto energy = tables(trust, "trust-energy");
  ASSERT_EQ(energy.size(), 2u);
  EXPECT_EQ(energy[0][0], (std::vector<std::string>{"lung box", "0.686",
                                                    "0.684", "n/a", "0.525"}));
  EXPECT_EQ(energy[0][1], (std::vector<std::string>{"border frame", "0.166",
                                                    "0.165", "n/a", "0.294"}));
  const auto cascade = tables(trust, "trust-cascade");
  ASSERT_EQ(cascade.size(), 1u);
  EXPECT_EQ(cascade[0][0],
            (std::vector<std::string>{"1", "fc", "0.712", "0.612"}));
  EXPECT_EQ(cascade[0][2],
            (std::vector<std::string>{"3", "block1_conv", "0.088", "-0.010"}));
  EXPECT_TRUE(
      contains(trust,
               "Randomisation cascade: not available for this run (made "
               "by an older version)."));
}

TEST(ReportSummary, TheWordsFollowTheFiles) {
  TempDir tmp;
  const fs::path study = write_study(tmp.path());
  // A's maps no better than random at 20 %, B far behind A, A's cascade
  // failing, a map heavy on the border.
  write_json(study / "a/explain-examples/summary.json", [] {
    json s = explain_summary(true, {0.1, 0.2, 0.3});
    s["trust"]["randomization"]["untrustworthy"] = true;
    s["trust"]["energy"]["mean"] = {{"lung", 0.4}, {"border", 0.35}};
    return s;
  }());
  write_json(study / "b/eval-test/metrics.json",
             metrics(0.8, 0.74, 0.85, "default 0.5"));
  const std::string summary =
      text_of(section(report(study, tmp / "r.html"), "summary"));
  EXPECT_TRUE(contains(summary,
                       "dropped P by 0.200 against 0.282 for random cells: not "
                       "faithful for these images"))
      << summary;
  EXPECT_TRUE(contains(summary, "randomisation cascade fails"));
  EXPECT_TRUE(contains(summary,
                       "border frame 0.350 (uniform map 0.294): as much "
                       "on the border"));
  EXPECT_TRUE(
      contains(summary,
               "The difference, 0.175, is at least the width of the best "
               "model's 95 % CI (0.045), and the two intervals do not "
               "overlap."));
  EXPECT_FALSE(contains(summary, "not distinguishable"));

  // No README next to the data: the summary says it cannot tell.
  fs::remove(tmp / "data" / "README.md");
  EXPECT_TRUE(
      contains(text_of(section(report(study, tmp / "r.html"), "summary")),
               "The data's README.md was not found"));
}

TEST(ReportSummary, AFlatPassingCascadeIsNotSaidToDecorrelateDeeper) {
  // As the baseline's misclassified images in a real study: 0.237 after
  // the first step, 0.248 after the last, a pass within the tolerance.
  TempDir tmp;
  const fs::path study = write_study(tmp.path());
  write_json(study / "a/explain-examples/summary.json", [] {
    json s = explain_summary(true, {0.3, 0.4, 0.5});
    auto& c = s["trust"]["randomization"]["cascade"];
    c[0]["mean_abs_rank_correlation"] = 0.237;
    c[1]["mean_abs_rank_correlation"] = 0.241;
    c[2]["mean_abs_rank_correlation"] = 0.248;
    return s;
  }());
  const std::string summary =
      text_of(section(report(study, tmp / "r.html"), "summary"));
  EXPECT_TRUE(contains(summary,
                       "randomisation cascade passes: mean |rank correlation| "
                       "0.237 after step 1, 0.248 after step 3 (the maps were "
                       "already decorrelated after the first step and stay "
                       "so)"))
      << summary;
  EXPECT_FALSE(contains(summary, "goes deeper)")) << summary;
}

}  // namespace
}  // namespace cxr::report
