#pragma once
/// Text helpers shared by every stage that writes tables, CSV or HTML:
/// number formatting, CSV field quoting and HTML escaping (each was written
/// in up to six files before).
#include <string>

namespace cxr {

/// `v` with `digits` decimals ("0.125"); `nan_text` for NaN and infinities
/// (a metric that is undefined, e.g. sensitivity without positives).
std::string fixed(double v, int digits = 3, const char* nan_text = "n/a");

/// `v` in the shortest form a stream gives ("0.5", "1e-05"): axis labels,
/// messages.
std::string shortest(double v);

/// A CSV field (RFC 4180): quoted, with doubled quotes, when it holds a
/// comma, a quote or a line break; unchanged otherwise.
std::string csv_field(const std::string& s);

/// Text safe inside HTML elements and double- or single-quoted attributes.
std::string html_escape(const std::string& s);

}  // namespace cxr
