// --help texts that are composed rather than written out: the server's
// limits name the HTTP status a request past them gets (cmd_serve.cpp's
// add_limit), the split flags say they apply to the flat layout only
// (cli.cpp's add_data_flags), in every command that has them.
#include "test_util.h"

namespace {

using cxr::testing::contains;
using cxr::testing::run_command;

const std::string kBin = CXR_BINARY;

std::string help_of(const std::string& command) {
  std::string out;
  EXPECT_EQ(run_command(kBin + " " + command + " --help", &out), 0) << out;
  return out;
}

TEST(CliHelp, ServerLimitsNameTheHttpStatusPastThem) {
  const std::string help = help_of("serve");
  EXPECT_TRUE(contains(help, "largest request body in MiB (more: HTTP 413)"))
      << help;
  EXPECT_TRUE(
      contains(help, "requests that may wait for the model (more: HTTP 503)"))
      << help;
  EXPECT_TRUE(contains(help, "seconds a request may take (more: HTTP 504)"))
      << help;
  // The other checked flags are no limits: no status in their help.
  EXPECT_EQ(cxr::testing::count_of(help, "(more: HTTP"), 3) << help;
}

TEST(CliHelp, SplitFlagsSayTheyApplyToTheFlatLayout) {
  for (const char* command : {"explore", "train", "tune", "study"}) {
    const std::string help = help_of(command);
    for (const char* text :
         {"flat layout: share of each class for training",
          "flat layout: share for validation (test gets the rest)",
          "flat layout: seed of the split"}) {
      EXPECT_TRUE(contains(help, text)) << command << ": " << text;
    }
  }
}

}  // namespace
