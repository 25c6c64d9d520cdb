// The settings of a run as config.json records them (run_settings, the
// data description) and the check that a resumed run keeps them: which flag
// sets which setting, and what a resume takes from the saved run.
#include "run_settings.h"

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/models/transfer.h"
#include "cxr/train/run.h"
#include "cxr/train/run_dir.h"

namespace fs = std::filesystem;

namespace cxr::train {
namespace {

// Settings a resumed run must keep, by the flag that sets them, as JSON
// pointers into run_settings() / saved_settings().
struct ResumeFlag {
  const char* flag;
  const char* pointer;
};
constexpr ResumeFlag kResumeFlags[] = {
    {"--model", "/model/arch"},
    {"--filters", "/model/filters"},
    {"--batch-norm", "/model/batch_norm"},
    {"--dropout", "/model/dropout"},
    {"--head-units", "/model/head_units"},
    {"--weights", "/weights"},
    {"--optimizer", "/train/optimizer"},
    {"--lr", "/train/lr"},
    {"--momentum", "/train/momentum"},
    {"--weight-decay", "/train/weight_decay"},
    {"--batch-size", "/train/batch_size"},
    {"--epochs", "/train/epochs"},
    {"--patience", "/train/patience"},
    {"--lr-patience", "/train/lr_patience"},
    {"--schedule", "/train/schedule"},
    {"--seed", "/train/seed"},
    {"--no-augment", "/train/augment"},
    {"--width-shift", "/train/augmentation/width_shift"},
    {"--rotation", "/train/augmentation/rotation_deg"},
    {"--zoom", "/train/augmentation/zoom"},
    {"--fine-tune-epochs", "/train/fine_tune_epochs"},
    {"--fine-tune-lr", "/train/fine_tune_lr"},
    {"--unfreeze-from", "/train/unfreeze_from"},
    {"--train-on", "/train/train_on"},
    {"--keep", "/train/keep"},
    {"--size", "/data/size"},
    {"--split-seed", "/data/seed"},
    {"--train-fraction", "/data/train_fraction"},
    {"--val-fraction", "/data/val_fraction"},
    {"--positive", "/data/positive"}};

}  // namespace

nlohmann::json run_settings(const RunOptions& o) {
  return {{"model", o.model.to_json()},
          {"train", o.train.to_json()},
          {"weights", models::is_transfer(o.model.arch) ? o.weights : ""},
          {"data",
           {{"size", o.data.size},
            {"seed", o.data.seed},
            {"train_fraction", o.data.train_fraction},
            {"val_fraction", o.data.val_fraction},
            {"positive", o.data.positive}}}};
}

// A value as the user would type it: 0.001, 32,64, adam.
std::string flag_text(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_array()) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ",") + flag_text(x);
    return s;
  }
  if (v.is_null()) return "(none)";
  return v.dump();
}

std::string flag_of_setting(const std::string& pointer) {
  for (const auto& f : kResumeFlags) {
    if (pointer == f.pointer) return f.flag;
  }
  return "";
}

nlohmann::json describe_data(const data::Dataset& ds,
                             const data::DatasetOptions& o) {
  nlohmann::json counts;
  for (const auto& [s, set] : ds.splits) {
    const auto pos = static_cast<int64_t>(set.labels.sum().item<double>());
    counts[data::split_name(s)] = {{ds.index.positive, pos},
                                   {ds.index.negative, set.size() - pos}};
  }
  return {{"root", fs::absolute(o.root).lexically_normal().string()},
          {"layout", ds.index.layout},
          {"classes", ds.index.classes},
          {"size", o.size},
          {"seed", o.seed},
          {"train_fraction", o.train_fraction},
          {"val_fraction", o.val_fraction},
          {"positive", ds.index.positive},
          {"counts", counts},
          {"skipped", ds.skipped.size()}};
}

data::DatasetOptions data_options_from(const nlohmann::json& d,
                                       const std::string& root_override,
                                       const std::string& cache_dir) {
  infer::RunConfig c;
  c.data = d;
  return c.data_options(root_override, cache_dir);
}

namespace detail {

RunOptions resumed_options(const RunOptions& given, const fs::path& dir) {
  const fs::path cfg = dir / "config.json";
  if (!fs::is_regular_file(cfg)) {
    throw ModelError("--resume: '" + dir.string() +
                     "' has state.pt but no config.json; delete the folder "
                     "to start afresh");
  }
  const RunMeta saved = RunMeta::from_json(read_json(cfg), cfg.string());
  RunOptions r = given;
  r.model = saved.model;
  r.weights =
      models::is_transfer(saved.model.arch) ? saved.model.pretrained : "";
  r.model.pretrained.clear();
  r.train = saved.train;
  r.train.progress = given.train.progress;
  const auto& d = saved.data;
  r.data.size = d.value("size", r.model.input_size);
  r.data.seed = d.value("seed", r.data.seed);
  r.data.train_fraction = d.value("train_fraction", r.data.train_fraction);
  r.data.val_fraction = d.value("val_fraction", r.data.val_fraction);
  r.data.positive = d.value("positive", r.data.positive);
  const nlohmann::json want = run_settings(given), have = run_settings(r);
  for (const auto& f : kResumeFlags) {
    if (!given.flags_given.count(f.flag)) continue;
    const nlohmann::json::json_pointer ptr(f.pointer);
    const auto a = want.value(ptr, nlohmann::json());
    const auto b = have.value(ptr, nlohmann::json());
    if (a != b) {
      if (std::string(f.flag) == "--no-augment") {
        throw ConfigError(
            std::string("--no-augment differs from the resumed run, which ") +
            (b.get<bool>() ? "trains with" : "trains without") +
            " augmentation; resume without it or start a new run");
      }
      throw ConfigError(std::string(f.flag) + " " + flag_text(a) +
                        " differs from the resumed run's " + flag_text(b) +
                        "; resume without it or start a new run");
    }
  }
  return r;
}

}  // namespace detail

}  // namespace cxr::train
