#include "cli.h"

namespace cxr::cli {
void register_explore(CLI::App& app) {
  app.add_subcommand("explore", "Summarise a dataset");
}
}  // namespace cxr::cli
