#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "cxr/common/text.h"

namespace cxr {
namespace {

TEST(Text, FixedRoundsAndNamesUndefinedValues) {
  EXPECT_EQ(fixed(0.12345), "0.123");
  EXPECT_EQ(fixed(2.0, 1), "2.0");
  EXPECT_EQ(fixed(-0.5, 0), "-0");
  EXPECT_EQ(fixed(std::nan("")), "n/a");
  EXPECT_EQ(fixed(std::numeric_limits<double>::infinity(), 2, "nan"), "nan");
}

TEST(Text, ShortestDropsTrailingZeros) {
  EXPECT_EQ(shortest(0.5), "0.5");
  EXPECT_EQ(shortest(1e-5), "1e-05");
  EXPECT_EQ(shortest(3), "3");
}

TEST(Text, CsvFieldQuotesOnlyWhenNeeded) {
  EXPECT_EQ(csv_field("plain/path.png"), "plain/path.png");
  EXPECT_EQ(csv_field("a,b"), "\"a,b\"");
  EXPECT_EQ(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(csv_field("two\nlines"), "\"two\nlines\"");
  EXPECT_EQ(csv_field("cr\r"), "\"cr\r\"");
}

TEST(Text, HtmlEscapeCoversElementsAndAttributes) {
  EXPECT_EQ(html_escape("<a href='x'>\"&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&quot;&amp;&quot;&lt;/a&gt;");
  EXPECT_EQ(html_escape("plain"), "plain");
}

}  // namespace
}  // namespace cxr
