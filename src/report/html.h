#pragma once
// Internal to src/report: the HTML pieces the section writers share
// (embedded images, numbers with CIs, tables from CSV or nested JSON).
// Section writers read the files other stages wrote through json_field and
// json_text (common/json_field.h): any key may be missing.
#include <filesystem>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "cxr/common/json_field.h"
#include "cxr/viz/plot.h"

namespace cxr::report::detail {

/// `p` as an embedded <img> (data: URI), or a "(name not found)" line when
/// the file is missing.
std::string img(const std::filesystem::path& p,
                const std::string& alt,
                const std::string& style = "");

/// `chart` drawn as SVG in an <img> (data: URI): sharp when zoomed or
/// printed, and each chart its own document (cairo's SVG ids would clash
/// if several were inlined in one page).
std::string chart_img(const viz::LineChart& chart,
                      const std::string& alt,
                      const std::string& style = "");

/// A JSON number as written ("12"); "n/a" for anything else (counts).
std::string count(const nlohmann::json& v);

/// The numbers of a JSON array (NaN for null), empty for anything else.
std::vector<double> numbers(const nlohmann::json& a);

/// "<p class=missing>`file` has no a, b (…)</p>" naming those of `keys`
/// that `j` lacks, or "" when it has them all: a section says what its
/// file is missing instead of showing blanks without a reason.
std::string missing_keys(const nlohmann::json& j,
                         std::initializer_list<std::string> keys,
                         const std::string& file);

/// A JSON number as a double; NaN for anything else (null = NaN in the
/// files other stages write, missing keys).
double number(const nlohmann::json& v);

/// A JSON number with `p` decimals; "n/a" for anything else (missing keys).
std::string num(const nlohmann::json& v, int p = 3);

/// {"value", "low", "high"} as "<b>value</b> [low, high]"; "n/a" when `m`
/// is not an object.
std::string ci(const nlohmann::json& m);

/// The JSON file at `p`, or null when it does not exist.
nlohmann::json maybe_json(const std::filesystem::path& p);

/// A CSV text as an HTML table (header row + up to `max_rows` rows); cells
/// holding paths show only the file name (run folders).
std::string table_from_csv(const std::string& text, size_t max_rows);

/// Nested JSON as (dotted.key, text) rows; long arrays as their size.
void flatten(const nlohmann::json& j,
             const std::string& prefix,
             std::vector<std::pair<std::string, std::string>>& out);

}  // namespace cxr::report::detail
