#include <iostream>

#include "cli.h"
#include "cxr/augment/augment.h"
#include "cxr/common/error.h"
#include "cxr/data/explore.h"

namespace cxr::cli {

void register_explore(CLI::App& app) {
  struct Flags {
    std::string data;
    RuntimeFlags runtime;
    DataFlags data_flags;
    data::ExploreOptions explore;
    bool augment_preview = false;
    augment::AugmentOptions augment;
  };
  auto f = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand(
      "explore",
      "Summarise a dataset: counts, sizes, pixel statistics, histograms, "
      "sample grid, duplicate/leakage check");
  cmd->add_option(
      "data", f->data,
      "dataset folder (default: $CXR_DATA or ../shared/data/cxr-seed)");
  cmd->add_option("--out", f->explore.out_dir, "output folder")
      ->capture_default_str();
  cmd->add_option("--samples", f->explore.samples_per_class,
                  "sample images per class in samples.png")
      ->capture_default_str();
  cmd->add_option("--near-similarity", f->explore.duplicates.min_similarity,
                  "fingerprint correlation at which two images are "
                  "near-duplicates, in (0, 1]")
      ->capture_default_str()
      ->check(number_in(0, 1, true, false));
  cmd->add_flag("--augment-preview", f->augment_preview,
                "also write augment.png: training samples after random "
                "augmentation");
  cmd->add_option("--width-shift", f->augment.width_shift,
                  "augmentation: max width shift (fraction)")
      ->capture_default_str();
  cmd->add_option("--rotation", f->augment.rotation_deg,
                  "augmentation: max rotation (degrees)")
      ->capture_default_str();
  cmd->add_option("--zoom", f->augment.zoom,
                  "augmentation: max zoom (fraction)")
      ->capture_default_str();
  add_data_flags(*cmd, f->data_flags);
  add_runtime_flags(*cmd, f->runtime, /*runs_model=*/false);
  cmd->callback([f] {
    apply_runtime(f->runtime);
    const auto opts = finish_data(f->data_flags, f->data, f->runtime);
    auto ds = data::load_dataset(opts);
    auto summary = data::explore(ds, f->explore);
    std::cout << data::format_summary(summary) << "wrote " << f->explore.out_dir
              << "/{summary.json,histograms.png,samples.png,duplicates.csv}\n";
    if (f->augment_preview) {
      const std::string p = f->explore.out_dir + "/augment.png";
      augment::write_preview(ds.split(data::Split::kTrain).images, f->augment,
                             p);
      std::cout << "wrote " << p << "\n";
    }
  });
}

}  // namespace cxr::cli
