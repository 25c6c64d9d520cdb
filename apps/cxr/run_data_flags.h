#pragma once
/// Flags of the commands that score a run's own dataset (calibrate,
/// evaluate, explain): the runtime flags and --no-cache, and what each of
/// them does with them after parsing.
#include "cli.h"

namespace cxr::cli {

struct RunDataFlags {
  RuntimeFlags runtime;
  bool no_cache = false;
};

/// --no-cache and --device, --threads, --precision.
inline void add_run_data_flags(CLI::App& cmd, RunDataFlags& flags) {
  add_no_cache_flag(cmd, flags.no_cache);
  add_runtime_flags(cmd, flags.runtime);
}

/// What each of them does after parsing (as finish_data for the commands
/// that read a dataset folder): applies --threads and --precision
/// (apply_runtime) and returns the stage's options (any Options with
/// `device` and `cache_dir`: EvalOptions, ExplainOptions, TrustOptions)
/// with the device and the decoded-image cache filled in.
template <class Options>
Options finish_run_data(const RunDataFlags& flags, Options o) {
  apply_runtime(flags.runtime);
  o.device = flags.runtime.device;
  o.cache_dir = cache_dir_unless(flags.no_cache);
  return o;
}

/// The flags of such a command: the flags above and the stage's Options
/// that its own flags fill. Each command's `Flags` derives from it and adds
/// only what that command alone has.
template <class Options>
struct RunDataCommand {
  RunDataFlags flags;
  Options options;
  /// finish_run_data of the two: the options the stage is called with.
  Options finish() const { return finish_run_data(flags, options); }
};

}  // namespace cxr::cli
