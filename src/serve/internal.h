#pragma once
// Shared by the server's files (not installed): the server's state and the
// pieces each file provides.
//   server.cpp   lifecycle: options, loading the runs, bind, run, stop
//   routes.cpp   the HTTP routes and httplib's own errors, as JSON
//   request.cpp  request parsing and limits: token, uploads, decoding
//   queue.cpp    the worker thread and its bounded queue with deadlines
//   encode.cpp   JSON encoding: model info, predictions, PNG data URLs
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "cxr/data/image_io.h"
#include "cxr/infer/predictor.h"
#include "cxr/serve/server.h"

namespace cxr::serve {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

/// An HTTP error: the handler answers `status` with {"error": message}.
struct HttpError {
  int status;
  std::string message;
};

/// One uploaded file: its name (from the form or ?name=) and bytes.
struct Upload {
  std::string name;
  std::string bytes;
};

/// The uploads decoded in the handler's thread (so the worker only runs
/// models): an image or a one-line error per file.
struct Decoded {
  std::vector<data::GrayImage> images;
  std::vector<std::string> errors;
  std::vector<size_t> ok;  ///< indexes of the files that decoded
  int fail_status = 422;   ///< 413 when an image was over the limits
};

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

// request.cpp
std::string lower(std::string s);
/// ?key, ?key=1|true|yes (any case).
bool flag_param(const httplib::Request& req, const std::string& key);
/// Compares without an early exit (timing tells nothing of a guessed token).
bool same_secret(const std::string& a, const std::string& b);
/// Error bodies are one line: the first line, control characters replaced.
std::string one_line(const std::string& s);
/// The multipart 'file' parts, or the raw body with an accepted type.
std::vector<Upload> uploads(const httplib::Request& req);
Decoded decode_uploads(const std::vector<Upload>& files,
                       const data::DecodeLimits& limits);

// encode.cpp
std::string png_data_url(const torch::Tensor& image);
/// The decoded image for display (longest side <= 1024) as a PNG data URL.
std::string preview_of(const data::GrayImage& image);
/// GET /api/v1/models' entry of a loaded run.
json model_info(const Model& m);
/// One result of POST /api/v1/predict.
json prediction_json(const Upload& file,
                     const data::GrayImage& image,
                     const infer::Prediction& p,
                     double threshold,
                     bool maps,
                     bool preview);

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

  // server.cpp
  void load();
  // routes.cpp
  void routes();
  void api_routes();
  void asset_routes();
  void method_routes();
  void error_handlers();
  void answer(httplib::Response& res, int status, const json& body) const;
  json predict(const httplib::Request& req, Clock::time_point start);
  size_t model_index(const httplib::Request& req) const;
  // request.cpp
  bool authorised(const httplib::Request& req) const;
  // queue.cpp
  void work();
  std::shared_ptr<Job> submit(std::shared_ptr<Job> job);
  void take_out(const std::shared_ptr<Job>& job);
};

}  // namespace cxr::serve
