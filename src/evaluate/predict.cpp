// cxr predict: the Predictor on image files, with CSV and JSON outputs;
// with --nproc each rank scores a contiguous shard and rank 0 writes them.
#include <cmath>
#include <sstream>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/common/runtime.h"
#include "cxr/common/text.h"
#include "cxr/data/dataset.h"
#include "cxr/data/listing.h"
#include "cxr/dist/dist.h"
#include "cxr/evaluate/evaluate.h"
#include "sharded.h"

namespace cxr::evaluate {
namespace {

std::string joined_reasons(const Prediction& r) {
  std::string s;
  for (const auto& x : r.reasons) s += (s.empty() ? "" : "; ") + x;
  return s;
}

void write_predictions_csv(const std::string& path,
                           const std::string& pos,
                           const std::vector<Prediction>& out) {
  std::ostringstream csv;
  csv << "file,p_" << pos << ",p_" << pos
      << "_raw,decision,ood_score,in_distribution,ood_reasons,error\n";
  for (const auto& r : out) {
    const bool ok = r.error.empty();
    csv << csv_field(r.file) << "," << (ok ? fixed(r.p, 6) : "") << ","
        << (ok ? fixed(r.p_raw, 6) : "") << "," << r.decision << ","
        << (ok && !std::isnan(r.ood_score) ? fixed(r.ood_score, 4) : "") << ","
        << (ok ? (r.in_distribution ? "1" : "0") : "") << ","
        << csv_field(joined_reasons(r)) << "," << csv_field(r.error) << "\n";
  }
  write_text_atomic(path, csv.str());
}

void write_predictions_json(const std::string& path,
                            const std::string& run_dir,
                            const infer::Predictor& pred,
                            const std::vector<Prediction>& out) {
  const auto& cfg = pred.config();
  const std::string& pos = cfg.positive;
  nlohmann::json j = nlohmann::json::array();
  for (const auto& r : out) {
    nlohmann::json e = {{"file", r.file}};
    if (r.error.empty()) {
      e["p_" + pos] = r.p;
      e["p_" + pos + "_raw"] = r.p_raw;
      e["decision"] = r.decision;
      e["ood_score"] = std::isnan(r.ood_score) ? nlohmann::json(nullptr)
                                               : nlohmann::json(r.ood_score);
      e["in_distribution"] = r.in_distribution;
      e["ood_reasons"] = r.reasons;
    } else {
      e["error"] = r.error;
    }
    j.push_back(e);
  }
  write_json_atomic(path, {{"run", run_dir},
                           {"threshold", pred.calibrated_threshold()},
                           {"threshold_raw", pred.threshold()},
                           {"calibration",
                            {{"method", cfg.calibration.method},
                             {"temperature", cfg.calibration.temperature}}},
                           {"ood_detector", pred.has_detector()},
                           {"positive", pos},
                           {"predictions", j}});
}

}  // namespace

std::vector<Prediction> predict_files(const PredictOptions& o,
                                      std::string* positive_name) {
  if (o.inputs.empty()) throw ConfigError("give at least one image or folder");
  const torch::Device device = resolve_device(o.device);
  infer::Predictor pred = infer::Predictor::load(o.run_dir, device);
  if (o.threshold) {
    if (!(*o.threshold >= 0 && *o.threshold <= 1)) {
      throw ConfigError("--threshold must be in [0, 1]");
    }
    pred.set_threshold(pred.raw_threshold_for(*o.threshold));
  }
  if (o.batch_size < 1) throw ConfigError("--batch-size must be >= 1");
  pred.batch_size = o.batch_size;
  const std::string& pos = pred.config().positive;
  if (positive_name) *positive_name = pos;
  // With --skip-bad, folders that cannot be listed (a symlink loop, no
  // permission) become error rows like unreadable images.
  std::vector<data::BadFile> unlisted;
  const std::vector<std::string> files =
      data::list_image_files(o.inputs, o.skip_bad ? &unlisted : nullptr);
  // Sharded (--nproc): every rank lists the same files (sorted) and scores
  // its whole batches of them; the rows come back in input order, on every
  // rank, and rank 0 alone writes the files.
  auto& ctx = dist::world();
  const auto [begin, end] =
      detail::batch_shard(static_cast<int64_t>(files.size()), pred.batch_size,
                          ctx.rank(), ctx.world_size());
  detail::say_shard("predict", "files", ctx, begin, end,
                    static_cast<int64_t>(files.size()));
  std::vector<Prediction> out = detail::gather_predictions(
      ctx, pred.predict_files(std::vector<std::string>(files.begin() + begin,
                                                       files.begin() + end),
                              o.skip_bad));
  for (const auto& b : unlisted) {
    Prediction r;
    r.file = b.path;
    r.error = b.reason;
    r.in_distribution = false;
    out.push_back(std::move(r));
  }
  if (!ctx.is_main()) return out;
  if (!o.csv_path.empty()) write_predictions_csv(o.csv_path, pos, out);
  if (!o.json_path.empty()) {
    write_predictions_json(o.json_path, o.run_dir, pred, out);
  }
  return out;
}

}  // namespace cxr::evaluate
