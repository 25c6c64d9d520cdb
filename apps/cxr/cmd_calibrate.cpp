#include <iostream>

#include "cxr/infer/fit_trust.h"
#include "run_data_flags.h"

namespace cxr::cli {

void register_calibrate(CLI::App& app) {
  struct Flags : RunDataCommand<infer::TrustOptions> {
    std::string run;
  };
  auto f = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand(
      "calibrate",
      "Fit a run's calibration (temperature scaling on validation) and "
      "out-of-distribution detector, and write its model card (cxr train "
      "does this itself; use it for runs made by an older cxr)");
  add_run_folder(*cmd, f->run);
  cmd->add_option("--from", f->options.from,
                  "for a run trained on train+val: the train-only run of the "
                  "same recipe whose temperature and held-out detector shift "
                  "it carries over");
  add_run_data(*cmd, f->options.data_root);
  add_checked(*cmd, "--ood-false-flag-rate", f->options.ood.false_flag_rate,
              "share of validation images the warning may flag",
              CLI::Range(0.001, 0.5));
  add_checked(*cmd, "--ood-layers", f->options.ood.layers,
              "model layers the detector models (spread early to late)",
              CLI::Range(1, 16));
  add_default(*cmd, "--ood-input-layer", f->options.ood.input_layer,
              "also model the input image itself (8 x 8 grid of cell "
              "means and stds)");
  add_default(*cmd, "--ood-combine", f->options.ood.combine,
              "how the layers' standardised distances combine: mean or "
              "max");
  add_run_data_flags(*cmd, f->flags);
  cmd->callback([f] {
    const auto t = f->finish();
    // Rewrites config.json, ood.safetensors and model-card.md: one writer
    // per run, so a train or calibrate of the same run cannot mix its files
    // in.
    const auto lock = lock_run_for_writing(f->run, "");
    nlohmann::json cfg;
    without_skip_bad_hint("calibrate",
                          [&] { cfg = infer::fit_trust(f->run, t); });
    std::cout << infer::format_trust_summary(cfg);
    std::cout << "wrote " << f->run
              << "/{config.json,ood.safetensors,model-card.md}\n";
  });
}

}  // namespace cxr::cli
