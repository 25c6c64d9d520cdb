#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cxr/common/json_field.h"

namespace cxr {
namespace {

TEST(JsonField, MissingKeysAndNonObjectsReadAsNull) {
  const nlohmann::json j = {{"a", {{"b", 2}}}, {"s", "text"}};
  EXPECT_EQ(json_field(j, "s"), "text");
  EXPECT_EQ(json_field(j, {"a", "b"}), 2);
  EXPECT_TRUE(json_field(j, "missing").is_null());
  EXPECT_TRUE(json_field(j, {"a", "missing"}).is_null());
  // A step through a number, a string or null is missing, not an error.
  EXPECT_TRUE(json_field(j, {"a", "b", "c"}).is_null());
  EXPECT_TRUE(json_field(j, {"s", "x"}).is_null());
  EXPECT_TRUE(json_field(nlohmann::json(), "a").is_null());
  EXPECT_TRUE(json_field(nlohmann::json::array({1, 2}), "a").is_null());
}

TEST(JsonField, TextFallsBackWhenMissingOrNoString) {
  const nlohmann::json j = {{"s", "text"}, {"n", 3}};
  EXPECT_EQ(json_text(j, "s"), "text");
  EXPECT_EQ(json_text(j, "n", "fallback"), "fallback");
  EXPECT_EQ(json_text(j, "missing", "fallback"), "fallback");
  EXPECT_EQ(json_text(nlohmann::json(), "s"), "");
}

TEST(JsonField, MissingKeysNoteNamesTheKeysOrIsEmpty) {
  EXPECT_EQ(missing_keys_note("x.json", {}, "fix"), "");
  EXPECT_EQ(missing_keys_note("x.json", {"a", "b.c"}, "run it again"),
            "note: x.json has no a, b.c (an older or interrupted run wrote "
            "it): run it again\n");
}

}  // namespace
}  // namespace cxr
