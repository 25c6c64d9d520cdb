#pragma once
/// A terminal progress bar with rate and ETA, written to stderr. When stderr
/// is not a terminal (a log file, CI, nohup) it writes plain lines instead:
/// one when the task finishes (per epoch, per decode pass) and one a minute
/// while a long task runs.
#include <chrono>
#include <string>

namespace cxr {

class Progress {
 public:
  /// `total` steps; `label` is printed in front of the bar.
  Progress(std::string label, long total, bool enabled = true);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  /// Advances by `n` steps and sets the trailing status text.
  void step(long n = 1, const std::string& status = "");
  /// Ends the bar with a final status line.
  void finish(const std::string& status = "");
  /// Seconds since construction.
  double elapsed_s() const;

 private:
  void draw(bool final_line);
  std::string label_;
  long total_;
  long done_ = 0;
  bool enabled_;
  bool tty_;
  bool finished_ = false;
  std::string status_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

/// Formats seconds as `1h02m`, `3m05s` or `12.3s`.
std::string format_duration(double seconds);

}  // namespace cxr
