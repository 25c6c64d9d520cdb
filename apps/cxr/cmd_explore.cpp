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
  add_data_folder(*cmd, f->data);
  add_default(*cmd, "--out", f->explore.out_dir, "output folder");
  add_default(*cmd, "--samples", f->explore.samples_per_class,
              "sample images per class in samples.png");
  add_checked(*cmd, "--near-similarity", f->explore.duplicates.min_similarity,
              "fingerprint correlation at which two images are "
              "near-duplicates, in (0, 1]",
              number_in(0, 1, true, false));
  cmd->add_flag("--augment-preview", f->augment_preview,
                "also write augment.png: training samples after random "
                "augmentation");
  add_augment_flags(*cmd, f->augment);
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
