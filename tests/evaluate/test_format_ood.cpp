// format_ood (the table cxr evaluate --ood-sets prints) on ood.json contents
// that lack keys. Before it read through json_field, the empty and partial
// inputs below aborted the process (nlohmann type_error from get() on the
// null or garbage that const operator[] returns for a missing key, which is
// undefined behaviour).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "cxr/evaluate/ood_sets.h"

namespace {

using cxr::evaluate::format_ood;

nlohmann::json full_ood() {
  return {{"run", "runs/base"},
          {"split", "test"},
          {"detector", true},
          {"threshold", 3.1},
          {"notes", {"no DICOM sets"}},
          {"test",
           {{"n", 200},
            {"flag_rate", 0.025},
            {"by_checks", 0.005},
            {"by_detector", 0.02}}},
          {"sets",
           {{{"name", "photos"},
             {"n", 40},
             {"flag_rate", 1.0},
             {"by_checks", 0.95},
             {"by_detector", 0.9},
             {"auroc", 0.9876}},
            {{"name", "noise"},
             {"n", 12},
             {"flag_rate", 0.5},
             {"by_checks", nullptr},
             {"by_detector", nullptr},
             {"auroc", nullptr}}}}};
}

TEST(FormatOod, CompleteResultPrintsTheTable) {
  // Byte for byte what the table printed before it handled missing keys;
  // null rates (no detector) are values shown as n/a, not missing keys.
  EXPECT_EQ(format_ood(full_ood()),
            "OOD warning of runs/base (flagged %: all = input checks or "
            "detector)\n"
            "set                    n     all  checks  detector   AUROC\n"
            "in-dist. test        200     2.5     0.5       2.0       -\n"
            "photos                40   100.0    95.0      90.0   0.988\n"
            "noise                 12    50.0     n/a       n/a       -\n"
            "note: no DICOM sets\n");
}

TEST(FormatOod, EmptyOrNonObjectResultNamesWhatIsMissing) {
  for (const nlohmann::json& j :
       {nlohmann::json::object(), nlohmann::json(), nlohmann::json(3)}) {
    const std::string s = format_ood(j);
    EXPECT_NE(s.find("OOD warning of n/a"), std::string::npos) << s;
    EXPECT_NE(s.find("note: ood.json has no run, test, sets (an older or "
                     "interrupted run wrote it): cxr evaluate RUN "
                     "--ood-sets writes it again\n"),
              std::string::npos)
        << s;
  }
}

TEST(FormatOod, RowsWithoutNameOrCountShowNa) {
  nlohmann::json j = full_ood();
  j["sets"][0].erase("name");
  j["sets"][0].erase("n");
  j["test"].erase("n");
  j["notes"] = {"kept", 7};  // a note that is no string is shown as written
  const std::string s = format_ood(j);
  EXPECT_NE(s.find("in-dist. test        n/a     2.5"), std::string::npos) << s;
  EXPECT_NE(s.find("n/a                  n/a   100.0"), std::string::npos) << s;
  EXPECT_NE(s.find("note: kept\nnote: 7\n"), std::string::npos) << s;
  EXPECT_NE(s.find("note: ood.json has no test.n, sets[].name, sets[].n "),
            std::string::npos)
      << s;
}

TEST(FormatOod, SetsThatAreNoArrayAreMissing) {
  nlohmann::json j = full_ood();
  j["sets"] = {{"name", "photos"}};  // an object, not a list of sets
  const std::string s = format_ood(j);
  EXPECT_EQ(s.find("photos"), std::string::npos) << s;
  EXPECT_NE(s.find("note: ood.json has no sets "), std::string::npos) << s;
}

}  // namespace
