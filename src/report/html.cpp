#include "html.h"

#include <limits>
#include <sstream>

#include "cxr/common/base64.h"
#include "cxr/common/fs.h"
#include "cxr/common/text.h"

namespace fs = std::filesystem;

namespace cxr::report::detail {

std::string img(const fs::path& p,
                const std::string& alt,
                const std::string& style) {
  if (!fs::exists(p)) {
    return "<p class=\"missing\">(" + html_escape(p.filename().string()) +
           " not found)</p>";
  }
  return "<img alt=\"" + html_escape(alt) + "\"" +
         (style.empty() ? "" : " style=\"" + style + "\"") +
         " src=\"data:image/png;base64," + base64(read_text(p)) + "\">";
}

std::string chart_img(const viz::LineChart& chart,
                      const std::string& alt,
                      const std::string& style) {
  return "<img alt=\"" + html_escape(alt) + "\"" +
         (style.empty() ? "" : " style=\"" + style + "\"") +
         " src=\"data:image/svg+xml;base64," +
         base64(viz::line_chart_svg(chart)) + "\">";
}

std::string count(const nlohmann::json& v) {
  return v.is_number() ? v.dump() : "n/a";
}

std::vector<double> numbers(const nlohmann::json& a) {
  std::vector<double> out;
  if (!a.is_array()) return out;
  for (const auto& v : a) out.push_back(number(v));
  return out;
}

std::string missing_keys(const nlohmann::json& j,
                         std::initializer_list<std::string> keys,
                         const std::string& file) {
  std::string lacks;
  for (const std::string& k : keys) {
    if (json_field(j, k).is_null()) lacks += (lacks.empty() ? "" : ", ") + k;
  }
  if (lacks.empty()) return "";
  return "<p class=missing>" + html_escape(file) + " has no " +
         html_escape(lacks) +
         " (an older or interrupted run wrote it): shown as n/a.</p>\n";
}

double number(const nlohmann::json& v) {
  return v.is_number() ? v.get<double>()
                       : std::numeric_limits<double>::quiet_NaN();
}

std::string num(const nlohmann::json& v, int p) {
  if (!v.is_number()) return "n/a";
  return fixed(v.get<double>(), p, "nan");
}

std::string ci(const nlohmann::json& m) {
  if (!m.is_object()) return "n/a";
  // A missing bound prints as n/a.
  return "<b>" + num(json_field(m, "value")) + "</b> <span class=\"ci\">[" +
         num(json_field(m, "low")) + ", " + num(json_field(m, "high")) +
         "]</span>";
}

nlohmann::json maybe_json(const fs::path& p) {
  if (!fs::exists(p)) return nullptr;
  return read_json(p);
}

std::string table_from_csv(const std::string& text, size_t max_rows) {
  std::istringstream in(text);
  std::string line;
  std::ostringstream h;
  h << "<table>";
  size_t row = 0;
  while (std::getline(in, line) && row <= max_rows) {
    std::stringstream ls(line);
    std::string cell;
    h << "<tr>";
    while (std::getline(ls, cell, ',')) {
      if (cell.find('/') != std::string::npos) {
        cell = fs::path(cell).filename().string();  // run folders
      }
      h << (row == 0 ? "<th>" : "<td>") << html_escape(cell)
        << (row == 0 ? "</th>" : "</td>");
    }
    h << "</tr>";
    ++row;
  }
  h << "</table>";
  return h.str();
}

void flatten(const nlohmann::json& j,
             const std::string& prefix,
             std::vector<std::pair<std::string, std::string>>& out) {
  if (j.is_object()) {
    for (const auto& [k, v] : j.items()) {
      flatten(v, prefix.empty() ? k : prefix + "." + k, out);
    }
  } else if (j.is_number_float()) {
    out.emplace_back(prefix, num(j, 3));
  } else if (j.is_array() && j.size() > 8) {
    out.emplace_back(prefix, "(" + std::to_string(j.size()) + " values)");
  } else {
    out.emplace_back(prefix, j.is_string() ? j.get<std::string>() : j.dump());
  }
}

}  // namespace cxr::report::detail
