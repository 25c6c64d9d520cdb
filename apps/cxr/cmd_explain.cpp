#include <iostream>

#include "cxr/common/runtime.h"
#include "cxr/explain/explain.h"
#include "run_data_flags.h"

namespace cxr::cli {

void register_explain(CLI::App& app) {
  struct Flags : RunDataCommand<explain::ExplainOptions> {
    bool list_layers = false;
  };
  auto f = std::make_shared<Flags>();
  auto& o = f->options;
  auto* cmd = app.add_subcommand(
      "explain",
      "Grad-CAM panels (original | COVID | Normal evidence) for images, "
      "folders or a split's misclassified images; optional trust checks");
  add_run_folder(*cmd, o.run_dir);
  cmd->add_option("images", o.inputs,
                  "image files or folders (a parent folder named like a "
                  "class gives the true label)");
  cmd->add_option("--out", o.out_dir,
                  "output folder (default RUN/explain): panels/, records/, "
                  "thumbs/, index.html, summary.json (maps/ with --save-maps)");
  cmd->add_option("--layer", o.layer,
                  "layer to explain (default: the last conv feature map; "
                  "see --list-layers)");
  cmd->add_flag("--list-layers", f->list_layers,
                "print the layers Grad-CAM can use and exit");
  cmd->add_option("--split", o.split,
                  "explain a split of the run's data: train, val or test");
  cmd->add_flag("--misclassified", o.misclassified,
                "only the split's wrong predictions at the run's threshold "
                "(split defaults to test)");
  add_run_data(*cmd, o.data_root);
  add_default(*cmd, "--limit", o.limit, "explain at most N images (0 = all)");
  cmd->add_flag("--trust", o.trust,
                "also run the trust checks: model randomisation, deletion, "
                "lung-field vs border energy (trust.json)");
  add_default(*cmd, "--randomize-modules", o.trust_options.randomize_modules,
              "trust: steps of the randomisation cascade, layers "
              "re-initialised from the output back (0 = all, down to the "
              "first layer)");
  cmd->add_flag("--save-maps", o.save_maps,
                "also write the raw float maps as NumPy files: "
                "maps/NNNN_<name>_<class>.npy, [size, size] float32");
  add_default(*cmd, "--batch-size", o.batch_size, "images per forward pass");
  cmd->add_flag("--skip-bad", o.skip_bad,
                "with --split: leave unreadable images out (listed, and in "
                "summary.json and index.html) instead of stopping");
  add_run_data_flags(*cmd, f->flags);
  cmd->callback([f] {
    const auto o = f->finish();
    if (f->list_layers) {
      std::cout << explain::list_layers(o.run_dir).format();
      return;
    }
    // Writes RUN/explain by default: one writer per run.
    const auto lock = lock_run_for_writing(o.run_dir, o.out_dir);
    explain::ExplainResult r;
    if (o.inputs.empty()) {
      // A split: without --skip-bad the first unreadable image is a
      // DataError naming it and suggesting --skip-bad.
      r = explain::explain_run(o);
      list_skipped(r.skipped_json());
    } else {
      without_skip_bad_hint(
          "explain", [&] { r = explain::explain_run(o); },
          "takes --skip-bad only with --split");
    }
    std::cout << explain::format_summary(r);
  });
}

}  // namespace cxr::cli
