#pragma once
// Shared pieces of the thin CLI: one register_* function per subcommand
// (one file each), runtime flags, environment-derived defaults.
#include <CLI/CLI.hpp>

#include <string>

namespace cxr::cli {

struct RuntimeFlags {
  std::string device = "auto";
  int threads = 0;
};
void add_runtime_flags(CLI::App& cmd, RuntimeFlags& flags);

/// $XDG_CACHE_HOME/cxr or ~/.cache/cxr (the CLI owns environment lookups).
std::string default_cache_dir();

void register_explore(CLI::App& app);

}  // namespace cxr::cli
