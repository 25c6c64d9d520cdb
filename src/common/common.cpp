// Runtime, filesystem and progress helpers shared by every stage.
#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
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

namespace {

/// How an output path is written (see write_file_atomic in fs.h).
enum class WriteMode { kAtomic, kThrough };

/// Decides how to write `path` and returns the path to write (a symlink's
/// target). Throws IoError for a directory or another special file.
std::pair<WriteMode, fs::path> write_plan(const fs::path& path) {
  // /dev/stdout, /dev/fd/N and /proc/self/fd/N are links to whatever the
  // descriptor is, often a regular file (`cxr ... > log`): resolving them and
  // renaming onto the target would replace the shell's log file. Write
  // through them as the shell's `> /dev/stdout` does.
  const std::string lexical = path.lexically_normal().string();
  if (lexical.rfind("/dev/", 0) == 0 || lexical.rfind("/proc/", 0) == 0) {
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
      throw IoError("'" + path.string() + "' is a directory; give a file path");
    }
    return {WriteMode::kThrough, path};
  }
  // Any other symlink is followed: its target is what gets written (a rename
  // onto the link would replace the link by a regular file).
  fs::path target = path;
  std::error_code ec;
  if (fs::is_symlink(fs::symlink_status(path, ec))) {
    target = fs::weakly_canonical(path, ec);
    if (ec) {
      throw IoError("cannot resolve the symlink '" + path.string() +
                    "': " + ec.message());
    }
  }
  const fs::file_status st = fs::status(target, ec);
  if (fs::is_directory(st)) {
    throw IoError("'" + path.string() + "' is a directory; give a file path");
  }
  // Devices and pipes (/dev/null, a FIFO) cannot be renamed onto.
  if (fs::is_character_file(st) || fs::is_fifo(st) || fs::is_socket(st)) {
    return {WriteMode::kThrough, target};
  }
  if (fs::exists(st) && !fs::is_regular_file(st)) {
    throw IoError("'" + path.string() +
                  "' exists and is not a regular file; give a file path");
  }
  return {WriteMode::kAtomic, target};
}

}  // namespace

void write_file_atomic(const fs::path& path,
                       const std::function<void(const fs::path&)>& writer) {
  const auto [mode, target] = write_plan(path);
  if (mode == WriteMode::kThrough) {
    writer(target);
    return;
  }
  if (target.has_parent_path()) ensure_dir(target.parent_path());
  fs::path tmp = target;
  tmp += ".tmp-" + std::to_string(::getpid());
  std::error_code ec;
  try {
    writer(tmp);
  } catch (...) {
    fs::remove(tmp, ec);
    throw;
  }
  fs::rename(tmp, target, ec);
  if (ec) {
    const std::string why = ec.message();
    fs::remove(tmp, ec);
    throw IoError("cannot write '" + path.string() + "': " + why +
                  " (check the folder exists and is writable)");
  }
}

void write_text_atomic(const fs::path& path, const std::string& text) {
  auto write = [&](const fs::path& to, std::ios::openmode mode) {
    std::ofstream out(to, mode);
    out << text;
    out.flush();
    if (!out) {
      throw IoError("cannot write '" + path.string() +
                    "' (disk full or folder not writable?)");
    }
  };
  const auto plan = write_plan(path);
  if (plan.first == WriteMode::kThrough) {
    // cxr's own stdout/stderr go through its streams: opening /dev/stdout
    // anew gives a second file offset, and with stdout redirected to a file
    // the two would overwrite each other.
    const std::string p = path.lexically_normal().string();
    for (auto [names, stream] :
         {std::pair<std::vector<std::string>, std::ostream*>{
              {"/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"}, &std::cout},
          {{"/dev/stderr", "/dev/fd/2", "/proc/self/fd/2"}, &std::cerr}}) {
      if (std::find(names.begin(), names.end(), p) == names.end()) continue;
      *stream << text;
      stream->flush();
      if (!*stream) throw IoError("cannot write '" + path.string() + "'");
      return;
    }
    write(plan.second, std::ios::binary);
    return;
  }
  write_file_atomic(path,
                    [&](const fs::path& tmp) { write(tmp, std::ios::binary); });
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
  // A terminal redraws the bar 10 times a second; a log (stderr not a
  // terminal) gets a plain line at most once a minute so a long phase is
  // not silent, and the final line from finish().
  const auto every =
      tty_ ? std::chrono::milliseconds(100) : std::chrono::milliseconds(60000);
  if (now - last_draw_ > every || (tty_ && done_ == total_)) {
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
  std::ostringstream line;
  if (tty_) {
    const int width = 24;
    int filled = static_cast<int>(frac * width);
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(width, '.');
    line << label_ << " [" << bar << "] " << done_ << "/" << total_ << " "
         << format_duration(el);
    if (!final_line) line << " ETA " << format_duration(eta);
    if (!status_.empty()) line << "  " << status_;
    std::cerr << "\r\033[K" << line.str();
    if (final_line) std::cerr << "\n";
  } else {
    // Logs, CI, nohup: one plain line, no bar or carriage returns, e.g.
    // "train epoch 7/30: loss 0.2310 acc 0.912 | val ... (12.0s)".
    line << label_ << ": ";
    if (!final_line) {
      line << done_ << "/" << total_ << " done, ETA " << format_duration(eta)
           << (status_.empty() ? "" : ", ");
    }
    line << status_ << (status_.empty() ? "" : " ") << "("
         << format_duration(el) << ")";
    std::cerr << line.str() << "\n";
  }
  std::cerr.flush();
}

}  // namespace cxr
