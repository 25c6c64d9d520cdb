// The server's lifecycle: checks its options, loads the runs, binds,
// serves until stopped (signals, stop(), --exit-after) and shuts the
// worker down. The rest: internal.h.
#include "cxr/serve/server.h"

#include <csignal>
#include <filesystem>

#include "cxr/common/error.h"
#include "cxr/common/runtime.h"
#include "internal.h"

namespace fs = std::filesystem;

namespace cxr::serve {
namespace {

// Set by the signal handler, read by run()'s watcher thread: httplib's
// stop() is not async-signal-safe, so the handler only raises a flag.
std::atomic<bool> g_signalled{false};
static_assert(std::atomic<bool>::is_always_lock_free);

extern "C" void on_signal(int) {
  g_signalled.store(true);
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

void check_options(const ServeOptions& o) {
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
}

/// The folder's name, with -2, -3, ... when another run has it already.
std::string unique_id(const std::string& dir,
                      const std::vector<Model>& models) {
  const std::string base = folder_name(dir);
  std::string id = base;
  for (int k = 2;; ++k) {
    bool taken = false;
    for (const auto& other : models) taken = taken || other.id == id;
    if (!taken) return id;
    id = base + "-" + std::to_string(k);
  }
}

}  // namespace

bool is_loopback(const std::string& host) {
  const std::string h = lower(host);
  return h == "localhost" || h == "::1" || h == "[::1]" ||
         h.rfind("127.", 0) == 0;
}

void Server::Impl::load() {
  check_options(o);
  const torch::Device device = resolve_device(o.device);
  if (o.threads > 0) configure_threads(o.threads);
  for (const auto& dir : o.runs) {
    Model m;
    m.dir = dir;
    m.id = unique_id(dir, models);
    m.predictor =
        std::make_unique<infer::Predictor>(infer::Predictor::load(dir, device));
    m.info = model_info(m);
    models.push_back(std::move(m));
  }
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
  // Responses go out as headers then body in two writes; with Nagle's
  // algorithm the body waits for the client's delayed ACK (~40 ms per
  // request, measured by bench_serve: one-client p50 77 -> 52 ms).
  d.http.set_tcp_nodelay(true);
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
