// Request parsing and limits: the token, the uploads (multipart or a raw
// body of an accepted type) and their decoding under DecodeLimits.
#include <algorithm>

#include "cxr/common/error.h"
#include "internal.h"

namespace cxr::serve {
namespace {

bool is_limit_error(const std::string& what) {
  // data::decode_gray's messages for images over DecodeLimits.
  return what.find("; the limit is ") != std::string::npos ||
         what.find("exceeds user limit") != std::string::npos;
}

std::vector<Upload> form_uploads(const httplib::Request& req) {
  std::vector<Upload> files;
  size_t k = 0;
  for (const auto& [key, part] : req.files) {
    if (key != "file") continue;
    ++k;
    files.push_back(
        {part.filename.empty() ? "file-" + std::to_string(k) : part.filename,
         part.content});
  }
  if (files.empty()) {
    throw HttpError{400,
                    "the form has no part named 'file'; send each image as "
                    "a 'file' part (curl -F file=@IMAGE)"};
  }
  return files;
}

}  // namespace

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower((unsigned char)c));
  return s;
}

bool flag_param(const httplib::Request& req, const std::string& key) {
  if (!req.has_param(key)) return false;
  const std::string v = lower(req.get_param_value(key));
  return v == "1" || v == "true" || v == "yes" || v.empty();
}

/// Compares without an early exit, so the time taken does not tell how
/// much of a guessed token was right.
bool same_secret(const std::string& a, const std::string& b) {
  const size_t n = std::max(a.size(), b.size());
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? a[i] : 0;
    const unsigned char y = i < b.size() ? b[i] : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

/// Error bodies are one line: messages from below (a c10::Error carries a
/// backtrace) and client-sent file names keep their first line only, with
/// control characters replaced.
std::string one_line(const std::string& s) {
  std::string out = s.substr(0, s.find('\n'));
  for (auto& c : out) {
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  }
  return out;
}

bool Server::Impl::authorised(const httplib::Request& req) const {
  if (o.token.empty()) return true;
  const std::string auth = req.get_header_value("Authorization");
  const std::string bearer = "Bearer ";
  if (auth.size() > bearer.size() &&
      auth.compare(0, bearer.size(), bearer) == 0 &&
      same_secret(auth.substr(bearer.size()), o.token)) {
    return true;
  }
  return req.has_param("token") &&
         same_secret(req.get_param_value("token"), o.token);
}

std::vector<Upload> uploads(const httplib::Request& req) {
  if (req.is_multipart_form_data()) return form_uploads(req);
  std::string type = req.get_header_value("Content-Type");
  type = lower(type.substr(0, type.find(';')));
  while (!type.empty() && type.back() == ' ') type.pop_back();
  static const std::vector<std::string> accepted = {
      "image/png", "image/jpeg", "image/bmp", "application/dicom",
      "application/octet-stream"};
  if (std::find(accepted.begin(), accepted.end(), type) == accepted.end()) {
    throw HttpError{
        415, "content type '" + type +
                 "' is not accepted; send the image with Content-Type "
                 "image/png, image/jpeg, image/bmp, application/dicom or "
                 "application/octet-stream, or as multipart/form-data"};
  }
  if (req.body.empty()) {
    throw HttpError{400,
                    "the request body is empty; POST the image's bytes "
                    "(curl --data-binary @IMAGE)"};
  }
  const std::string name =
      req.has_param("name") ? req.get_param_value("name") : "upload";
  return {{name.empty() ? "upload" : name, req.body}};
}

Decoded decode_uploads(const std::vector<Upload>& files,
                       const data::DecodeLimits& limits) {
  Decoded d;
  d.images.resize(files.size());
  d.errors.resize(files.size());
  for (size_t i = 0; i < files.size(); ++i) {
    try {
      const auto* p =
          reinterpret_cast<const unsigned char*>(files[i].bytes.data());
      d.images[i] = data::decode_gray(
          std::vector<unsigned char>(p, p + files[i].bytes.size()),
          files[i].name, limits);
      d.ok.push_back(i);
    } catch (const Error& e) {
      d.errors[i] = one_line(e.what());
      if (is_limit_error(d.errors[i])) d.fail_status = 413;
    } catch (const std::exception& e) {
      d.errors[i] = one_line("image '" + files[i].name + "': " + e.what());
    }
  }
  if (d.ok.empty()) {
    std::string msg = d.errors[0];
    if (files.size() > 1) msg = "no file could be read; first: " + msg;
    if (d.fail_status == 422) {
      msg +=
          " (send a PNG, JPEG, BMP or DICOM chest X-ray; the image is "
          "checked as cxr predict does)";
    }
    throw HttpError{d.fail_status, msg};
  }
  return d;
}

}  // namespace cxr::serve
