#include "cxr/serve/server.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <deque>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "assets.h"
#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/common/runtime.h"
#include "cxr/infer/predictor.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace cxr::serve {
namespace {

// Set by the signal handler, read by run()'s watcher thread: httplib's
// stop() is not async-signal-safe, so the handler only raises a flag.
std::atomic<bool> g_signalled{false};
static_assert(std::atomic<bool>::is_always_lock_free);

extern "C" void on_signal(int) {
  g_signalled.store(true);
}

/// An HTTP error: the handler answers `status` with {"error": message}.
struct HttpError {
  int status;
  std::string message;
};

std::string base64(const std::vector<unsigned char>& in) {
  static const char* k =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = (uint32_t(in[i]) << 16) | (uint32_t(in[i + 1]) << 8) |
                       uint32_t(in[i + 2]);
    out += k[(v >> 18) & 63];
    out += k[(v >> 12) & 63];
    out += k[(v >> 6) & 63];
    out += k[v & 63];
  }
  if (i < in.size()) {
    uint32_t v = uint32_t(in[i]) << 16;
    if (i + 1 < in.size()) v |= uint32_t(in[i + 1]) << 8;
    out += k[(v >> 18) & 63];
    out += k[(v >> 12) & 63];
    out += i + 1 < in.size() ? k[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string png_data_url(const torch::Tensor& image) {
  return "data:image/png;base64," + base64(data::encode_png(image));
}

/// The decoded image for display: longest side <= 1024 (area averaging), as
/// a gray PNG, so a browser can show any upload, DICOM included.
std::string preview_of(const data::GrayImage& image) {
  torch::Tensor px = image.pixels;
  const int64_t h = px.size(0), w = px.size(1), side = std::max(h, w);
  constexpr int64_t kMax = 1024;
  if (side > kMax) {
    const int64_t nh = std::max<int64_t>(1, h * kMax / side);
    const int64_t nw = std::max<int64_t>(1, w * kMax / side);
    namespace F = torch::nn::functional;
    px = F::interpolate(px.unsqueeze(0).unsqueeze(0),
                        F::InterpolateFuncOptions()
                            .size(std::vector<int64_t>{nh, nw})
                            .mode(torch::kArea))
             .squeeze(0)
             .squeeze(0);
  }
  return png_data_url(px.clamp(0, 1));
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

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower((unsigned char)c));
  return s;
}

bool flag_param(const httplib::Request& req, const std::string& key) {
  if (!req.has_param(key)) return false;
  const std::string v = lower(req.get_param_value(key));
  return v == "1" || v == "true" || v == "yes" || v.empty();
}

json number_or_null(double v) {
  return std::isfinite(v) ? json(v) : json(nullptr);
}

/// Test sensitivity/specificity of the run (eval-test/metrics.json), only
/// when they were measured at the threshold the server decides with;
/// otherwise null, since numbers at another threshold would mislead.
json test_metrics(const std::string& dir, double raw_threshold) {
  const fs::path p = fs::path(dir) / "eval-test" / "metrics.json";
  std::error_code ec;
  if (!fs::exists(p, ec)) return nullptr;
  try {
    const json m = read_json(p);
    if (!m.contains("threshold") || !m["threshold"].is_number() ||
        std::abs(m["threshold"].get<double>() - raw_threshold) > 1e-9) {
      return nullptr;
    }
    return {{"sensitivity", m.at("recall").at("value")},
            {"specificity", m.at("specificity").at("value")},
            {"n", m.at("n")}};
  } catch (const std::exception&) {
    return nullptr;
  }
}

/// A model's id: its folder's name (a trailing slash ignored).
std::string folder_name(const std::string& dir) {
  fs::path p = fs::path(dir).lexically_normal();
  std::string name = p.filename().string();
  if (name.empty()) name = p.parent_path().filename().string();
  if (name.empty() || name == "." || name == "..") {
    name = fs::absolute(p).lexically_normal().filename().string();
  }
  return name.empty() ? "model" : name;
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

bool is_limit_error(const std::string& what) {
  // data::decode_gray's messages for images over DecodeLimits.
  return what.find("; the limit is ") != std::string::npos ||
         what.find("exceeds user limit") != std::string::npos;
}

struct Upload {
  std::string name;
  std::string bytes;
};

}  // namespace

bool is_loopback(const std::string& host) {
  const std::string h = lower(host);
  return h == "localhost" || h == "::1" || h == "[::1]" ||
         h.rfind("127.", 0) == 0;
}

struct Model {
  std::string id, dir;
  std::unique_ptr<infer::Predictor> predictor;
  json info;
};

struct Job {
  size_t model = 0;
  std::vector<data::GrayImage> images;
  bool maps = false;
  Clock::time_point deadline;
  enum State { kQueued, kRunning, kDone, kExpired, kFailed } state = kQueued;
  std::vector<infer::Prediction> out;
  std::string error;
};

struct Server::Impl {
  ServeOptions o;
  std::vector<Model> models;
  httplib::Server http;
  bool bound = false;
  int port = 0;

  std::mutex mu;
  std::condition_variable work_cv, done_cv;
  std::deque<std::shared_ptr<Job>> queue;
  bool worker_stop = false;
  std::thread worker;

  std::atomic<bool> stop_requested{false};

  void load();
  void routes();
  void work();
  void answer(httplib::Response& res, int status, const json& body) const;
  bool authorised(const httplib::Request& req) const;
  json predict(const httplib::Request& req, Clock::time_point start);
  std::vector<Upload> uploads(const httplib::Request& req) const;
  std::shared_ptr<Job> submit(std::shared_ptr<Job> job);
};

void Server::Impl::answer(httplib::Response& res,
                          int status,
                          const json& body) const {
  res.status = status;
  res.set_header("Cache-Control", "no-store");
  res.set_content(body.dump(), "application/json");
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

void Server::Impl::load() {
  if (o.runs.empty()) throw ConfigError("give at least one run folder");
  if (o.queue_capacity < 1) throw ConfigError("--queue must be >= 1");
  if (!(o.deadline_s > 0)) throw ConfigError("--deadline must be > 0 seconds");
  if (!(o.exit_after_s >= 0)) throw ConfigError("--exit-after must be >= 0");
  if (o.max_body_bytes < 1) throw ConfigError("--max-body-mb must be > 0");
  if (o.http_threads < 1) throw ConfigError("http_threads must be >= 1");
  if (o.port < 0 || o.port > 65535) {
    throw ConfigError("--port must be in 0..65535 (0 = any free port)");
  }
  if (!is_loopback(o.host) && o.token.empty()) {
    throw ConfigError("binding to " + o.host +
                      " exposes the model to the network; pass --token");
  }
  const torch::Device device = resolve_device(o.device);
  if (o.threads > 0) configure_threads(o.threads);
  for (const auto& dir : o.runs) {
    Model m;
    m.dir = dir;
    const std::string base = folder_name(dir);
    m.id = base;
    for (int k = 2;; ++k) {
      bool taken = false;
      for (const auto& other : models) taken = taken || other.id == m.id;
      if (!taken) break;
      m.id = base + "-" + std::to_string(k);
    }
    m.predictor =
        std::make_unique<infer::Predictor>(infer::Predictor::load(dir, device));
    const auto& cfg = m.predictor->config();
    json card = nullptr;
    const fs::path card_path = fs::path(dir) / "model-card.md";
    std::error_code ec;
    if (fs::exists(card_path, ec)) {
      try {
        card = read_text(card_path);
      } catch (const std::exception&) {
        card = nullptr;
      }
    }
    m.info = {{"id", m.id},
              {"arch", cfg.model.arch},
              {"input_size", cfg.model.input_size},
              {"threshold", m.predictor->calibrated_threshold()},
              {"threshold_raw", m.predictor->threshold()},
              {"threshold_rule", cfg.threshold_rule},
              {"calibrated", cfg.calibration.method != "none"},
              {"has_detector", m.predictor->has_detector()},
              {"positive", cfg.positive},
              {"negative", cfg.negative},
              {"test", test_metrics(dir, m.predictor->threshold())},
              {"card", card}};
    models.push_back(std::move(m));
  }
}

void Server::Impl::work() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu);
      work_cv.wait(lock, [&] { return worker_stop || !queue.empty(); });
      if (worker_stop) return;
      job = queue.front();
      queue.pop_front();
      if (Clock::now() > job->deadline) {
        job->state = Job::kExpired;
        done_cv.notify_all();
        continue;
      }
      job->state = Job::kRunning;
    }
    if (o.before_job) o.before_job();
    std::vector<infer::Prediction> out;
    std::string error;
    try {
      infer::PredictOptions po;
      po.maps = job->maps;
      out = models[job->model].predictor->predict(job->images, po);
    } catch (const c10::Error& e) {
      error = e.what_without_backtrace();
    } catch (const std::exception& e) {
      error = e.what();
    } catch (...) {
      error = "unknown error";
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      job->out = std::move(out);
      job->error = std::move(error);
      job->state = job->error.empty() ? Job::kDone : Job::kFailed;
    }
    done_cv.notify_all();
  }
}

std::shared_ptr<Job> Server::Impl::submit(std::shared_ptr<Job> job) {
  std::unique_lock<std::mutex> lock(mu);
  if (worker_stop) {
    throw HttpError{503, "the server is shutting down; retry on another"};
  }
  if (static_cast<int>(queue.size()) >= o.queue_capacity) {
    throw HttpError{503, "the model's queue is full (" +
                             std::to_string(o.queue_capacity) +
                             " requests waiting); retry in a second or "
                             "start the server with a larger --queue"};
  }
  queue.push_back(job);
  work_cv.notify_one();
  const bool finished = done_cv.wait_until(lock, job->deadline, [&] {
    return job->state == Job::kDone || job->state == Job::kFailed ||
           job->state == Job::kExpired || worker_stop;
  });
  const std::string late =
      "the model did not answer within the deadline of " +
      json(o.deadline_s).dump() +
      " s (server flag --deadline); retry later or send fewer files";
  if (!finished || job->state == Job::kExpired) {
    // Still queued: take it out so the worker does not spend time on an
    // answer nobody waits for. A running job finishes and is dropped.
    for (auto it = queue.begin(); it != queue.end(); ++it) {
      if (*it == job) {
        queue.erase(it);
        break;
      }
    }
    throw HttpError{504, late};
  }
  if (job->state == Job::kFailed) {
    throw HttpError{500, "the model failed on this request: " + job->error};
  }
  if (job->state != Job::kDone) {
    throw HttpError{503, "the server is shutting down; retry on another"};
  }
  return job;
}

std::vector<Upload> Server::Impl::uploads(const httplib::Request& req) const {
  std::vector<Upload> files;
  if (req.is_multipart_form_data()) {
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
  files.push_back({name.empty() ? "upload" : name, req.body});
  return files;
}

json Server::Impl::predict(const httplib::Request& req,
                           Clock::time_point start) {
  size_t mi = 0;
  if (req.has_param("model")) {
    const std::string id = req.get_param_value("model");
    std::string ids;
    bool found = false;
    for (size_t i = 0; i < models.size(); ++i) {
      ids += (i ? ", " : "") + models[i].id;
      if (models[i].id == id) {
        mi = i;
        found = true;
      }
    }
    if (!found) {
      throw HttpError{404, "unknown model '" + id + "'; use one of: " + ids +
                               " (GET /api/v1/models)"};
    }
  }
  const bool maps = flag_param(req, "maps");
  const bool preview = flag_param(req, "preview");
  const std::vector<Upload> files = uploads(req);

  // Decode here, in the handler's thread, so the worker only runs models.
  std::vector<data::GrayImage> images(files.size());
  std::vector<std::string> errors(files.size());
  std::vector<size_t> ok;
  int fail_status = 422;
  for (size_t i = 0; i < files.size(); ++i) {
    try {
      const auto* p =
          reinterpret_cast<const unsigned char*>(files[i].bytes.data());
      images[i] = data::decode_gray(
          std::vector<unsigned char>(p, p + files[i].bytes.size()),
          files[i].name, o.limits);
      ok.push_back(i);
    } catch (const Error& e) {
      errors[i] = one_line(e.what());
      if (is_limit_error(errors[i])) fail_status = 413;
    } catch (const std::exception& e) {
      errors[i] = one_line("image '" + files[i].name + "': " + e.what());
    }
  }
  if (ok.empty()) {
    std::string msg = errors[0];
    if (files.size() > 1) msg = "no file could be read; first: " + msg;
    if (fail_status == 422) {
      msg +=
          " (send a PNG, JPEG, BMP or DICOM chest X-ray; the image is "
          "checked as cxr predict does)";
    }
    throw HttpError{fail_status, msg};
  }

  auto job = std::make_shared<Job>();
  job->model = mi;
  job->maps = maps;
  job->deadline = start + std::chrono::duration_cast<Clock::duration>(
                              std::chrono::duration<double>(o.deadline_s));
  for (size_t i : ok) job->images.push_back(images[i]);
  if (Clock::now() > job->deadline) {
    throw HttpError{504,
                    "decoding the upload took longer than the deadline "
                    "of " +
                        json(o.deadline_s).dump() +
                        " s (server flag --deadline); send fewer or "
                        "smaller files"};
  }
  job = submit(job);

  const Model& m = models[mi];
  const double threshold = m.predictor->calibrated_threshold();
  json results = json::array();
  size_t k = 0;
  for (size_t i = 0; i < files.size(); ++i) {
    json r = {{"name", files[i].name}};
    if (!errors[i].empty()) {
      r["error"] = errors[i];
      results.push_back(r);
      continue;
    }
    const infer::Prediction& p = job->out[k++];
    const data::GrayImage& img = images[i];
    r["p"] = p.p;
    r["p_raw"] = p.p_raw;
    r["logit"] = p.logit;
    r["positive"] = p.positive;
    r["decision"] = p.decision;
    r["threshold"] = threshold;
    r["in_distribution"] = p.in_distribution;
    r["ood_score"] = number_or_null(p.ood_score);
    r["reasons"] = p.reasons;
    r["width"] = img.info.width;
    r["height"] = img.info.height;
    r["format"] = img.info.format;
    if (preview) r["preview"] = preview_of(img);
    if (maps && p.positive_map.defined()) {
      r["maps"] = {{"positive", png_data_url(p.positive_map.clamp(0, 1))},
                   {"negative", png_data_url(p.negative_map.clamp(0, 1))},
                   {"encoding", "gray"}};
    }
    results.push_back(r);
  }
  return {{"model", m.id}, {"results", results}};
}

void Server::Impl::routes() {
  auto guard = [this](auto body) {
    return [this, body](const httplib::Request& req, httplib::Response& res) {
      try {
        body(req, res);
      } catch (const HttpError& e) {
        if (e.status == 503) res.set_header("Retry-After", "1");
        answer(res, e.status, {{"error", one_line(e.message)}});
      } catch (const std::exception& e) {
        answer(res, 500,
               {{"error", one_line(std::string("internal error: ") + e.what()) +
                              "; please report it"}});
      } catch (...) {
        answer(res, 500, {{"error", "internal error; please report it"}});
      }
    };
  };
  // The token guards the API but health (for monitors) and the page's own
  // files (they hold no data; the page sends the token it was opened with).
  // Checked before httplib reads a request's body, so a caller without
  // the token cannot make the server read large uploads.
  http.set_pre_routing_handler(
      [this](const httplib::Request& req, httplib::Response& res) {
        if (req.path.rfind("/api/", 0) != 0 || req.path == "/api/v1/health" ||
            authorised(req)) {
          return httplib::Server::HandlerResponse::Unhandled;
        }
        // The unread body would be taken for the next request on this
        // connection.
        res.set_header("Connection", "close");
        answer(res, 401,
               {{"error",
                 "this server needs its token: send 'Authorization: Bearer "
                 "TOKEN' or add ?token=TOKEN to the URL"}});
        return httplib::Server::HandlerResponse::Handled;
      });

  http.Get("/api/v1/health",
           guard([this](const httplib::Request&, httplib::Response& res) {
             size_t waiting;
             {
               std::lock_guard<std::mutex> lock(mu);
               waiting = queue.size();
             }
             answer(res, 200,
                    {{"status", "ok"},
                     {"models", models.size()},
                     {"queue",
                      {{"waiting", waiting}, {"capacity", o.queue_capacity}}}});
           }));
  http.Get("/api/v1/models",
           guard([this](const httplib::Request&, httplib::Response& res) {
             json list = json::array();
             for (const auto& m : models) list.push_back(m.info);
             answer(res, 200, {{"models", list}});
           }));
  http.Post("/api/v1/predict",
            guard([this](const httplib::Request& req, httplib::Response& res) {
              const auto start = Clock::now();
              answer(res, 200, predict(req, start));
            }));
  for (size_t i = 0; i < kWebAssetCount; ++i) {
    const WebAsset& a = kWebAssets[i];
    auto serve_asset = [a](const httplib::Request&, httplib::Response& res) {
      res.set_header("Cache-Control", "no-cache");
      res.set_header("X-Content-Type-Options", "nosniff");
      res.set_content(reinterpret_cast<const char*>(a.data), a.size, a.mime);
    };
    http.Get(a.path, serve_asset);
    if (std::string(a.path) == "/index.html") http.Get("/", serve_asset);
  }

  // The other methods on known paths: 405 with the one that works.
  auto wrong = [this](const std::string& allow) {
    return [this, allow](const httplib::Request& req, httplib::Response& res) {
      res.set_header("Allow", allow);
      answer(res, 405,
             {{"error", req.method + " " + req.path +
                            " is not supported; use " + allow}});
    };
  };
  std::vector<std::pair<std::string, std::string>> known = {
      {"/api/v1/health", "GET"},
      {"/api/v1/models", "GET"},
      {"/api/v1/predict", "POST"},
      {"/", "GET"}};
  for (size_t i = 0; i < kWebAssetCount; ++i) {
    known.emplace_back(kWebAssets[i].path, "GET");
  }
  for (const auto& [path, allow] : known) {
    if (allow != "POST") http.Post(path, wrong(allow));
    if (allow != "GET") http.Get(path, wrong(allow));
    http.Put(path, wrong(allow));
    http.Patch(path, wrong(allow));
    http.Delete(path, wrong(allow));
  }

  // Everything httplib answers itself (404, 413, 400 on a malformed request)
  // gets the same JSON error body as the handlers' errors.
  http.set_error_handler([this](const httplib::Request& req,
                                httplib::Response& res) {
    if (!res.body.empty()) return;
    const int status = res.status;
    std::string msg;
    if (status == 404) {
      msg = "no such path: " + req.path +
            "; the API is under /api/v1 (health, models, predict) and the "
            "page is at /";
    } else if (status == 413) {
      msg = "the request body is larger than the server's limit of " +
            std::to_string(o.max_body_bytes) +
            " bytes (server flag --max-body-mb); send fewer or smaller files";
    } else if (status == 400) {
      msg = "malformed request to " + req.path +
            "; send the image as the body or as multipart/form-data 'file' "
            "parts";
    } else {
      msg = "request to " + req.path + " failed with HTTP " +
            std::to_string(status);
    }
    answer(res, status, {{"error", one_line(msg)}});
  });
  http.set_exception_handler([this](const httplib::Request&,
                                    httplib::Response& res,
                                    std::exception_ptr ep) {
    std::string what = "unknown error";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    answer(res, 500,
           {{"error",
             one_line("internal error: " + what) + "; please report it"}});
  });
}

Server::Server(ServeOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->o = std::move(options);
}

Server::~Server() {
  stop();
  auto& d = *impl_;
  {
    std::lock_guard<std::mutex> lock(d.mu);
    d.worker_stop = true;
  }
  d.work_cv.notify_all();
  d.done_cv.notify_all();
  if (d.worker.joinable()) d.worker.join();
}

int Server::bind() {
  auto& d = *impl_;
  if (d.bound) return d.port;
  d.load();
  d.routes();
  d.http.set_payload_max_length(static_cast<size_t>(d.o.max_body_bytes));
  // httplib's default sets SO_REUSEPORT, which lets a second server bind a
  // port that is in use and silently share its connections; SO_REUSEADDR
  // alone still allows a restart while old connections linger.
  d.http.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  const int n = d.o.http_threads;
  d.http.new_task_queue = [n] { return new httplib::ThreadPool(n); };
  // No access log: request paths carry file names (possibly patient data).
  const std::string where = d.o.host + ":" + std::to_string(d.o.port);
  if (d.o.port == 0) {
    d.port = d.http.bind_to_any_port(d.o.host);
    if (d.port < 0) d.port = 0;
  } else {
    d.port = d.http.bind_to_port(d.o.host, d.o.port) ? d.o.port : 0;
  }
  if (d.port <= 0) {
    throw IoError("cannot listen on " + where +
                  ": the port is in use or the address is not on this "
                  "machine; choose another --port (0 = any free port) or "
                  "--host");
  }
  d.bound = true;
  return d.port;
}

void Server::run() {
  auto& d = *impl_;
  bind();
  {
    std::lock_guard<std::mutex> lock(d.mu);
    d.worker_stop = false;
  }
  if (!d.worker.joinable()) d.worker = std::thread([&d] { d.work(); });
  g_signalled.store(false);
  auto old_int = std::signal(SIGINT, on_signal);
  auto old_term = std::signal(SIGTERM, on_signal);
  std::atomic<bool> listening_done{false};
  // Stops httplib from outside its handlers and outside the signal handler.
  // httplib's stop() only takes effect once listen has started, so it is
  // called (again) until listen returns.
  std::thread watcher([&] {
    const auto start = Clock::now();
    while (!listening_done.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      const double up =
          std::chrono::duration<double>(Clock::now() - start).count();
      const bool expired = d.o.exit_after_s > 0 && up >= d.o.exit_after_s;
      if ((d.stop_requested.load() || g_signalled.load() || expired) &&
          d.http.is_running()) {
        d.http.stop();
      }
    }
  });
  d.http.listen_after_bind();
  listening_done.store(true);
  watcher.join();
  std::signal(SIGINT, old_int == SIG_ERR ? SIG_DFL : old_int);
  std::signal(SIGTERM, old_term == SIG_ERR ? SIG_DFL : old_term);
  {
    std::lock_guard<std::mutex> lock(d.mu);
    d.worker_stop = true;
  }
  d.work_cv.notify_all();
  d.done_cv.notify_all();
  d.worker.join();
}

void Server::stop() {
  impl_->stop_requested.store(true);
}

std::vector<std::string> Server::model_ids() const {
  std::vector<std::string> ids;
  for (const auto& m : impl_->models) ids.push_back(m.id);
  return ids;
}

}  // namespace cxr::serve
