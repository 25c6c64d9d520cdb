#include "keras_child.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "cxr/common/error.h"

extern char** environ;

namespace cxr::models::detail {

void PipeWriter::bytes(const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd_, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) ::_exit(3);
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void PipeWriter::text(const std::string& s) {
  u32(static_cast<uint32_t>(s.size()));
  bytes(s.data(), s.size());
}

void PipeWriter::weight(const RawWeight& w) {
  tag(Tag::kWeight);
  text(w.name);
  u32(static_cast<uint32_t>(w.shape.size()));
  for (int64_t d : w.shape) {
    const uint64_t v = static_cast<uint64_t>(d);
    bytes(&v, 8);
  }
  bytes(w.values.data(), w.values.size() * sizeof(float));
}

void Records::malformed() const {
  throw ModelError("weights file '" + path_ +
                   "': not a readable Keras HDF5 weights file (the HDF5 "
                   "reader process sent malformed data); check that it is a "
                   "Keras .h5 weights file, or download it again");
}

void Records::bytes(void* out, size_t n) {
  if (n > data_.size() - pos_) malformed();
  if (n == 0) return;  // `out` may be an empty vector's null data()
  std::memcpy(out, data_.data() + pos_, n);
  pos_ += n;
}

uint32_t Records::u32() {
  uint32_t v = 0;
  bytes(&v, 4);
  return v;
}

std::string Records::text() {
  const uint32_t n = u32();
  if (n > data_.size() - pos_) malformed();
  std::string s(data_, pos_, n);
  pos_ += n;
  return s;
}

bool Records::next(Tag* t) {
  if (pos_ >= data_.size()) malformed();
  *t = static_cast<Tag>(data_[pos_++]);
  if (*t == Tag::kDone) {
    if (pos_ < data_.size()) malformed();
    return false;
  }
  // An 'E' or 'X' record ends the stream with the reader's error; its own
  // ModelError already names the file.
  if (*t == Tag::kError) throw ModelError(text());
  if (*t == Tag::kOther)
    throw ModelError("weights file '" + path_ + "': " + text());
  return true;
}

RawWeight Records::weight() {
  RawWeight w;
  w.name = text();
  const uint32_t rank = u32();
  if (rank > 8) malformed();
  uint64_t values = 1;
  for (uint32_t i = 0; i < rank; ++i) {
    uint64_t d = 0;
    bytes(&d, 8);
    if (d > uint64_t(kMaxDatasetValues) ||
        (d > 0 && values > uint64_t(kMaxDatasetValues) / d)) {
      malformed();
    }
    values *= d;
    w.shape.push_back(static_cast<int64_t>(d));
  }
  // The values must be in what was received: no allocation beyond it.
  if (values * sizeof(float) > data_.size() - pos_) malformed();
  w.values.resize(static_cast<size_t>(values));
  bytes(w.values.data(), values * sizeof(float));
  return w;
}

namespace {

struct ChildResult {
  std::string data;  // the records
  bool timed_out = false;
  bool too_large = false;
  int status = 0;  // waitpid's, when reaped
  bool reaped = false;
};

using Clock = std::chrono::steady_clock;

bool is_executable(const std::string& file) {
  std::error_code ec;
  return std::filesystem::is_regular_file(file, ec) &&
         ::access(file.c_str(), X_OK) == 0;
}

// cxr-keras-reader: $CXR_KERAS_READER when set, else beside the running
// program (an installed or copied cxr), else where this build put it (the
// test and fuzz programs live in other folders of the build tree).
std::string reader_program(const std::string& path) {
  if (const char* env = std::getenv("CXR_KERAS_READER"); env && *env) {
    if (is_executable(env)) return env;
    throw ModelError("weights file '" + path + "': CXR_KERAS_READER='" + env +
                     "' is not an executable file; point it at "
                     "cxr-keras-reader (built with cxr) or unset it");
  }
  std::vector<std::string> tried;
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) tried.push_back((self.parent_path() / kReaderName).string());
#ifdef CXR_KERAS_READER_BUILD_PATH
  tried.push_back(CXR_KERAS_READER_BUILD_PATH);
#endif
  for (const auto& t : tried) {
    if (is_executable(t)) return t;
  }
  std::string where;
  for (const auto& t : tried) where += (where.empty() ? "" : ", ") + t;
  throw ModelError("weights file '" + path +
                   "': cannot find the HDF5 reader program " + kReaderName +
                   " (looked for " + where +
                   "); rebuild cxr (it builds the reader too) and keep the "
                   "two programs together, or set CXR_KERAS_READER to its "
                   "path");
}

// Reads the child's output until it ends, the deadline passes or it exceeds
// `max_bytes`.
void collect_output(int fd,
                    Clock::time_point deadline,
                    uint64_t max_bytes,
                    ChildResult* r) {
  char buf[1 << 16];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - Clock::now())
                          .count();
    if (left <= 0) {
      r->timed_out = true;
      return;
    }
    pollfd p{fd, POLLIN, 0};
    const int ready =
        ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 1 << 30)));
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) continue;  // the deadline is checked above
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // end of the child's output (or a broken pipe)
    if (r->data.size() + static_cast<uint64_t>(n) > max_bytes) {
      r->too_large = true;
      return;
    }
    r->data.append(buf, static_cast<size_t>(n));
  }
}

// After its output ends the child only closes and exits; give it the rest
// of the deadline (at least a second), then kill it.
void reap(pid_t pid, Clock::time_point deadline, ChildResult* r) {
  const auto reap_by =
      std::max(deadline, Clock::now() + std::chrono::seconds(1));
  for (;;) {
    const pid_t w = ::waitpid(pid, &r->status, WNOHANG);
    if (w == pid) {
      r->reaped = true;
      return;
    }
    if (w < 0 && errno != EINTR) return;  // ECHILD: SIGCHLD ignored
    if (Clock::now() > reap_by) {
      ::kill(pid, SIGKILL);
      r->timed_out = true;
      while (::waitpid(pid, &r->status, 0) < 0 && errno == EINTR) {
      }
      r->reaped = true;
      return;
    }
    ::usleep(1000);
  }
}

// Starts the reader program on `path` with its stdout on `out_fd`. posix_spawn
// (vfork-like: no copy of this process's page tables, which LibTorch makes
// large) and exec: the child is a fresh process image with default signal
// handlers and no state of cxr's (threads, torch, sanitizer callbacks).
pid_t spawn_reader(const std::string& program,
                   const char* mode,
                   const std::string& path,
                   int out_fd) {
  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  posix_spawn_file_actions_addopen(&files, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&files, out_fd, 1);
  // Nothing of the reader reaches cxr's stderr: its failure is cxr's one
  // line. (libhdf5 is silenced anyway; what remains is a sanitizer build's
  // report of a libhdf5 crash. To see it, run the reader by hand:
  // cxr-keras-reader weights FILE.)
  posix_spawn_file_actions_addopen(&files, 2, "/dev/null", O_WRONLY, 0);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  // Signals cxr ignores (SIGPIPE in `cxr serve`) or blocks are the
  // defaults again in the reader.
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::string prog = program, m = mode, p = path;
  char* argv[] = {prog.data(), m.data(), p.data(), nullptr};
  pid_t pid = -1;
  const int rc =
      ::posix_spawn(&pid, program.c_str(), &files, &attr, argv, environ);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&files);
  if (rc != 0) {
    throw ModelError("weights file '" + path +
                     "': cannot start the HDF5 reader program '" + program +
                     "' (" + std::strerror(rc) +
                     "); rebuild cxr, or set CXR_KERAS_READER to the path "
                     "of cxr-keras-reader");
  }
  return pid;
}

// Runs the reader on `path` and collects its records and exit status.
ChildResult run_reader_child(const std::string& path,
                             const char* mode,
                             double timeout_s,
                             uint64_t max_bytes) {
  const std::string program = reader_program(path);
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    throw ModelError("weights file '" + path +
                     "': cannot start the HDF5 reader process (pipe: " +
                     std::strerror(errno) + "); try again");
  }
  pid_t pid = -1;
  try {
    pid = spawn_reader(program, mode, path, fds[1]);
  } catch (...) {
    ::close(fds[0]);
    ::close(fds[1]);
    throw;
  }
  ::close(fds[1]);
  ChildResult r;
  const auto deadline =
      Clock::now() + std::chrono::milliseconds(
                         static_cast<int64_t>(std::max(0.0, timeout_s) * 1e3));
  collect_output(fds[0], deadline, max_bytes, &r);
  ::close(fds[0]);
  if (r.timed_out || r.too_large) ::kill(pid, SIGKILL);
  reap(pid, deadline, &r);
  return r;
}

// The bytes a reader child may send: the weights of a Keras file are its
// float32 datasets, so a multiple of the file's size covers every real file
// (float16 or integer datasets are widened to float32); a file that claims
// more (e.g. datasets of unwritten fill values) is refused at this bound.
uint64_t max_reader_bytes(const std::string& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  const uint64_t file = ec ? 0 : static_cast<uint64_t>(size);
  return (uint64_t(64) << 20) + std::min<uint64_t>(file, uint64_t(1) << 40) * 8;
}

// Throws the ModelError that says why a finished child left no records: a
// crash, a timeout or too much data.
void check_child(const std::string& path,
                 const ChildResult& r,
                 double timeout_s,
                 uint64_t max_bytes) {
  const std::string where = "weights file '" + path + "'";
  const std::string fix =
      "check that it is a Keras .h5 weights file, or download it again";
  if (r.timed_out) {
    throw ModelError(where +
                     ": not a readable Keras HDF5 weights file (the HDF5 "
                     "reader took longer than " +
                     std::to_string(static_cast<int>(timeout_s)) + " s); " +
                     fix);
  }
  if (r.too_large) {
    throw ModelError(where +
                     ": not a readable Keras HDF5 weights file (it holds "
                     "more than " +
                     std::to_string(max_bytes >> 20) + " MiB of weights); " +
                     fix);
  }
  // The reader's own answer (a ModelError naming the layer or dataset) is in
  // the records when it got that far and exited normally.
  const bool exited =
      r.reaped && WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0;
  if (!exited || r.data.empty()) {
    std::string how = "the HDF5 reader crashed on it";
    if (r.reaped && WIFSIGNALED(r.status)) {
      how += " (signal " + std::to_string(WTERMSIG(r.status)) + ")";
    } else if (r.reaped && WIFEXITED(r.status)) {
      how += " (exit status " + std::to_string(WEXITSTATUS(r.status)) + ")";
    }
    throw ModelError(where + ": not a readable Keras HDF5 weights file (" +
                     how + "); " + fix);
  }
}

}  // namespace

Records read_in_child(const std::string& path,
                      const char* mode,
                      double timeout_s) {
  const uint64_t cap = max_reader_bytes(path);
  ChildResult r = run_reader_child(path, mode, timeout_s, cap);
  check_child(path, r, timeout_s, cap);
  return Records(path, std::move(r.data));
}

}  // namespace cxr::models::detail
