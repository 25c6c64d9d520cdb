#pragma once
// Helpers of the dist suites (test_dist*.cpp): free and busy ports on
// 127.0.0.1, starting and waiting for `cxr` processes with every wait
// bounded (a hang is a failure, not a stuck suite), finding a launcher's
// worker by rank, and torchrun's environment for scheduler-started ranks.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

namespace cxr::testing {

/// A socket bound to a port of 127.0.0.1 that the kernel picked; listening
/// when `listen` (a busy port), else closed at once by free_port().
struct BoundPort {
  int fd = -1;
  int port = 0;
  explicit BoundPort(bool listen) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    if (listen) EXPECT_EQ(::listen(fd, 1), 0);
    EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
    port = ntohs(a.sin_port);
  }
  ~BoundPort() { close(); }
  BoundPort(const BoundPort&) = delete;
  BoundPort& operator=(const BoundPort&) = delete;
  void close() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

/// A TCP port that nobody listens on now (never a fixed one).
inline int free_port() {
  return BoundPort(false).port;
}

/// torchrun's variables for ranks a scheduler starts on 127.0.0.1:`port`;
/// each rank adds its RANK (and LOCAL_RANK).
inline std::string scheduled_env(int port, int world = 2) {
  return "env WORLD_SIZE=" + std::to_string(world) +
         " MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port) + " ";
}

/// Starts `cmd` (through sh's exec, so the pid is the command's own).
inline pid_t spawn(const std::string& cmd) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

/// Waits up to `seconds` for `pid`; kills it (and fails) past that.
/// Returns the wait status.
inline int wait_bounded(pid_t pid, double seconds) {
  const auto end =
      std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  int st = 0;
  while (::waitpid(pid, &st, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > end) {
      ADD_FAILURE() << "pid " << pid << " still runs after " << seconds
                    << " s: killed";
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &st, 0);
      return st;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return st;
}

/// Polls `done` every `poll_ms` until it is true (true) or `seconds`
/// passed (false).
inline bool wait_until(const std::function<bool()>& done,
                       double seconds,
                       int poll_ms = 50) {
  const auto end =
      std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(poll_ms));
  }
  return false;
}

/// The children of `pid` (the launcher's workers).
inline std::vector<pid_t> children_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" +
                   std::to_string(pid) + "/children");
  std::vector<pid_t> out;
  for (pid_t c; in >> c;) out.push_back(c);
  return out;
}

/// The RANK variable a process runs with (-1 if unknown).
inline int rank_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/environ");
  std::string all((std::istreambuf_iterator<char>(in)),
                  std::istreambuf_iterator<char>());
  for (size_t at = 0; at < all.size();) {
    const auto end = all.find('\0', at);
    const std::string kv = all.substr(at, end - at);
    if (kv.rfind("RANK=", 0) == 0) return std::stoi(kv.substr(5));
    if (end == std::string::npos) break;
    at = end + 1;
  }
  return -1;
}

/// The launcher's worker running as `rank` (-1 when there is none).
inline pid_t worker_of_rank(pid_t launcher, int rank) {
  pid_t found = -1;
  for (pid_t c : children_of(launcher)) {
    if (rank_of(c) == rank) found = c;
  }
  return found;
}

}  // namespace cxr::testing
