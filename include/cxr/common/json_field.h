#pragma once
/// Reading JSON that another stage, an older cxr or a person wrote: any key
/// may be missing. const nlohmann::json's operator[] on a missing key is
/// undefined behaviour (an assertion or a crash; it crashed a report test in
/// CI), so code outside the writer reads such files through these.
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace cxr {

/// j[key] when `j` is an object that holds `key`; a null otherwise.
const nlohmann::json& json_field(const nlohmann::json& j,
                                 const std::string& key);

/// The value at a path of nested objects, json_field(j, {"a", "b"}); a null
/// when any step is missing or no object.
const nlohmann::json& json_field(const nlohmann::json& j,
                                 std::initializer_list<std::string> path);

/// The string at j[key], or `fallback` when it is missing or no string.
std::string json_text(const nlohmann::json& j,
                      const std::string& key,
                      const std::string& fallback = "");

/// "note: FILE has no a, b (an older or interrupted run wrote it): FIX\n"
/// naming the keys in `lacks`, or "" when there are none: a printed summary
/// says what its file is missing instead of leaving blanks without a reason.
std::string missing_keys_note(const std::string& file,
                              const std::vector<std::string>& lacks,
                              const std::string& fix);

}  // namespace cxr
