#pragma once
/// `cxr serve`: an HTTP server with a JSON API and a web page around the one
/// inference path (infer::Predictor). docs/serve.md describes the API.
///
/// Threads: httplib's handler threads read and decode uploads (in memory,
/// never to disk) and wait; one worker thread owns the Predictors and runs
/// every model call, so LibTorch modules are never called concurrently.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cxr/data/image_io.h"

namespace cxr::serve {

struct ServeOptions {
  /// Run folders; a model's id is its folder name (repeats get -2, -3).
  std::vector<std::string> runs;
  std::string host = "127.0.0.1";
  int port = 8080;  ///< 0 = any free port (bind() returns it)
  /// Required when `host` is not a loopback address: requests to the API
  /// then need `Authorization: Bearer TOKEN` or `?token=TOKEN`.
  std::string token;
  int64_t max_body_bytes = 64 << 20;  ///< larger requests get 413
  data::DecodeLimits limits;          ///< larger images get 413
  /// Requests waiting for the model; when full, 503 with Retry-After.
  int queue_capacity = 16;
  /// Per request, from when its body has been read; then 504.
  double deadline_s = 30;
  int http_threads = 8;
  /// Stop after this many seconds (0 = run until SIGINT/SIGTERM/stop()).
  double exit_after_s = 0;
  std::string device = "cpu";
  int threads = 0;  ///< torch intra-op threads, 0 = the default
  /// Test hook: the worker calls it before each job (tests hold the worker
  /// in it to fill the queue). Empty in normal use.
  std::function<void()> before_job;
};

class Server {
 public:
  explicit Server(ServeOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// Checks the options, loads the runs (ModelError on a bad run), binds
  /// and returns the port. Throws ConfigError for a non-loopback host
  /// without a token, IoError naming host:port when it cannot listen.
  int bind();
  /// Serves until stop(), SIGINT/SIGTERM or exit_after_s (binds first if
  /// bind() was not called).
  void run();
  /// Asks run() to return; callable from any thread, before or during run().
  void stop();

  /// The model ids, in the order of ServeOptions::runs.
  std::vector<std::string> model_ids() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// True for 127.0.0.0/8, ::1 and localhost.
bool is_loopback(const std::string& host);

}  // namespace cxr::serve
