#include "keras_child.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>

#include "cxr/common/error.h"

// A sanitizer's death callback (libFuzzer's writes the input as a crash of
// its own) must not run in the reader child: a crash there is contained and
// reported by the parent. Weak: absent outside sanitizer builds.
extern "C" void __sanitizer_set_death_callback(void (*)(void))
    __attribute__((weak));

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

void PipeWriter::weight(const std::string& name, const RawWeight& w) {
  tag(Tag::kWeight);
  text(name);
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

KerasWeight Records::weight() {
  KerasWeight w;
  w.name = text();
  const uint32_t rank = u32();
  if (rank > 8) malformed();
  std::vector<int64_t> shape;
  uint64_t values = 1;
  for (uint32_t i = 0; i < rank; ++i) {
    uint64_t d = 0;
    bytes(&d, 8);
    if (d > uint64_t(kMaxDatasetValues) ||
        (d > 0 && values > uint64_t(kMaxDatasetValues) / d)) {
      malformed();
    }
    values *= d;
    shape.push_back(static_cast<int64_t>(d));
  }
  // The values must be in what was received: no allocation beyond it.
  if (values * sizeof(float) > data_.size() - pos_) malformed();
  w.value = torch::empty(shape, torch::kFloat32);
  bytes(w.value.data_ptr<float>(), values * sizeof(float));
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

// The child's side: signals the parent handles (Ctrl-C, a fuzzer's crash
// handlers) take their default action here, so the child just dies; then
// stream, report the outcome as the last record and _exit (no atexit
// handlers, no flushing of the parent's stdio buffers).
[[noreturn]] void be_the_child(const std::string& path,
                               void (*stream)(const std::string&, PipeWriter&),
                               int fd) {
  for (int sig : {SIGINT, SIGTERM, SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE,
                  SIGALRM, SIGUSR1, SIGUSR2, SIGXFSZ, SIGPIPE}) {
    ::signal(sig, SIG_DFL);
  }
  if (__sanitizer_set_death_callback) __sanitizer_set_death_callback(nullptr);
  PipeWriter out(fd);
  try {
    stream(path, out);
    out.tag(Tag::kDone);
  } catch (const Error& e) {
    out.tag(Tag::kError);
    out.text(e.what());
  } catch (const std::exception& e) {
    out.tag(Tag::kOther);
    out.text(e.what());
  }
  ::close(fd);
  ::_exit(0);
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

// Forks, lets the child stream, and collects its records and exit status.
ChildResult run_reader_child(const std::string& path,
                             void (*stream)(const std::string&, PipeWriter&),
                             double timeout_s,
                             uint64_t max_bytes) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    throw ModelError("weights file '" + path +
                     "': cannot start the HDF5 reader process (pipe: " +
                     std::strerror(errno) + "); try again");
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    throw ModelError("weights file '" + path +
                     "': cannot start the HDF5 reader process (fork: " +
                     std::strerror(err) + "); try again");
  }
  if (pid == 0) {
    ::close(fds[0]);
    be_the_child(path, stream, fds[1]);
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
                      void (*stream)(const std::string&, PipeWriter&),
                      double timeout_s) {
  const uint64_t cap = max_reader_bytes(path);
  ChildResult r = run_reader_child(path, stream, timeout_s, cap);
  check_child(path, r, timeout_s, cap);
  return Records(path, std::move(r.data));
}

}  // namespace cxr::models::detail
