#include <iomanip>
#include <iostream>

#include "cli.h"
#include "cxr/common/runtime.h"
#include "cxr/explain/explain.h"
#include "cxr/infer/run_config.h"

namespace cxr::cli {

void register_explain(CLI::App& app) {
  struct Flags {
    RuntimeFlags runtime;
    explain::ExplainOptions explain;
    bool list_layers = false;
    bool no_cache = false;
  };
  auto f = std::make_shared<Flags>();
  auto& o = f->explain;
  auto* cmd = app.add_subcommand(
      "explain",
      "Grad-CAM panels (original | COVID | Normal evidence) for images, "
      "folders or a split's misclassified images; optional trust checks");
  cmd->add_option("run", o.run_dir, "run folder from cxr train")->required();
  cmd->add_option("images", o.inputs,
                  "image files or folders (a parent folder named like a "
                  "class gives the true label)");
  cmd->add_option("--out", o.out_dir,
                  "output folder (default RUN/explain): panels/, records/, "
                  "thumbs/, index.html, summary.json");
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
  cmd->add_option("--data", o.data_root,
                  "dataset folder (default: the one the run was trained on)");
  cmd->add_option("--limit", o.limit, "explain at most N images (0 = all)")
      ->capture_default_str();
  cmd->add_flag("--trust", o.trust,
                "also run the trust checks: model randomisation, deletion, "
                "lung-field vs border energy (trust.json)");
  cmd->add_option("--randomize-modules", o.trust_options.randomize_modules,
                  "trust: modules re-initialised from the output back "
                  "(0 = head and last convolution)")
      ->capture_default_str();
  cmd->add_option("--batch-size", o.batch_size, "images per forward pass")
      ->capture_default_str();
  cmd->add_flag("--no-cache", f->no_cache, "do not use the decoded cache");
  cmd->add_flag("--skip-bad", o.skip_bad,
                "with --split: leave unreadable images out (listed, and in "
                "summary.json and index.html) instead of stopping");
  add_runtime_flags(*cmd, f->runtime);
  cmd->callback([f] {
    apply_runtime(f->runtime);
    auto o = f->explain;
    if (f->list_layers) {
      const auto cfg = infer::read_run_config(o.run_dir);
      auto model =
          infer::load_model(o.run_dir, cfg.model, torch::Device(torch::kCPU));
      const auto def = model->default_tap();
      for (const auto& name : model->tap_names()) {
        std::cout << name << (name == def ? "  (default)" : "") << "\n";
      }
      return;
    }
    o.device = f->runtime.device;
    o.cache_dir = f->no_cache ? "" : default_cache_dir();
    // Writes RUN/explain by default: one writer per run.
    const auto lock = lock_run_for_writing(o.run_dir, o.out_dir);
    nlohmann::json s;
    if (o.inputs.empty()) {
      // A split: without --skip-bad the first unreadable image is a
      // DataError naming it and suggesting --skip-bad.
      s = explain::explain_run(o);
      list_skipped(s.value("skipped", nlohmann::json::array()));
    } else {
      without_skip_bad_hint(
          "explain", [&] { s = explain::explain_run(o); },
          "takes --skip-bad only with --split");
    }
    std::cout << "explained " << s["images"].get<int64_t>() << " "
              << s["source"].get<std::string>() << " on layer "
              << s["layer"].get<std::string>() << " (" << std::fixed
              << std::setprecision(1)
              << s["gradcam_images_per_second"].get<double>()
              << " img/s for prediction + both maps)\n";
    if (s.contains("trust")) {
      const auto& t = s["trust"];
      const auto& rz = t["randomization"];
      std::cout << "randomisation check: mean rank correlation "
                << std::setprecision(3)
                << (rz["mean_rank_correlation"].is_null()
                        ? NAN
                        : rz["mean_rank_correlation"].get<double>())
                << (rz["untrustworthy"].get<bool>()
                        ? "  -> UNTRUSTWORTHY: the maps barely depend on "
                          "the model's weights\n"
                        : "  (maps depend on the model)\n");
      const auto& d = t["deletion"];
      std::cout << "deletion, drop of P(predicted): ";
      for (size_t i = 0; i < d["fractions"].size(); ++i) {
        auto v = [](const nlohmann::json& x) {
          return x.is_null() ? NAN : x.get<double>();
        };
        std::cout << (i ? ", " : "") << std::setprecision(0)
                  << 100 * d["fractions"][i].get<double>() << "%: map "
                  << std::setprecision(3) << v(d["mean_drop_guided"][i])
                  << " vs random " << v(d["mean_drop_random"][i]);
      }
      std::cout << "\n";
      const auto& e = t["energy"]["mean"];
      auto v = [](const nlohmann::json& x) {
        return x.is_null() ? NAN : x.get<double>();
      };
      std::cout << "map energy: lung field " << std::setprecision(3)
                << v(e["lung"]) << ", border " << v(e["border"])
                << " (uniform map: " << v(t["energy"]["uniform_map"]["lung"])
                << ", " << v(t["energy"]["uniform_map"]["border"]) << ")\n";
    }
    std::cout << "wrote " << s["out"].get<std::string>()
              << "/{index.html,summary.json,panels/,records/,thumbs/}"
              << (s.contains("trust") ? " and trust.json" : "") << "\n";
  });
}

}  // namespace cxr::cli
