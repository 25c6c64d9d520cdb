#include <iomanip>
#include <iostream>

#include "cli.h"
#include "cxr/common/error.h"
#include "cxr/dist/dist.h"
#include "cxr/evaluate/evaluate.h"
#include "cxr/evaluate/ood_sets.h"
#include "dist_threads.h"
#include "launch.h"
#include "run_data_flags.h"

namespace cxr::cli {

void register_evaluate(CLI::App& app) {
  struct Flags : RunDataCommand<evaluate::EvalOptions> {
    bool ood_sets = false;
    std::string shared;
    DistFlags dist;
  };
  auto f = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand(
      "evaluate",
      "Evaluate a run on a split: confusion matrix, metrics with 95% "
      "bootstrap CIs, ROC");
  add_run_folder(*cmd, f->options.run_dir);
  add_default(*cmd, "--split", f->options.split, "train, val or test");
  add_run_data(*cmd, f->options.data_root);
  // Unset unless given; typed values are range-checked while parsing.
  cmd->add_option_function<double>(
         "--threshold", [f](const double& v) { f->options.threshold = v; },
         "decision threshold on the calibrated P(positive), in [0, 1] "
         "(default: the run's)")
      ->check(number_in(0, 1));
  cmd->add_option_function<double>(
         "--target-sensitivity",
         [f](const double& v) { f->options.target_sensitivity = v; },
         "choose the threshold on validation for this sensitivity, in (0, 1]")
      ->check(number_in(0, 1, true, false));
  cmd->add_flag("--balanced-threshold", f->options.balanced_threshold,
                "choose the threshold on validation that maximises "
                "sensitivity + specificity (Youden's J)");
  add_default(*cmd, "--bootstrap", f->options.bootstrap,
              "bootstrap replicates");
  add_checked(*cmd, "--batch-size", f->options.batch_size,
              "images per forward pass (with --nproc, each rank scores "
              "whole batches)",
              integer_in(1, 65536));
  cmd->add_option("--out", f->options.out_dir,
                  "output folder (default RUN/eval-SPLIT)");
  cmd->add_flag("--skip-bad", f->options.skip_bad,
                "leave unreadable images out (listed, and counted in "
                "metrics.json) instead of stopping at the first");
  cmd->add_flag("--ood-sets", f->ood_sets,
                "instead: score the out-of-distribution warning on the OOD "
                "evaluation sets (photos, other body parts, rotated, "
                "inverted, cropped, blurred, noise, text) against the test "
                "split; writes RUN/eval-ood/ood.json");
  cmd->add_option("--shared", f->shared,
                  "with --ood-sets: the shared folder with weights/ and "
                  "data/dicom/ (default ../shared)");
  add_run_data_flags(*cmd, f->flags);
  add_dist_flags(*cmd, f->dist);
  cmd->callback([f] {
    if (f->ood_sets && f->options.skip_bad) {
      throw ConfigError(
          "--skip-bad does not apply to --ood-sets, which scores every "
          "image of the split; drop --skip-bad");
    }
    if (f->ood_sets && f->dist.nproc * f->dist.nnodes > 1) {
      throw ConfigError(
          "--ood-sets runs in one process; drop --nproc/--nnodes");
    }
    // Sharded: each rank scores a part of the split, rank 0 the metrics.
    launch_or_join(f->dist, f->flags.runtime.device);
    share_threads(f->flags.runtime.threads);
    const auto e = f->finish();
    const bool main = dist::world().is_main();
    // Writes RUN/eval-SPLIT (and on test the model card): one writer per
    // run, as cxr train and calibrate; rank 0 alone writes.
    const auto lock =
        main ? lock_run_for_writing(e.run_dir, e.out_dir) : nullptr;
    if (f->ood_sets) {
      evaluate::OodEvalOptions oo;
      oo.run_dir = e.run_dir;
      oo.data_root = e.data_root;
      oo.out_dir = e.out_dir;
      oo.split = e.split;
      oo.device = e.device;
      oo.shared_dir = f->shared.empty() ? default_shared_dir() : f->shared;
      without_skip_bad_hint("evaluate --ood-sets", [&] {
        std::cout << evaluate::format_ood(evaluate::evaluate_ood(oo));
      });
      return;
    }
    // Without --skip-bad the first unreadable image is a DataError naming
    // it and suggesting --skip-bad.
    const auto r = evaluate::evaluate_run(e);
    if (!main) return;
    list_skipped(r.skipped);
    std::cout << evaluate::format_summary(r);
    std::cout << "wrote "
              << (e.out_dir.empty() ? e.run_dir + "/eval-" + e.split
                                    : e.out_dir)
              << "/{metrics.json,predictions.csv,confusion.png,roc.png,"
                 "reliability.png}\n";
  });
}

void register_predict(CLI::App& app) {
  struct Flags {
    RuntimeFlags runtime;
    evaluate::PredictOptions predict;
    DistFlags dist;
  };
  auto f = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand("predict",
                                 "Predict P(COVID) for image files or folders");
  add_run_folder(*cmd, f->predict.run_dir);
  cmd->add_option("images", f->predict.inputs, "image files or folders")
      ->required();
  // Unset unless given; a typed value is range-checked while parsing.
  cmd->add_option_function<double>(
         "--threshold", [f](const double& v) { f->predict.threshold = v; },
         "decision threshold on the calibrated P(positive), in [0, 1] "
         "(default: the run's)")
      ->check(number_in(0, 1));
  cmd->add_option("--csv", f->predict.csv_path, "write predictions as CSV");
  cmd->add_option("--json", f->predict.json_path, "write predictions as JSON");
  cmd->add_flag("--skip-bad", f->predict.skip_bad,
                "report unreadable images and predict the rest");
  add_checked(*cmd, "--batch-size", f->predict.batch_size,
              "images per forward pass (with --nproc, each rank scores "
              "whole batches)",
              integer_in(1, 65536));
  add_runtime_flags(*cmd, f->runtime);
  add_dist_flags(*cmd, f->dist);
  cmd->callback([f] {
    // Sharded: each rank scores a part of the files, rank 0 writes them.
    launch_or_join(f->dist, f->runtime.device);
    share_threads(f->runtime.threads);
    apply_runtime(f->runtime);
    auto p = f->predict;
    p.device = f->runtime.device;
    std::string pos;
    auto preds = evaluate::predict_files(p, &pos);
    if (!dist::world().is_main()) return;
    size_t w = 4;
    for (const auto& r : preds) w = std::max(w, r.file.size());
    std::cout << std::left << std::setw(static_cast<int>(w)) << "file"
              << "  P(" << pos << ")  decision  in-distribution\n";
    bool any_error = false, any_flag = false;
    for (const auto& r : preds) {
      std::cout << std::left << std::setw(static_cast<int>(w)) << r.file
                << "  ";
      if (r.error.empty()) {
        std::cout << std::fixed << std::setprecision(4) << std::setw(8) << r.p
                  << "  " << std::setw(8) << r.decision << "  "
                  << (r.in_distribution ? "yes" : "NO") << "\n";
        for (const auto& why : r.reasons) {
          std::cout << "    warning: " << why << "\n";
        }
        any_flag = any_flag || !r.in_distribution;
      } else {
        any_error = true;
        std::cout << "error: " << r.error << "\n";
      }
    }
    if (any_flag) {
      std::cerr << "cxr: some images are out of distribution (warnings "
                   "above): their P("
                << pos << ") means nothing\n";
    }
    if (any_error) {
      std::cerr << "cxr: some images could not be read (listed above)\n";
    }
  });
}

}  // namespace cxr::cli
