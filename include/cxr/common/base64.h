#pragma once
/// Base64 (RFC 4648, with padding) for data: URIs of embedded images: the
/// HTML report and the serve page both embed PNGs this way.
#include <string>
#include <string_view>
#include <vector>

namespace cxr {

/// `bytes` as base64 text ("TWFu" for "Man"; "TQ==" for "M").
std::string base64(std::string_view bytes);
std::string base64(const std::vector<unsigned char>& bytes);

}  // namespace cxr
