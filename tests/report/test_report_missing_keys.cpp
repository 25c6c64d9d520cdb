// A report from files that lack optional keys (an interrupted or older
// stage, a hand-edited file): every section still renders, shows "n/a" or
// says what is missing, and never reads a missing key through const json's
// operator[] (undefined behaviour: it crashed ReportSummary in CI). Set
// CXR_TEST_REPORT_DIR to keep the HTML (missing-keys.html) for looking at it.
#include <cstdlib>

#include "cxr/common/error.h"
#include "cxr/report/report.h"
#include "test_util.h"

namespace cxr::report {
namespace {

namespace fs = std::filesystem;
using cxr::testing::contains;
using cxr::testing::read_text;
using cxr::testing::TempDir;
using nlohmann::json;

void write(const fs::path& p, const json& j) {
  cxr::testing::write_bytes(p, j.dump(2));
}

// A study whose every file holds its section's object but few of its keys.
fs::path write_sparse_study(const fs::path& root) {
  const fs::path study = root / "study";
  write(study / "study.json", {{"models", {{{"name", "Sparse"}, {"run", "m"}}}},
                               {"tuning", {{{"dir", "tune"}}}}});
  // explore: classes and duplicates without their numbers.
  write(study / "explore/summary.json",
        {{"dataset", json::object()},
         {"duplicates", {{"cross_split", {json::object()}}}}});
  write(study / "tune/best.json", {{"best", json::object()}});
  write(study / "m/config.json",
        {{"model", json::object()}, {"result", json::object()}});
  write(study / "m/eval-test/metrics.json",
        {{"accuracy", {{"value", 0.9}}},
         {"threshold", 0.5},
         {"classes", json::object()},
         {"roc", json::object()},
         {"calibration", {{"raw", json::object()}}},
         {"ood", json::object()}});
  write(study / "m/eval-ood/ood.json", {{"sets", {json::object()}}});
  json trust;
  trust["deletion"] = {{"fractions", {0.2}},
                       {"mean_drop_guided", {0.3}},
                       {"mean_drop_random", {0.1}}};
  trust["randomization"] = {{"cascade", {json::object()}}};
  write(study / "m/explain-examples/summary.json", {{"trust", trust}});
  return study;
}

TEST(ReportMissingKeys, SparseStudyRendersAndSaysWhatIsMissing) {
  TempDir tmp;
  const fs::path study = write_sparse_study(tmp.path());
  ReportOptions o;
  o.inputs = {study.string()};
  o.out_path = (tmp.path() / "report.html").string();
  ReportSummary s;
  ASSERT_NO_THROW(s = write_report(o));
  const std::string html = read_text(o.out_path);
  if (const char* keep = std::getenv("CXR_TEST_REPORT_DIR")) {
    fs::copy_file(o.out_path, fs::path(keep) / "missing-keys.html",
                  fs::copy_options::overwrite_existing);
  }
  ASSERT_EQ(s.models.size(), 1u);
  EXPECT_EQ(s.models[0].accuracy, 0.9);
  // Each section says which keys its file lacks; the deletion table
  // without cell size or repeats still renders; nothing prints as null.
  for (const char* says :
       {"explore/summary.json has no counts, pixel_stats",
        "tune/best.json has no mode, trials", "config.json has no train",
        "roc in metrics.json has no fpr/tpr", "(n/a px cells",
        "trust-deletion"}) {
    EXPECT_TRUE(contains(html, says)) << says;
  }
  EXPECT_FALSE(contains(html, ">null<"));
}

TEST(ReportMissingKeys, StudyModelWithoutRunIsADataError) {
  TempDir tmp;
  const fs::path study = tmp.path() / "study";
  write(study / "study.json", {{"models", {{{"name", "No run"}}}}});
  ReportOptions o;
  o.inputs = {study.string()};
  o.out_path = (tmp.path() / "report.html").string();
  try {
    write_report(o);
    FAIL() << "a model entry without a run folder was accepted";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("study.json"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("run"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace cxr::report
