#include "cli.h"

#include <cstdlib>

#include "cxr/common/runtime.h"

namespace cxr::cli {

void add_runtime_flags(CLI::App& cmd, RuntimeFlags& flags) {
  cmd.add_option("--device", flags.device,
                 "auto (CUDA when available), cpu, cuda or cuda:N")
      ->capture_default_str();
  cmd.add_option("--threads", flags.threads,
                 "CPU threads (0 = all cores)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
}

std::string default_cache_dir() {
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) {
    return std::string(x) + "/cxr";
  }
  if (const char* h = std::getenv("HOME"); h && *h) {
    return std::string(h) + "/.cache/cxr";
  }
  return ".cxr-cache";
}

}  // namespace cxr::cli
