// Runtime, filesystem and progress helpers shared by every stage.
#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <cstdio>
#include <iomanip>
#include <iostream>
#include <limits>
#include <thread>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/common/progress.h"
#include "cxr/common/runtime.h"

namespace fs = std::filesystem;

namespace cxr {

torch::Device resolve_device(const std::string& name) {
  if (name == "auto") {
    return torch::cuda::is_available() ? torch::Device(torch::kCUDA)
                                       : torch::Device(torch::kCPU);
  }
  if (name == "cpu") return torch::Device(torch::kCPU);
  if (name.rfind("cuda", 0) == 0) {
    if (!torch::cuda::is_available()) {
      throw ConfigError("--device " + name +
                        ": no CUDA device is available in this build or "
                        "machine; use --device cpu or auto");
    }
    try {
      return torch::Device(name);
    } catch (const c10::Error&) {
      throw ConfigError("--device " + name +
                        ": not a device name; use auto, cpu, cuda or cuda:N");
    }
  }
  throw ConfigError("--device " + name +
                    ": unknown device; use auto, cpu, cuda or cuda:N");
}

int configure_threads(int threads) {
  if (threads <= 0) {
    threads = static_cast<int>(std::thread::hardware_concurrency());
    if (threads <= 0) threads = 1;
  }
  torch::set_num_threads(threads);
  return threads;
}

void configure_allocator() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
#endif
}

void seed_everything(uint64_t seed) {
  torch::manual_seed(seed);
  if (torch::cuda::is_available()) torch::cuda::manual_seed_all(seed);
}

void write_file_atomic(const fs::path& path,
                       const std::function<void(const fs::path&)>& writer) {
  if (path.has_parent_path()) ensure_dir(path.parent_path());
  fs::path tmp = path;
  tmp += ".tmp-" + std::to_string(::getpid());
  try {
    writer(tmp);
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw IoError("cannot write '" + path.string() + "': " + ec.message() +
                  " (check the folder exists and is writable)");
  }
}

void write_text_atomic(const fs::path& path, const std::string& text) {
  write_file_atomic(path, [&](const fs::path& tmp) {
    std::ofstream out(tmp, std::ios::binary);
    out << text;
    out.flush();
    if (!out) {
      throw IoError("cannot write '" + path.string() +
                    "' (disk full or folder not writable?)");
    }
  });
}

void write_json_atomic(const fs::path& path, const nlohmann::json& j) {
  write_text_atomic(path, j.dump(2) + "\n");
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw DataError("cannot read '" + path.string() +
                    "': no such file or not readable");
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

nlohmann::json read_json(const fs::path& path) {
  std::string text = read_text(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw DataError("'" + path.string() + "' is not valid JSON (" +
                    std::string(e.what()) + "); delete or restore it");
  }
}

void ensure_dir(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir)) {
    throw IoError("cannot create folder '" + dir.string() + "': " +
                  (ec ? ec.message() : std::string("exists as a file")));
  }
}

uint64_t fnv1a64(const void* data, size_t size, uint64_t seed) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = seed;
  for (size_t i = 0; i < size; ++i) {
    h ^= p[i];
    h *= 1099511628211ULL;
  }
  return h;
}

std::string format_duration(double s) {
  char buf[32];
  if (!std::isfinite(s) || s < 0) return "?";
  if (s < 60) {
    std::snprintf(buf, sizeof buf, "%.1fs", s);
  } else if (s < 3600) {
    std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s) / 60,
                  static_cast<int>(s) % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%dh%02dm", static_cast<int>(s) / 3600,
                  (static_cast<int>(s) % 3600) / 60);
  }
  return buf;
}

Progress::Progress(std::string label, long total, bool enabled)
    : label_(std::move(label)),
      total_(std::max(1L, total)),
      enabled_(enabled),
      tty_(::isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

Progress::~Progress() {
  if (!finished_ && enabled_ && tty_ && done_ > 0) std::cerr << "\n";
}

double Progress::elapsed_s() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                       start_)
      .count();
}

void Progress::step(long n, const std::string& status) {
  done_ = std::min(total_, done_ + n);
  if (!status.empty()) status_ = status;
  auto now = std::chrono::steady_clock::now();
  if (tty_ &&
      (now - last_draw_ > std::chrono::milliseconds(100) || done_ == total_)) {
    last_draw_ = now;
    draw(false);
  }
}

void Progress::finish(const std::string& status) {
  if (finished_) return;
  finished_ = true;
  if (!status.empty()) status_ = status;
  done_ = total_;
  draw(true);
}

void Progress::draw(bool final_line) {
  if (!enabled_) return;
  double el = elapsed_s();
  double frac = static_cast<double>(done_) / static_cast<double>(total_);
  double eta = done_ > 0 ? el * (1.0 - frac) / frac : NAN;
  const int width = 24;
  int filled = static_cast<int>(frac * width);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(width, '.');
  std::ostringstream line;
  line << label_ << " [" << bar << "] " << done_ << "/" << total_ << " "
       << format_duration(el);
  if (!final_line) line << " ETA " << format_duration(eta);
  if (!status_.empty()) line << "  " << status_;
  if (tty_) {
    std::cerr << "\r\033[K" << line.str();
    if (final_line) std::cerr << "\n";
  } else if (final_line) {
    std::cerr << line.str() << "\n";
  }
  std::cerr.flush();
}

}  // namespace cxr
