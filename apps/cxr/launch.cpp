#include "launch.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <vector>

#include "cli.h"
#include "cxr/common/error.h"
#include "cxr/dist/dist.h"

extern char** environ;

namespace cxr::cli {
namespace {

// Set by our launcher in its workers: their --nproc/--nnodes are the
// launcher's and must not start workers again.
constexpr const char* kWorkerVar = "CXR_DIST_WORKER";

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  return std::string(v);
}

/// A whole-number variable in [lo, hi], else `fallback` when unset.
int env_int(const char* name, int fallback, int lo = 0, int hi = 1 << 24) {
  auto v = env(name);
  if (!v) return fallback;
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v->c_str(), &end, 10);
  if (errno != 0 || end != v->c_str() + v->size() || x < lo || x > hi) {
    throw ConfigError(std::string(name) + "=" + *v +
                      " is not a whole number in " + std::to_string(lo) + ".." +
                      std::to_string(hi));
  }
  return static_cast<int>(x);
}

/// Why `a` cannot be a host name or an IP address, "" when it can. Checked
/// before any rank waits for the rendezvous: a typo fails at once (exit 2)
/// instead of after --dist-timeout (exit 5).
std::string bad_host(const std::string& a) {
  if (a.empty()) return "is empty: give rank 0's host name or address";
  if (a.size() > 253) return "is longer than a host name (253 characters)";
  for (const char c : a) {
    const bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '.' ||
                    c == '-' || c == '_' || c == ':' || c == '%';
    if (!ok) {
      return "is not a host name or address (letters, digits and . - _ : "
             "only)";
    }
  }
  return "";
}

bool is_local_addr(const std::string& a) {
  return a == "127.0.0.1" || a == "localhost" || a.rfind("127.", 0) == 0;
}

/// A port nobody listens on now (the kernel's choice), for a one-node job.
int free_port() {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  if (s < 0 || ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (s >= 0) ::close(s);
    throw IoError(
        "cannot find a free TCP port on 127.0.0.1 for the workers' "
        "rendezvous; give --master-port");
  }
  ::close(s);
  return ntohs(a.sin_port);
}

/// Fails early, with one line, when the master port is taken on this host
/// (rank 0 would fail the same way, after the workers started).
void check_port_free(const std::string& addr, int port) {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) return;
  int one = 1;
  ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = is_local_addr(addr) ? htonl(INADDR_LOOPBACK) : INADDR_ANY;
  const bool taken =
      ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 &&
      errno == EADDRINUSE;
  ::close(s);
  if (taken) {
    throw ConfigError("--master-port " + std::to_string(port) + ": " + addr +
                      ":" + std::to_string(port) +
                      " (MASTER_ADDR:MASTER_PORT) is in use on this host; "
                      "choose another --master-port (or leave it out for a "
                      "one-node run: a free port is picked)");
  }
}

/// This process's argv as the kernel has it (the workers run the same
/// command line).
std::vector<std::string> own_argv() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)),
                  std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  std::string cur;
  for (char c : all) {
    if (c == '\0') {
      args.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) args.push_back(cur);
  if (args.empty())
    throw IoError(
        "cannot read /proc/self/cmdline to start "
        "the workers");
  return args;
}

std::string signal_name(int sig) {
  switch (sig) {
    case SIGKILL:
      return "SIGKILL";
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    case SIGSEGV:
      return "SIGSEGV";
    case SIGABRT:
      return "SIGABRT";
    case SIGBUS:
      return "SIGBUS";
    case SIGFPE:
      return "SIGFPE";
    case SIGHUP:
      return "SIGHUP";
    case SIGPIPE:
      return "SIGPIPE";
    default:
      return "signal " + std::to_string(sig);
  }
}

struct Worker {
  int rank = 0;
  pid_t pid = -1;
  int fd = -1;  ///< merged stdout+stderr of a forwarded worker, else -1
  std::string pending;
  bool done = false;
  int status = 0;
};

volatile sig_atomic_t g_stop_signal = 0;
void on_stop_signal(int sig) {
  g_stop_signal = sig;
}

/// Forwards complete lines (all of it at the end) with the rank in front.
void forward(Worker& w, bool flush_all) {
  if (w.fd >= 0) {
    char buf[4096];
    for (;;) {
      const ssize_t n = ::read(w.fd, buf, sizeof(buf));
      if (n > 0) {
        w.pending.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (n == 0) {  // the worker closed its end
        ::close(w.fd);
        w.fd = -1;
      }
      break;  // EAGAIN: nothing more now
    }
  }
  size_t start = 0;
  for (size_t nl; (nl = w.pending.find('\n', start)) != std::string::npos;
       start = nl + 1) {
    std::cerr << "[rank " << w.rank << "] "
              << w.pending.substr(start, nl - start) << "\n";
  }
  w.pending.erase(0, start);
  if (flush_all && !w.pending.empty()) {
    std::cerr << "[rank " << w.rank << "] " << w.pending << "\n";
    w.pending.clear();
  }
  std::cerr.flush();
}

/// How a worker ended, for the error line; 0 when it succeeded.
int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 70;
}

std::string describe(const Worker& w) {
  if (WIFSIGNALED(w.status)) {
    return "rank " + std::to_string(w.rank) + " was killed by " +
           signal_name(WTERMSIG(w.status)) + " (exit code " +
           std::to_string(exit_code_of(w.status)) + ")";
  }
  return "rank " + std::to_string(w.rank) + " exited with code " +
         std::to_string(exit_code_of(w.status));
}

/// Which failure to report when several ranks failed in one poll: one
/// killed by a signal, else one that did not fail for lost contact (exit 5
/// follows another rank's death), else the first.
bool more_telling(const Worker& a, const Worker& b) {
  auto score = [](const Worker& w) {
    if (WIFSIGNALED(w.status)) return 2;
    return exit_code_of(w.status) != static_cast<int>(ExitCode::kIo) ? 1 : 0;
  };
  return score(a) > score(b);
}

/// Where rank 0 hosts the rendezvous: the flags, or 127.0.0.1 and a free
/// port on one node, or port 29500 on many.
struct Rendezvous {
  std::string addr;
  int port = 0;
};

Rendezvous pick_rendezvous(const DistFlags& f) {
  if (f.nnodes > 1 && !f.master_addr) {
    throw ConfigError("--nnodes " + std::to_string(f.nnodes) +
                      " needs --master-addr: the host name or address of "
                      "node 0, the same on every node");
  }
  Rendezvous r;
  r.addr = f.master_addr.value_or("127.0.0.1");
  if (f.master_port) {
    r.port = *f.master_port;
  } else {
    r.port = f.nnodes > 1 ? 29500 : free_port();
  }
  if (f.node_rank == 0) check_port_free(r.addr, r.port);
  return r;
}

/// A worker's environment: ours without any torchrun variable, then the
/// worker's own. Built before fork: the child only dup2s and execs.
std::vector<std::string> worker_environment(const DistFlags& f,
                                            const Rendezvous& r,
                                            int local,
                                            int rank) {
  const std::vector<std::string> ours = {
      "RANK",       "WORLD_SIZE",  "LOCAL_RANK",  "LOCAL_WORLD_SIZE",
      "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT", kWorkerVar};
  std::vector<std::string> vars;
  for (char** e = environ; *e; ++e) {
    const std::string kv = *e;
    const std::string key = kv.substr(0, kv.find('='));
    bool mine = false;
    for (const auto& o : ours) mine = mine || key == o;
    if (!mine) vars.push_back(kv);
  }
  vars.push_back("RANK=" + std::to_string(rank));
  vars.push_back("WORLD_SIZE=" + std::to_string(f.nproc * f.nnodes));
  vars.push_back("LOCAL_RANK=" + std::to_string(local));
  vars.push_back("LOCAL_WORLD_SIZE=" + std::to_string(f.nproc));
  vars.push_back("GROUP_RANK=" + std::to_string(f.node_rank));
  vars.push_back("MASTER_ADDR=" + r.addr);
  vars.push_back("MASTER_PORT=" + std::to_string(r.port));
  vars.push_back(std::string(kWorkerVar) + "=1");
  return vars;
}

/// Signals: a terminal's Ctrl-C reaches the workers too (same process
/// group); a TERM sent to the launcher alone is passed on.
void catch_stop_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
}

/// Forks and execs worker `w` (local rank `local`) with `argv` and `vars`.
/// Local rank 0 writes to the terminal as a single process does; the
/// others' output (errors and warnings: they print no progress or summary)
/// comes through a pipe, each line marked with the rank.
void start_worker(Worker& w,
                  int local,
                  const std::vector<char*>& argv,
                  std::vector<std::string> vars) {
  std::vector<char*> envp;
  for (auto& v : vars) envp.push_back(v.data());
  envp.push_back(nullptr);
  int pipefd[2] = {-1, -1};
  if (local > 0 && ::pipe(pipefd) != 0) {
    throw IoError("cannot create a pipe for rank " + std::to_string(w.rank));
  }
  std::cout.flush();
  std::cerr.flush();
  const pid_t pid = ::fork();
  if (pid < 0) {
    throw IoError("cannot start rank " + std::to_string(w.rank) +
                  " (fork failed: " + std::strerror(errno) + ")");
  }
  if (pid == 0) {
    // A launcher that dies (even by SIGKILL) takes its workers with it.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (local > 0) {
      ::dup2(pipefd[1], STDOUT_FILENO);
      ::dup2(pipefd[1], STDERR_FILENO);
      ::close(pipefd[0]);
      ::close(pipefd[1]);
    }
    ::execve("/proc/self/exe", argv.data(), envp.data());
    const char msg[] = "cxr: error: cannot start a worker (exec failed)\n";
    (void)!::write(STDERR_FILENO, msg, sizeof(msg) - 1);
    ::_exit(70);
  }
  w.pid = pid;
  if (local > 0) {
    ::close(pipefd[1]);
    w.fd = pipefd[0];
    ::fcntl(w.fd, F_SETFL, ::fcntl(w.fd, F_GETFL) | O_NONBLOCK);
  }
}

/// Forwards the workers' output until all have ended. The first failure
/// (the most telling of one poll) or a stop signal stops the others: TERM,
/// then KILL after 5 s for workers blocked in a collective. Returns the
/// failed worker, or nullptr.
const Worker* supervise(std::vector<Worker>& workers) {
  const Worker* failed = nullptr;
  bool stopping = false;
  std::chrono::steady_clock::time_point kill_at;
  auto stop_others = [&] {
    if (stopping) return;
    stopping = true;
    for (auto& w : workers) {
      if (!w.done) ::kill(w.pid, SIGTERM);
    }
    kill_at = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  };
  size_t running = workers.size();
  while (running > 0) {
    std::vector<pollfd> fds;
    for (auto& w : workers) {
      if (w.fd >= 0) fds.push_back({w.fd, POLLIN, 0});
    }
    ::poll(fds.data(), fds.size(), 100);
    for (auto& w : workers) forward(w, false);
    const Worker* failed_now = nullptr;
    for (auto& w : workers) {
      if (w.done) continue;
      int st = 0;
      const pid_t r = ::waitpid(w.pid, &st, WNOHANG);
      if (r != w.pid) continue;
      w.done = true;
      w.status = st;
      --running;
      const bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
      if (!ok && !stopping && (!failed_now || more_telling(w, *failed_now))) {
        failed_now = &w;
      }
    }
    if (failed_now && !failed) {
      failed = failed_now;
      stop_others();
    }
    if (g_stop_signal && !stopping) stop_others();
    if (stopping && std::chrono::steady_clock::now() > kill_at) {
      for (auto& w : workers) {
        if (!w.done) ::kill(w.pid, SIGKILL);
      }
    }
  }
  for (auto& w : workers) forward(w, true);
  return failed;
}

[[noreturn]] void run_launcher(const DistFlags& f) {
  const Rendezvous rendezvous = pick_rendezvous(f);
  const std::vector<std::string> args = own_argv();
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  catch_stop_signals();

  std::vector<Worker> workers(static_cast<size_t>(f.nproc));
  for (int local = 0; local < f.nproc; ++local) {
    Worker& w = workers[static_cast<size_t>(local)];
    w.rank = f.node_rank * f.nproc + local;
    start_worker(w, local, argv,
                 worker_environment(f, rendezvous, local, w.rank));
  }
  const Worker* failed = supervise(workers);
  if (failed) {
    throw Error(describe(*failed) +
                    "; the other ranks of this node were "
                    "stopped (its error is above, marked [rank " +
                    std::to_string(failed->rank) + "] unless it is rank " +
                    std::to_string(f.node_rank * f.nproc) + ")",
                static_cast<ExitCode>(exit_code_of(failed->status)));
  }
  if (g_stop_signal) {
    throw Error("stopped by " + signal_name(g_stop_signal) +
                    "; the workers were stopped",
                static_cast<ExitCode>(128 + g_stop_signal));
  }
  std::cout.flush();
  std::exit(0);
}

/// torchrun's invariants between a node's ranks and the job's: LOCAL_RANK
/// in 0..LOCAL_WORLD_SIZE-1 and below WORLD_SIZE, LOCAL_WORLD_SIZE at most
/// WORLD_SIZE. A scheduler that breaks them gave this rank numbers that
/// disagree (a copied LOCAL_RANK, a node count for the job size), and the
/// worker would pick its GPU, share its threads and choose NCCL or Gloo from
/// them; exit 2 naming the variables instead. LOCAL_WORLD_SIZE is optional
/// (docs/distributed.md), so its checks apply only when it is `given`.
void check_local_ranks(const dist::Env& e, bool given) {
  const std::string world = "WORLD_SIZE=" + std::to_string(e.world_size);
  const std::string local =
      "LOCAL_WORLD_SIZE=" + std::to_string(e.local_world_size);
  const std::string rank = "LOCAL_RANK=" + std::to_string(e.local_rank);
  if (given && e.local_world_size > e.world_size) {
    throw ConfigError(local + " is larger than " + world +
                      ": give LOCAL_WORLD_SIZE as the number of ranks on "
                      "this node, at most the job's WORLD_SIZE "
                      "(docs/distributed.md)");
  }
  if (given && e.local_rank >= e.local_world_size) {
    throw ConfigError(rank + " is outside 0.." +
                      std::to_string(e.local_world_size - 1) + " (" + local +
                      "): give each rank on a node its own LOCAL_RANK below "
                      "LOCAL_WORLD_SIZE (docs/distributed.md)");
  }
  if (e.local_rank >= e.world_size) {
    throw ConfigError(rank + " is outside 0.." +
                      std::to_string(e.world_size - 1) + " (" + world +
                      "): a rank's index on its node is below the job's "
                      "size; give LOCAL_RANK from 0 on each node "
                      "(docs/distributed.md)");
  }
}

/// This worker's place in the job from torchrun's variables, each checked
/// (exit 2, one line naming the variable) before anything waits for the
/// others. A scheduler must give RANK and MASTER_ADDR: a default would make
/// every rank rank 0, or send every rank to this host.
dist::Env env_of_worker(const DistFlags& f) {
  dist::Env e;
  e.world_size = env_int("WORLD_SIZE", 1, 1);
  e.rank = env_int("RANK", 0);
  e.local_rank = env_int("LOCAL_RANK", 0);
  e.local_world_size = env_int("LOCAL_WORLD_SIZE", 1, 1);
  e.node_rank = env_int("GROUP_RANK", 0);
  e.master_port = env_int("MASTER_PORT", 29500, 1, 65535);
  e.gloo_ifname = env("GLOO_SOCKET_IFNAME").value_or("");
  e.timeout_s = f.timeout_s;
  if (e.world_size > 1) {
    for (const char* needed : {"RANK", "MASTER_ADDR"}) {
      if (!env(needed)) {
        throw ConfigError("WORLD_SIZE=" + std::to_string(e.world_size) +
                          " but " + needed +
                          " is not set: a rank started by a scheduler needs "
                          "RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT "
                          "(docs/distributed.md)");
      }
    }
  }
  e.master_addr = env("MASTER_ADDR").value_or("127.0.0.1");
  const std::string why = bad_host(e.master_addr);
  if (!why.empty()) {
    throw ConfigError("MASTER_ADDR='" + e.master_addr + "' " + why);
  }
  // The ranges of RANK against WORLD_SIZE, also for a job of one.
  e.validate();
  check_local_ranks(e, env("LOCAL_WORLD_SIZE").has_value());
  return e;
}

}  // namespace

void add_dist_flags(CLI::App& cmd, DistFlags& f) {
  cmd.add_option("--nproc", f.nproc,
                 "distributed: worker processes on this node (1..256); "
                 "docs/distributed.md")
      ->capture_default_str()
      ->check(integer_in(1, 256));
  cmd.add_option("--nnodes", f.nnodes,
                 "distributed: nodes, each running this command")
      ->capture_default_str()
      ->check(integer_in(1, 4096));
  cmd.add_option("--node-rank", f.node_rank,
                 "distributed: this node's index, 0..nnodes-1")
      ->capture_default_str()
      ->check(integer_in(0, 4095));
  cmd.add_option("--master-addr", f.master_addr,
                 "distributed: node 0's host name or address (default "
                 "127.0.0.1 on one node)")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            const std::string why = bad_host(text);
            return why.empty() ? why : "'" + text + "' " + why;
          },
          "HOST"));
  cmd.add_option("--master-port", f.master_port,
                 "distributed: rank 0's rendezvous port (default: a free "
                 "port on one node, 29500 on many)")
      ->check(integer_in(1, 65535));
  cmd.add_option("--dist-timeout", f.timeout_s,
                 "distributed: seconds a rank waits for the others (the "
                 "rendezvous and each collective) before it fails")
      ->capture_default_str()
      ->check(number_in(0, 86400, true));
}

void launch_or_join(const DistFlags& f, std::string& device) {
  const bool ours = env(kWorkerVar).has_value();
  const bool scheduled = env("WORLD_SIZE").has_value();
  if (!ours) {
    if (f.node_rank >= f.nnodes) {
      throw ConfigError("--node-rank " + std::to_string(f.node_rank) +
                        " must be below --nnodes " + std::to_string(f.nnodes));
    }
    const bool launcher_flags = f.nproc * f.nnodes > 1;
    if (launcher_flags && scheduled) {
      throw ConfigError(
          "--nproc/--nnodes and a WORLD_SIZE environment both ask to start "
          "a distributed job: give one (unset WORLD_SIZE to use --nproc)");
    }
    if (launcher_flags) run_launcher(f);
  }
  if (!ours && !scheduled) return;
  const dist::Env e = env_of_worker(f);
  if (!e.distributed()) return;
  torch::Device dev = torch::kCPU;
  const bool cuda = device.rfind("cuda", 0) == 0 ||
                    (device == "auto" && torch::cuda::is_available());
  if (cuda && torch::cuda::is_available()) {
    // One GPU per local rank, as torchrun does.
    device =
        "cuda:" + std::to_string(e.local_rank %
                                 std::max<int>(1, torch::cuda::device_count()));
    dev = torch::Device(device);
  }
  dist::init(e, dev);
}

}  // namespace cxr::cli
