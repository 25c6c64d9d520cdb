#include <iostream>

#include "cli.h"
#include "cxr/common/error.h"
#include "cxr/dist/dist.h"
#include "cxr/tune/tune.h"
#include "dist_threads.h"
#include "launch.h"

namespace cxr::cli {

void register_tune(CLI::App& app) {
  struct Flags {
    std::string data;
    std::vector<std::string> grid;
    std::string config;
    RuntimeFlags runtime;
    DataFlags data_flags;
    tune::TuneOptions tune;
    DistFlags dist;
  };
  auto f = std::make_shared<Flags>();
  f->tune.base.train.epochs = tune::kDefaultEpochs;
  auto* cmd = app.add_subcommand(
      "tune",
      "Hyper-parameter search (grid, random, sequential), resumable, with "
      "an optional refit of the best configuration on train+val");
  add_data_folder(*cmd, f->data);
  cmd->add_option("--grid", f->grid,
                  "search space tokens, e.g. filters=8,32,64 dropout=0.4,0.3 "
                  "lr=1e-3,1e-4 optimizer=adam,sgd (random mode also takes "
                  "lr=1e-5..1e-2)");
  cmd->add_option("--config", f->config,
                  "search space as JSON: {\"lr\": [0.001, 0.0001], ...}");
  add_default(*cmd, "--mode", f->tune.mode, "grid, random or sequential");
  add_default(*cmd, "--trials", f->tune.trials,
              "random mode: number of trials");
  add_checked(*cmd, "--search-seed", f->tune.seed, "random mode: seed",
              seed_value());
  add_default(*cmd, "--metric", f->tune.metric,
              "val_loss, val_accuracy, val_auc or val_recall");
  // Unset unless given (no limit); a typed value must be a real budget.
  cmd->add_option_function<double>(
         "--budget-minutes",
         [f](const double& v) { f->tune.budget_minutes = v; },
         "stop starting trials after this many minutes, > 0 (default: no "
         "limit)")
      ->check(number_in(0, 1e9, true));
  cmd->add_flag("--refit", f->tune.refit,
                "train the best configuration on train+val for its best "
                "epoch count and evaluate it on test");
  add_default(*cmd, "--out", f->tune.out_dir, "output folder");
  cmd->add_flag("--overwrite", f->tune.overwrite,
                "start afresh in --out (its trials are deleted); without it, "
                "stored trials are reused only if all settings match");
  add_model_train_flags(*cmd, f->tune.base);
  add_data_flags(*cmd, f->data_flags);
  add_runtime_flags(*cmd, f->runtime);
  add_dist_flags(*cmd, f->dist);
  cmd->callback([f, cmd] {
    auto& t = f->tune;
    if (!f->config.empty() && !f->grid.empty()) {
      throw ConfigError("give either --grid or --config, not both");
    }
    t.space = !f->config.empty()
                  ? tune::read_space_file(f->config)
                  : tune::parse_space(
                        f->grid.empty() ? tune::default_space(t.base.model.arch)
                                        : f->grid);
    bool optimizer_varies = false;
    for (const auto& p : t.space.params) {
      optimizer_varies = optimizer_varies || p.name == "optimizer";
    }
    check_model_train_flags(*cmd, t.base, optimizer_varies);
    // Distributed: every rank trains whole trials, each in one process
    // with its share of the cores (docs/distributed.md).
    if (t.mode == "sequential" && f->dist.nproc * f->dist.nnodes > 1) {
      // Before the workers start: one error line, not one per rank.
      throw ConfigError(
          "--mode sequential runs one trial after another (each parameter "
          "at the best value so far), so it cannot spread over ranks: use "
          "--mode grid or random with --nproc, or drop --nproc");
    }
    launch_or_join(f->dist, f->runtime.device);
    share_threads(f->runtime.threads);
    apply_runtime(f->runtime);
    t.base.data = finish_data(f->data_flags, f->data, f->runtime);
    t.base.model.input_size = t.base.data.size;
    t.base.device = f->runtime.device;
    const auto result = tune::run_tune(t);
    if (dist::world().is_main()) std::cout << tune::format_summary(result);
  });
}

}  // namespace cxr::cli
