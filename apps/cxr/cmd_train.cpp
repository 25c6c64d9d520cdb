#include <iostream>

#include "cli.h"
#include "cxr/common/error.h"
#include "cxr/common/runtime.h"
#include "cxr/dist/dist.h"
#include "cxr/train/run.h"
#include "launch.h"

namespace cxr::cli {

/// Flags of the model and the training loop, shared with tune and study.
void add_model_train_flags(CLI::App& cmd, train::RunOptions& o) {
  auto& m = o.model;
  auto& t = o.train;
  add_checked(cmd, "--model", m.arch, "baseline, mobilenetv2 or resnet50v2",
              one_of({"baseline", "mobilenetv2", "resnet50v2"}));
  cmd.add_option("--filters", m.filters,
                 "baseline: channels of each conv block, e.g. 32,64,128")
      ->delimiter(',')
      ->capture_default_str();
  add_default(cmd, "--batch-norm", m.batch_norm,
              "baseline: batch norm after each conv (true/false)");
  add_default(cmd, "--dropout", m.dropout, "dropout before the output layer");
  add_default(cmd, "--head-units", m.head_units,
              "transfer: units of the Dense(relu) head");
  cmd.add_option("--weights", o.weights,
                 "transfer: Keras .h5 ImageNet weights (with or without top)");
  add_default(cmd, "--optimizer", t.optimizer, "adam, sgd or rmsprop");
  add_default(cmd, "--lr", t.lr, "learning rate");
  add_checked(cmd, "--momentum", t.momentum,
              "sgd momentum, in [0, 1) (adam and rmsprop do not use it)",
              number_in(0, 1, false, true));
  add_checked(cmd, "--weight-decay", t.weight_decay,
              "L2 weight decay, in [0, 1)", number_in(0, 1, false, true));
  add_default(cmd, "--batch-size", t.batch_size, "images per step");
  add_checked(cmd, "--epochs", t.epochs,
              "max epochs, 1..10000 (transfer: of the frozen phase, which "
              "may be 0 with --fine-tune-epochs)",
              integer_in(0, 10000));
  add_default(cmd, "--patience", t.patience,
              "early stopping: epochs without val-loss improvement (0=off)");
  add_default(cmd, "--lr-patience", t.lr_patience,
              "halve the lr after this many epochs without improvement");
  add_default(cmd, "--schedule", t.schedule,
              "lr schedule per phase: plateau (halve on plateaus) or "
              "cosine (anneal to lr/100)");
  add_checked(cmd, "--seed", t.seed,
              "seed of weights, order, augmentation (0..2^63-1)", seed_value());
  cmd.add_flag("!--no-augment", t.augment, "disable augmentation");
  add_augment_flags(cmd, t.augmentation);
  add_default(cmd, "--fine-tune-epochs", t.fine_tune_epochs,
              "transfer: epochs with the backbone unfrozen");
  add_default(cmd, "--fine-tune-lr", t.fine_tune_lr,
              "transfer: learning rate of fine-tuning");
  cmd.add_option("--unfreeze-from", t.unfreeze_from,
                 "transfer: unfreeze only from this Keras layer on");
  add_default(cmd, "--train-on", t.train_on,
              "train (early stopping on val) or train+val (refit, fixed "
              "--epochs)");
  // Unset unless given; a typed value must be a real sensitivity.
  cmd.add_option_function<double>(
         "--target-sensitivity",
         [&o](const double& v) { o.target_sensitivity = v; },
         "choose the decision threshold on validation for this "
         "sensitivity, in (0, 1] (default: threshold 0.5)")
      ->check(number_in(0, 1, true, false));
  cmd.add_flag("--balanced-threshold", o.balanced_threshold,
               "choose the decision threshold on validation that maximises "
               "sensitivity + specificity (Youden's J)");
  add_default(cmd, "--keep", t.keep,
              "with validation: best (weights of the lowest val loss) or "
              "last (the schedule's end, as a refit of the recipe ends)");
}

void check_model_train_flags(const CLI::App& cmd,
                             const train::RunOptions& o,
                             bool optimizer_varies) {
  if (cmd.count("--momentum") > 0 && o.train.optimizer != "sgd" &&
      !optimizer_varies) {
    throw ConfigError("--momentum applies to --optimizer sgd only (" +
                      o.train.optimizer +
                      " does not use it); drop --momentum or pass "
                      "--optimizer sgd");
  }
  if (o.train.epochs == 0 &&
      (!models::is_transfer(o.model.arch) || o.train.fine_tune_epochs == 0)) {
    throw ConfigError(
        "--epochs 0 trains nothing and would write an untrained model; give "
        "--epochs N >= 1 (a transfer model may skip its frozen phase only "
        "with --fine-tune-epochs N)");
  }
}

void register_train(CLI::App& app) {
  struct Flags {
    std::string data;
    RuntimeFlags runtime;
    DataFlags data_flags;
    train::RunOptions run;
    DistFlags dist;
  };
  auto f = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand("train", "Train a model into a run folder");
  add_data_folder(*cmd, f->data);
  add_default(*cmd, "--out", f->run.out_dir, "run folder to write");
  cmd->add_flag("--resume", f->run.resume, "continue an interrupted run");
  cmd->add_flag("--overwrite", f->run.overwrite,
                "replace the run in --out (swapped in when the new one is "
                "complete)");
  cmd->add_flag("!--quiet", f->run.train.progress, "no progress bar");
  add_model_train_flags(*cmd, f->run);
  cmd->add_option("--threshold-from", f->run.threshold_from,
                  "refit: use the decision threshold and calibration "
                  "temperature that this run (same recipe, trained on "
                  "train) chose on validation");
  add_checked(*cmd, "--ood-false-flag-rate", f->run.ood.false_flag_rate,
              "share of validation images the out-of-distribution "
              "warning may flag",
              CLI::Range(0.001, 0.5));
  add_data_flags(*cmd, f->data_flags);
  add_runtime_flags(*cmd, f->runtime);
  add_dist_flags(*cmd, f->dist);
  cmd->callback([f, cmd] {
    check_model_train_flags(*cmd, f->run);
    // Data-parallel: each rank takes batch-size / world images per step.
    const int world = f->dist.nproc * f->dist.nnodes;
    if (f->run.train.batch_size % world != 0) {
      throw ConfigError("--batch-size " +
                        std::to_string(f->run.train.batch_size) +
                        " must be a multiple of the " + std::to_string(world) +
                        " ranks (--nproc x --nnodes): each rank takes an "
                        "equal share of every batch");
    }
    launch_or_join(f->dist, f->runtime.device);
    apply_runtime(f->runtime);
    auto& r = f->run;
    r.data = finish_data(f->data_flags, f->data, f->runtime);
    r.model.input_size = r.data.size;
    r.device = f->runtime.device;
    r.command = command_line();
    // A resumed run refuses flags that differ from the saved ones.
    for (const auto* opt : cmd->get_options()) {
      if (opt->count() > 0) r.flags_given.insert(opt->get_name());
    }
    auto result = train::train_run(r);
    // Rank 0 wrote the run; the other ranks only trained.
    if (dist::world().is_main()) std::cout << train::format_summary(result);
  });
}

}  // namespace cxr::cli
