// Load test of `cxr serve`: the server runs in this process on 127.0.0.1
// (any free port) with one trained run, and httplib clients POST one real
// chest X-ray (multipart, as the page sends it) for a fixed time.
//   - 8 concurrent clients, without and with ?maps=1 (both Grad-CAM maps):
//     requests, failed, p50_ms, p99_ms, req_per_s
//   - one client, one request at a time: p50_ms of one image without and
//     with both maps (the goal: p50 < 100 ms for MobileNetV2 on 2
//     cores, with maps)
// A failed request (transport error or any status but 200) is counted in
// `failed` and its first error printed; 0 is the expectation.
//   CXR_BENCH_RUN=study/mobilenetv2-refit build/bench/bench_serve
//   CXR_BENCH_SECONDS=30 (per benchmark; default 30)
//   CXR_BENCH_IMAGE=path (default: the first COVID test image of
//   ../shared/data/cxr-seed)
// Without CXR_BENCH_RUN it says so and exits.
#include <benchmark/benchmark.h>
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "bench_main.h"
#include "cxr/serve/server.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string env(const char* name, const std::string& fallback = "") {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

double seconds_per_benchmark() {
  const double s = std::atof(env("CXR_BENCH_SECONDS", "30").c_str());
  return s > 0 ? s : 30;
}

/// The image every client sends.
struct Upload {
  std::string name;
  std::string bytes;
};
Upload& upload() {
  static Upload u;
  return u;
}

int& port() {
  static int p = 0;
  return p;
}

std::string default_image() {
  const fs::path dir = fs::path(CXR_SHARED_DIR) / "data/cxr-seed/test/COVID";
  std::vector<fs::path> pngs;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().extension() == ".png") pngs.push_back(e.path());
  }
  std::sort(pngs.begin(), pngs.end());
  return pngs.empty() ? "" : pngs.front().string();
}

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t i = static_cast<size_t>(q * static_cast<double>(v.size() - 1));
  return v[i];
}

/// `clients` threads POST the image back to back until the time is up.
void load(benchmark::State& state, int clients, bool maps) {
  const double seconds = seconds_per_benchmark();
  const std::string path =
      std::string("/api/v1/predict") + (maps ? "?maps=1" : "");
  std::vector<double> latencies_ms;
  std::atomic<int64_t> failed{0};
  std::string first_error;
  std::mutex mu;
  double elapsed = 0;
  for (auto _ : state) {
    const auto start = Clock::now();
    const auto stop = start + std::chrono::duration<double>(seconds);
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) {
      threads.emplace_back([&] {
        httplib::Client cli("127.0.0.1", port());
        cli.set_keep_alive(true);
        // As browsers do: without it Nagle's algorithm holds the body of a
        // request written after its headers until the server's delayed ACK.
        cli.set_tcp_nodelay(true);
        cli.set_read_timeout(120, 0);
        const httplib::MultipartFormDataItems items = {
            {"file", upload().bytes, upload().name, "image/png"}};
        std::vector<double> mine;
        while (Clock::now() < stop) {
          const auto t0 = Clock::now();
          const auto res = cli.Post(path.c_str(), items);
          const double ms =
              std::chrono::duration<double, std::milli>(Clock::now() - t0)
                  .count();
          std::string error;
          if (!res) {
            error = "transport: " + httplib::to_string(res.error());
          } else if (res->status != 200) {
            error = "HTTP " + std::to_string(res->status) + ": " + res->body;
          } else if (res->body.find("\"error\"") != std::string::npos) {
            error = "per-file error: " + res->body.substr(0, 300);
          } else if (maps && res->body.find("\"maps\"") == std::string::npos) {
            error = "no maps in the answer to ?maps=1";
          }
          if (!error.empty()) {
            ++failed;
            std::lock_guard<std::mutex> lock(mu);
            if (first_error.empty()) first_error = error;
            continue;
          }
          mine.push_back(ms);
        }
        std::lock_guard<std::mutex> lock(mu);
        latencies_ms.insert(latencies_ms.end(), mine.begin(), mine.end());
      });
    }
    for (auto& t : threads) t.join();
    elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    state.SetIterationTime(elapsed);
  }
  if (!first_error.empty()) {
    std::fprintf(stderr, "bench_serve: %lld failed requests; first: %s\n",
                 static_cast<long long>(failed.load()), first_error.c_str());
  }
  const double ok = static_cast<double>(latencies_ms.size());
  state.counters["requests"] = ok + static_cast<double>(failed.load());
  state.counters["failed"] = static_cast<double>(failed.load());
  state.counters["p50_ms"] = quantile(latencies_ms, 0.50);
  state.counters["p99_ms"] = quantile(latencies_ms, 0.99);
  state.counters["req_per_s"] = elapsed > 0 ? ok / elapsed : 0;
}

void BM_Serve8Clients(benchmark::State& state) {
  load(state, 8, false);
}
void BM_Serve8ClientsMaps(benchmark::State& state) {
  load(state, 8, true);
}
void BM_Serve1Client(benchmark::State& state) {
  load(state, 1, false);
}
void BM_Serve1ClientMaps(benchmark::State& state) {
  load(state, 1, true);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string run = env("CXR_BENCH_RUN");
  if (run.empty()) {
    std::printf(
        "bench_serve: set CXR_BENCH_RUN to a trained run folder (e.g. "
        "study/mobilenetv2-refit); nothing to measure\n");
    return 0;
  }
  const std::string image = env("CXR_BENCH_IMAGE", default_image());
  std::ifstream in(image, std::ios::binary);
  if (image.empty() || !in) {
    std::fprintf(stderr,
                 "bench_serve: no image to send (set CXR_BENCH_IMAGE or put "
                 "cxr-seed in ../shared/data)\n");
    return 1;
  }
  std::stringstream bytes;
  bytes << in.rdbuf();
  upload() = {fs::path(image).filename().string(), bytes.str()};

  // The runtime as run_benchmarks sets it, before the server's worker
  // thread starts (it inherits the intra-op thread count).
  if (!std::getenv("CXR_BENCH_DEFAULT_MALLOC")) cxr::configure_allocator();
  int threads = 0;
  if (const char* t = std::getenv("CXR_BENCH_THREADS")) threads = std::atoi(t);
  if (threads > 0 || !std::getenv("OMP_NUM_THREADS")) {
    cxr::configure_threads(threads);
  }

  cxr::serve::ServeOptions o;
  o.runs = {run};
  o.threads = threads;
  o.host = "127.0.0.1";
  o.port = 0;
  auto server = std::make_unique<cxr::serve::Server>(o);
  port() = server->bind();
  std::thread serving([&] { server->run(); });
  std::printf("bench_serve: %s on port %d, image %s (%zu bytes), %.0f s each\n",
              run.c_str(), port(), image.c_str(), upload().bytes.size(),
              seconds_per_benchmark());

  for (auto* b :
       {benchmark::RegisterBenchmark("BM_Serve8Clients", BM_Serve8Clients),
        benchmark::RegisterBenchmark("BM_Serve8ClientsMaps",
                                     BM_Serve8ClientsMaps),
        benchmark::RegisterBenchmark("BM_Serve1Client", BM_Serve1Client),
        benchmark::RegisterBenchmark("BM_Serve1ClientMaps",
                                     BM_Serve1ClientMaps)}) {
    b->Iterations(1)->UseManualTime()->Unit(benchmark::kSecond);
  }
  const int rc = cxr::bench::run_benchmarks(argc, argv);
  server->stop();
  serving.join();
  return rc;
}
