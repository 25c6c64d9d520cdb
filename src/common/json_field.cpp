#include "cxr/common/json_field.h"

namespace cxr {

const nlohmann::json& json_field(const nlohmann::json& j,
                                 const std::string& key) {
  static const nlohmann::json kNull;
  if (!j.is_object()) return kNull;
  const auto it = j.find(key);
  return it != j.end() ? *it : kNull;
}

const nlohmann::json& json_field(const nlohmann::json& j,
                                 std::initializer_list<std::string> path) {
  const nlohmann::json* at = &j;
  for (const std::string& key : path) at = &json_field(*at, key);
  return *at;
}

std::string json_text(const nlohmann::json& j,
                      const std::string& key,
                      const std::string& fallback) {
  const nlohmann::json& v = json_field(j, key);
  return v.is_string() ? v.get<std::string>() : fallback;
}

std::string missing_keys_note(const std::string& file,
                              const std::vector<std::string>& lacks,
                              const std::string& fix) {
  if (lacks.empty()) return "";
  std::string names;
  for (const auto& n : lacks) names += (names.empty() ? "" : ", ") + n;
  return "note: " + file + " has no " + names +
         " (an older or interrupted run wrote it): " + fix + "\n";
}

}  // namespace cxr
