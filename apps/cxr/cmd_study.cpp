#include <iostream>

#include "cli.h"
#include "cxr/common/error.h"
#include "cxr/report/report.h"
#include "cxr/study/study.h"

namespace cxr::cli {

void register_study(CLI::App& app) {
  struct Flags {
    std::string data;
    RuntimeFlags runtime;
    DataFlags data_flags;
    study::StudyOptions study;
    bool no_weights = false;
  };
  auto f = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand(
      "study",
      "Run the whole study (explore, tune, baseline, MobileNetV2 transfer, "
      "evaluation with CIs, Grad-CAM, report); re-running resumes");
  cmd->add_option("--data", f->data,
                  "dataset folder (default: $CXR_DATA, else "
                  "../shared/data/cxr-seed)");
  add_default(*cmd, "--out", f->study.out_dir, "study folder");
  cmd->add_option("--weights", f->study.weights,
                  "MobileNetV2 Keras ImageNet weights (default: "
                  "../shared/weights/mobilenet_v2_1.0_224_imagenet_notop.h5 "
                  "when present)");
  cmd->add_option("--shared", f->study.shared_dir,
                  "folder with weights/test_images and data/dicom for the "
                  "out-of-distribution sets (default ../shared)");
  cmd->add_flag("--no-weights", f->no_weights,
                "train MobileNetV2 from random initialisation");
  cmd->add_flag("!--no-transfer", f->study.transfer, "skip the transfer model");
  add_default(*cmd, "--transfer-size", f->study.transfer_size,
              "MobileNetV2 input size in pixels (--size sets the "
              "baseline's)");
  cmd->add_flag("--quick", f->study.quick,
                "a few minutes: 64 px, one trial, 1-2 epochs (smoke test)");
  cmd->add_flag("--full-grid", f->study.full_grid,
                "the study's full 54-trial baseline grid (hours on a CPU)");
  add_data_flags(*cmd, f->data_flags);
  // The study's recipe (version 4) is timed and validated in bfloat16 on
  // CPUs that compute it natively (docs/study.md); elsewhere it is fp32.
  f->runtime.precision = "auto";
  add_runtime_flags(*cmd, f->runtime);
  cmd->callback([f] {
    apply_runtime(f->runtime);
    auto& s = f->study;
    s.data = finish_data(f->data_flags, f->data, f->runtime);
    if (s.data.root.empty()) {
      throw ConfigError(
          "no data: pass --data DIR or set CXR_DATA. Get the COVID-19 "
          "Radiography Database (Kaggle, 'tawsifurrahman/"
          "covid19-radiography-database'); cxr reads its flat layout "
          "ROOT/<CLASS>/images/*.png (keep COVID and Normal) or a split "
          "layout ROOT/{train,val,test}/<CLASS>/*.png");
    }
    // A missing default file is refused by run_study, not random init.
    s.random_init = f->no_weights;
    if (!f->no_weights && s.weights.empty())
      s.weights = study::default_weights();
    if (s.shared_dir.empty()) s.shared_dir = default_shared_dir();
    s.device = f->runtime.device;
    s.threads = f->runtime.threads;
    std::cout << study::format_summary(study::run_study(s));
  });
}

void register_report(CLI::App& app) {
  auto o = std::make_shared<report::ReportOptions>();
  auto* cmd = app.add_subcommand(
      "report",
      "Write one self-contained HTML report from a study folder or "
      "run folders");
  cmd->add_option("inputs", o->inputs, "study folder or run folders")
      ->required();
  add_default(*cmd, "--out", o->out_path, "HTML file to write");
  add_default(*cmd, "--split", o->split, "evaluation split to report");
  cmd->callback([o] {
    const report::ReportSummary r = report::write_report(*o);
    std::cout << "wrote " << r.path << " (" << r.sections.size()
              << " sections, " << r.models.size() << " models)\n";
  });
}

}  // namespace cxr::cli
