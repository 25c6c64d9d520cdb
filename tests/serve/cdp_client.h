#pragma once
// A small Chrome DevTools Protocol client for browser tests, without npm or
// a WebSocket library: Chromium started with --remote-debugging-pipe reads
// commands from its file descriptor 3 and writes answers and events to 4,
// each message one JSON text terminated by '\0' (Puppeteer's pipe
// transport). Header-only because the test CMake compiles tests/*/test_*.cpp
// and nothing else.
//
// Every wait has a deadline, and the processes started here (Chromium, the
// server under test) are killed by their destructors whatever happens, so a
// failing test never leaves a browser behind.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace cxr::testing::cdp {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

/// The Chromium (or Chrome) executable on PATH, "" when there is none.
inline std::string find_chromium() {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin";
  for (const char* name : {"chromium", "chromium-browser", "google-chrome"}) {
    size_t start = 0;
    while (start <= dirs.size()) {
      size_t end = dirs.find(':', start);
      if (end == std::string::npos) end = dirs.size();
      const auto p =
          std::filesystem::path(dirs.substr(start, end - start)) / name;
      if (::access(p.c_str(), X_OK) == 0) return p.string();
      start = end + 1;
    }
  }
  return "";
}

/// Decodes standard base64 (screenshots come as base64 PNG).
inline std::string base64_decode(const std::string& in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  out.reserve(in.size() * 3 / 4);
  int bits = 0;
  int buffer = 0;
  for (char c : in) {
    const int v = value(c);
    if (v < 0) continue;  // '=' padding and line breaks
    buffer = (buffer << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xff));
    }
  }
  return out;
}

/// A child process in a process group of its own, so that killing the
/// group also ends what it started (Chromium's renderer processes).
class Process {
 public:
  struct Options {
    std::vector<std::string> argv;
    /// (parent's fd, number it gets in the child), e.g. Chromium's 3 and 4.
    std::vector<std::pair<int, int>> fds;
    /// stdout is a pipe the parent reads with read_line().
    bool capture_stdout = false;
    /// stderr (and stdout when not captured) go here; "" -> /dev/null.
    std::string log_path;
    /// Signal tried first at destruction (then SIGKILL after 5 s).
    int stop_signal = SIGKILL;
  };

  explicit Process(Options o) : opts_(std::move(o)) {
    int out[2] = {-1, -1};
    if (opts_.capture_stdout && ::pipe2(out, O_CLOEXEC) != 0) {
      throw std::runtime_error("pipe2 failed");
    }
    const std::string log =
        opts_.log_path.empty() ? "/dev/null" : opts_.log_path;
    std::vector<char*> argv;
    for (auto& a : opts_.argv) argv.push_back(a.data());
    argv.push_back(nullptr);
    // Only async-signal-safe calls between fork and exec (the test process
    // has threads): everything is prepared above.
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::setpgid(0, 0);
      // Move the inherited fds out of the way first, so that dup2 onto 3 or
      // 4 cannot clobber one that is still to be placed.
      int moved[8];
      const size_t n = opts_.fds.size() < 8 ? opts_.fds.size() : 8;
      for (size_t i = 0; i < n; ++i) {
        moved[i] = ::fcntl(opts_.fds[i].first, F_DUPFD, 100);
      }
      for (size_t i = 0; i < n; ++i) ::dup2(moved[i], opts_.fds[i].second);
      const int logfd =
          ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (logfd >= 0) ::dup2(logfd, 2);
      if (opts_.capture_stdout) {
        ::dup2(out[1], 1);
      } else if (logfd >= 0) {
        ::dup2(logfd, 1);
      }
      const int devnull = ::open("/dev/null", O_RDONLY);
      if (devnull >= 0) ::dup2(devnull, 0);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    // Also here: kill() may run before the child got to its setpgid.
    ::setpgid(pid_, pid_);
    if (opts_.capture_stdout) {
      ::close(out[1]);
      stdout_fd_ = out[0];
    }
  }

  ~Process() {
    kill();
    if (stdout_fd_ >= 0) ::close(stdout_fd_);
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }

  /// Ends the process group: stop_signal, up to 5 s, then SIGKILL.
  void kill() {
    if (pid_ <= 0 || reaped_) return;
    ::kill(-pid_, opts_.stop_signal);
    if (opts_.stop_signal != SIGKILL && wait_exit(milliseconds(5000)) >= -1) {
      ::kill(-pid_, SIGKILL);  // what the leader left behind, if anything
      return;
    }
    ::kill(-pid_, SIGKILL);
    wait_exit(milliseconds(10000));
  }

  /// Waits for the exit: its status (>= 0, or -1 for a signal), -2 on
  /// timeout.
  int wait_exit(milliseconds timeout) {
    if (reaped_) return status_;
    const auto deadline = Clock::now() + timeout;
    while (true) {
      int st = 0;
      const pid_t r = ::waitpid(pid_, &st, WNOHANG);
      if (r == pid_ || r < 0) {
        reaped_ = true;
        status_ = (r == pid_ && WIFEXITED(st)) ? WEXITSTATUS(st) : -1;
        return status_;
      }
      if (Clock::now() > deadline) return -2;
      std::this_thread::sleep_for(milliseconds(20));
    }
  }

  /// One line of the child's stdout (without '\n'); false when the deadline
  /// passes or the child closes stdout first.
  bool read_line(std::string* line, milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (true) {
      const size_t nl = out_buf_.find('\n');
      if (nl != std::string::npos) {
        *line = out_buf_.substr(0, nl);
        out_buf_.erase(0, nl + 1);
        return true;
      }
      const auto left =
          std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
      if (left.count() <= 0 || stdout_fd_ < 0) return false;
      pollfd p{stdout_fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::read(stdout_fd_, buf, sizeof buf);
      if (n <= 0) return false;
      out_buf_.append(buf, static_cast<size_t>(n));
    }
  }

 private:
  Options opts_;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string out_buf_;
  bool reaped_ = false;
  int status_ = -1;
};

/// Headless Chromium driven over the pipe, attached (flatten mode) to one
/// page; page commands carry its sessionId.
class Browser {
 public:
  /// Starts `exe` with a fresh profile under `profile_dir` (which must
  /// exist and outlive the Browser) and a window of width x height.
  Browser(const std::string& exe,
          const std::filesystem::path& profile_dir,
          int width = 1280,
          int height = 900,
          milliseconds timeout = milliseconds(20000))
      : timeout_(timeout) {
    // A write to a browser that died must fail with EPIPE, not kill the
    // test program.
    ::signal(SIGPIPE, SIG_IGN);
    int to_child[2];
    int from_child[2];
    if (::pipe2(to_child, O_CLOEXEC) != 0 ||
        ::pipe2(from_child, O_CLOEXEC) != 0) {
      throw std::runtime_error("pipe2 failed");
    }
    Process::Options o;
    o.argv = {
        exe,
        "--headless=new",
        "--no-sandbox",  // tests run as root in containers
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
        "--user-data-dir=" + (profile_dir / "profile").string(),
        "--window-size=" + std::to_string(width) + "," + std::to_string(height),
        "--remote-debugging-pipe",
        "about:blank"};
    o.fds = {{to_child[0], 3}, {from_child[1], 4}};
    o.log_path = (profile_dir / "chromium.log").string();
    log_path_ = o.log_path;
    proc_ = std::make_unique<Process>(o);
    ::close(to_child[0]);
    ::close(from_child[1]);
    write_fd_ = to_child[1];
    read_fd_ = from_child[0];

    // The page Chromium opened with about:blank (or a new one).
    const json targets = call("Target.getTargets", json::object());
    std::string target_id;
    for (const auto& t : targets.at("targetInfos")) {
      if (t.value("type", "") == "page") {
        target_id = t.at("targetId").get<std::string>();
        break;
      }
    }
    if (target_id.empty()) {
      target_id = call("Target.createTarget", {{"url", "about:blank"}})
                      .at("targetId")
                      .get<std::string>();
    }
    session_ = call("Target.attachToTarget",
                    {{"targetId", target_id}, {"flatten", true}})
                   .at("sessionId")
                   .get<std::string>();
    page("Page.enable");
    page("Runtime.enable");  // exceptions and console errors become events
    page("Emulation.setDeviceMetricsOverride", {{"width", width},
                                                {"height", height},
                                                {"deviceScaleFactor", 1},
                                                {"mobile", false}});
  }

  ~Browser() {
    if (write_fd_ >= 0) ::close(write_fd_);
    if (read_fd_ >= 0) ::close(read_fd_);
    proc_.reset();  // SIGKILL to the browser's process group
  }
  Browser(const Browser&) = delete;
  Browser& operator=(const Browser&) = delete;

  /// A browser-level command; throws on a protocol error or the deadline.
  json call(const std::string& method,
            const json& params = json::object(),
            const std::string& session = "") {
    const int id = ++last_id_;
    json msg = {{"id", id}, {"method", method}, {"params", params}};
    if (!session.empty()) msg["sessionId"] = session;
    std::string text = msg.dump();
    text.push_back('\0');
    size_t off = 0;
    while (off < text.size()) {
      const ssize_t n =
          ::write(write_fd_, text.data() + off, text.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) fail("cannot send " + method + " (browser gone?)");
      off += static_cast<size_t>(n);
    }
    const auto deadline = Clock::now() + timeout_;
    while (true) {
      json m = next_message(deadline, method);
      if (m.contains("id") && m["id"] == id) {
        if (m.contains("error")) {
          fail(method + " failed: " + m["error"].dump());
        }
        return m.value("result", json::object());
      }
      if (m.contains("method")) events_.push_back(std::move(m));
    }
  }

  /// A command to the attached page.
  json page(const std::string& method, const json& params = json::object()) {
    return call(method, params, session_);
  }

  /// Evaluates `expr` in the page (promises awaited) and returns its value;
  /// throws with the page's exception text.
  json evaluate(const std::string& expr) {
    const json r = page("Runtime.evaluate", {{"expression", expr},
                                             {"returnByValue", true},
                                             {"awaitPromise", true}});
    if (r.contains("exceptionDetails")) {
      fail("page exception in `" + expr + "`: " + r["exceptionDetails"].dump());
    }
    return r.at("result").value("value", json());
  }

  /// Polls `expr` every 100 ms until it is truthy; returns its value. On the
  /// deadline throws with the expression and the last value seen.
  json wait_for(const std::string& expr, milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    json last;
    while (true) {
      last = evaluate(expr);
      const bool truthy =
          !(last.is_null() || (last.is_boolean() && !last.get<bool>()) ||
            (last.is_number() && last.get<double>() == 0) ||
            (last.is_string() && last.get<std::string>().empty()));
      if (truthy) return last;
      if (Clock::now() > deadline) {
        fail("timed out after " + std::to_string(timeout.count()) +
             " ms waiting for `" + expr + "` (last value " + last.dump() + ")");
      }
      std::this_thread::sleep_for(milliseconds(100));
    }
  }

  /// Navigates and waits until the document has loaded.
  void navigate(const std::string& url) {
    const json r = page("Page.navigate", {{"url", url}});
    if (r.contains("errorText") && !r["errorText"].get<std::string>().empty()) {
      fail("cannot open " + url + ": " + r["errorText"].get<std::string>());
    }
    wait_for("document.readyState === 'complete' && location.href === " +
                 json(url).dump(),
             timeout_);
  }

  /// Puts `paths` into the <input type=file> matched by `selector`, as a
  /// user choosing them would (Chromium fires input and change events).
  void set_files(const std::string& selector,
                 const std::vector<std::string>& paths) {
    const int root = page("DOM.getDocument", {{"depth", 0}})
                         .at("root")
                         .at("nodeId")
                         .get<int>();
    const int node =
        page("DOM.querySelector", {{"nodeId", root}, {"selector", selector}})
            .at("nodeId")
            .get<int>();
    if (node == 0) fail("no element matches " + selector);
    page("DOM.setFileInputFiles", {{"nodeId", node}, {"files", paths}});
  }

  /// A PNG of the viewport, or of the whole page, written to `path`.
  void screenshot(const std::filesystem::path& path, bool full_page = false) {
    json params = {{"format", "png"}};
    if (full_page) {
      const json size = page("Page.getLayoutMetrics").at("cssContentSize");
      params["captureBeyondViewport"] = true;
      params["clip"] = {{"x", 0},
                        {"y", 0},
                        {"width", size.at("width")},
                        {"height", size.at("height")},
                        {"scale", 1}};
    }
    const json r = page("Page.captureScreenshot", params);
    if (path.has_parent_path()) {
      std::filesystem::create_directories(path.parent_path());
    }
    std::ofstream out(path, std::ios::binary);
    out << base64_decode(r.at("data").get<std::string>());
    if (!out) fail("cannot write " + path.string());
  }

  /// Uncaught exceptions and console.error calls of the page so far, one
  /// line each.
  std::vector<std::string> page_errors() {
    call("Browser.getVersion");  // drains what arrived since the last command
    return errors_seen();
  }

 private:
  std::vector<std::string> errors_seen() const {
    // Events are read as they come: look fields up with defaults (operator[]
    // on a const json with a missing key is undefined).
    static const json none = json::object();
    auto field = [](const json& j, const char* key) -> const json& {
      return j.is_object() && j.contains(key) ? j.at(key) : none;
    };
    std::vector<std::string> out;
    for (const auto& e : events_) {
      const std::string m = e.value("method", "");
      const json& params = field(e, "params");
      if (m == "Runtime.exceptionThrown") {
        const json& d = field(params, "exceptionDetails");
        std::string text = d.value("text", "");
        text += " " + field(d, "exception").value("description", "");
        out.push_back("exception: " + text);
      } else if (m == "Runtime.consoleAPICalled" &&
                 params.value("type", "") == "error") {
        out.push_back("console.error: " + field(params, "args").dump());
      }
    }
    return out;
  }

  /// Throws `what` with the page's errors so far (often the reason a wait
  /// timed out) and the end of Chromium's log.
  [[noreturn]] void fail(const std::string& what) {
    std::string tail;
    for (const auto& e : errors_seen()) tail += "\n  page: " + e;
    std::ifstream log(log_path_);
    std::string line;
    std::deque<std::string> last;
    while (std::getline(log, line)) {
      last.push_back(line);
      if (last.size() > 5) last.pop_front();
    }
    for (const auto& l : last) tail += "\n  chromium: " + l;
    throw std::runtime_error("cdp: " + what + tail);
  }

  json next_message(Clock::time_point deadline, const std::string& method) {
    while (true) {
      const size_t end = in_buf_.find('\0');
      if (end != std::string::npos) {
        json m = json::parse(in_buf_.substr(0, end));
        in_buf_.erase(0, end + 1);
        return m;
      }
      const auto left =
          std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) {
        fail("no answer to " + method + " within " +
             std::to_string(timeout_.count()) + " ms");
      }
      pollfd p{read_fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[65536];
      const ssize_t n = ::read(read_fd_, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) fail("the browser closed the pipe during " + method);
      in_buf_.append(buf, static_cast<size_t>(n));
    }
  }

  milliseconds timeout_;
  std::unique_ptr<Process> proc_;
  std::string log_path_;
  int write_fd_ = -1;
  int read_fd_ = -1;
  int last_id_ = 0;
  std::string session_;
  std::string in_buf_;
  std::vector<json> events_;
};

}  // namespace cxr::testing::cdp
