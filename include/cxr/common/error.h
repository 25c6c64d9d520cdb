#pragma once
/// The one small error hierarchy of cxr. The library throws these; `main`
/// catches them once, prints `what()` as one line and exits with `exit_code()`.
/// Messages name the file or flag at fault and say how to fix it.
#include <stdexcept>
#include <string>

namespace cxr {

/// Exit codes documented in README.md ("Exit codes").
enum class ExitCode : int {
  kOk = 0,
  kUsage = 2,  ///< bad flag or configuration
  kData = 3,   ///< unreadable or invalid input data
  kModel = 4,  ///< checkpoint / weights mismatch or corrupt
  kIo = 5,     ///< cannot write output
  kInternal = 70,
};

class Error : public std::runtime_error {
 public:
  Error(const std::string& what, ExitCode code)
      : std::runtime_error(what), code_(code) {}
  ExitCode exit_code() const { return code_; }

 private:
  ExitCode code_;
};

/// Bad configuration or flags (e.g. `--size 0`).
class ConfigError : public Error {
 public:
  explicit ConfigError(const std::string& what)
      : Error(what, ExitCode::kUsage) {}
};

/// Input data that cannot be used (missing folder, corrupt image, ...).
class DataError : public Error {
 public:
  explicit DataError(const std::string& what) : Error(what, ExitCode::kData) {}
};

/// Model, checkpoint or weight-file problems (mismatch, corruption).
class ModelError : public Error {
 public:
  explicit ModelError(const std::string& what)
      : Error(what, ExitCode::kModel) {}
};

/// Output that cannot be written.
class IoError : public Error {
 public:
  explicit IoError(const std::string& what) : Error(what, ExitCode::kIo) {}
};

}  // namespace cxr
