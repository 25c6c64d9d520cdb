// Scores a run's OOD warning on the OOD evaluation sets (ood_sets.cpp).
#include <algorithm>
#include <chrono>
#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/common/json_field.h"
#include "cxr/common/runtime.h"
#include "cxr/evaluate/ood_sets.h"
#include "cxr/infer/predictor.h"
#include "cxr/metrics/metrics.h"

namespace fs = std::filesystem;

namespace cxr::evaluate {
namespace {

struct Scored {
  std::vector<double> scores;
  int64_t n = 0, flagged = 0, by_checks = 0, by_detector = 0;
};

Scored score_images(const infer::Predictor& pred,
                    const std::vector<data::GrayImage>& images) {
  Scored s;
  const size_t chunk = 32;
  for (size_t a = 0; a < images.size(); a += chunk) {
    const std::vector<data::GrayImage> part(
        images.begin() + static_cast<std::ptrdiff_t>(a),
        images.begin() +
            static_cast<std::ptrdiff_t>(std::min(images.size(), a + chunk)));
    for (const auto& r : pred.predict(part)) {
      ++s.n;
      s.scores.push_back(r.ood_score);
      const bool det = pred.has_detector() && pred.detector() &&
                       r.ood_score > pred.detector()->threshold;
      const bool checks = static_cast<int>(r.reasons.size()) > (det ? 1 : 0);
      s.flagged += r.in_distribution ? 0 : 1;
      s.by_checks += checks ? 1 : 0;
      s.by_detector += det ? 1 : 0;
    }
  }
  return s;
}

double share(int64_t k, int64_t n) {
  return n > 0 ? static_cast<double>(k) / static_cast<double>(n) : NAN;
}

nlohmann::json num(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}

}  // namespace

nlohmann::json evaluate_ood(const OodEvalOptions& o) {
  const torch::Device device = resolve_device(o.device);
  const infer::Predictor pred = infer::Predictor::load(o.run_dir, device);
  auto dopts = pred.config().data_options(o.data_root, "");
  if (dopts.root.empty()) {
    throw ConfigError("the run records no data folder; pass --data DIR");
  }
  const data::DatasetIndex index = data::index_dataset(dopts);
  const data::Split split = data::parse_split(o.split);
  std::vector<std::string> test_files;
  for (const auto& s : index.samples) {
    if (s.split == split) test_files.push_back(s.path);
  }
  if (test_files.empty()) {
    throw DataError("the run's data has no " + o.split + " split");
  }

  OodSetOptions so;
  so.shared_dir = o.shared_dir;
  so.test_files = test_files;
  so.max_per_set = o.max_per_set;
  std::vector<std::string> notes;
  const std::vector<OodSet> sets = make_ood_sets(so, &notes);

  std::vector<data::GrayImage> test_images;
  for (const auto& f : test_files) test_images.push_back(data::read_gray(f));
  const auto t0 = std::chrono::steady_clock::now();
  const Scored test = score_images(pred, test_images);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();

  nlohmann::json j;
  j["run"] = o.run_dir;
  j["split"] = o.split;
  j["detector"] = pred.has_detector();
  j["threshold"] =
      pred.has_detector() ? num(pred.detector()->threshold) : nullptr;
  j["notes"] = notes;
  j["test"] = {{"n", test.n},
               {"flag_rate", share(test.flagged, test.n)},
               {"by_checks", share(test.by_checks, test.n)},
               {"by_detector", share(test.by_detector, test.n)},
               {"seconds_per_image", secs / static_cast<double>(test.n)}};
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& set : sets) {
    const Scored s = score_images(pred, set.images);
    double auroc = NAN;
    if (pred.has_detector() && s.n > 0) {
      std::vector<double> sc = test.scores;
      std::vector<int> lab(sc.size(), 0);
      sc.insert(sc.end(), s.scores.begin(), s.scores.end());
      lab.resize(sc.size(), 1);
      auroc = metrics::roc_auc(sc, lab);
    }
    arr.push_back({{"name", set.name},
                   {"description", set.description},
                   {"obvious", set.obvious},
                   {"n", s.n},
                   {"flag_rate", share(s.flagged, s.n)},
                   {"by_checks", share(s.by_checks, s.n)},
                   {"by_detector", share(s.by_detector, s.n)},
                   {"auroc", num(auroc)}});
  }
  j["sets"] = arr;
  const fs::path out = o.out_dir.empty() ? fs::path(o.run_dir) / "eval-ood"
                                         : fs::path(o.out_dir);
  ensure_dir(out);
  write_json_atomic(out / "ood.json", j);
  return j;
}

std::string format_ood(const nlohmann::json& j) {
  // j may be an ood.json read back from disk (an older, interrupted or
  // hand-edited one may lack any key): values are looked up (const
  // operator[] on a missing key is undefined behaviour), shown as n/a, and
  // the keys a table needs are named on a note line. A null rate or AUROC
  // is a value (no detector, no images), not a missing key.
  std::vector<std::string> lacks;
  auto lack = [&](const std::string& name) {
    if (std::find(lacks.begin(), lacks.end(), name) == lacks.end()) {
      lacks.push_back(name);
    }
  };
  auto pct = [](const nlohmann::json& v) {
    std::ostringstream t;
    if (v.is_number()) {
      t << std::fixed << std::setprecision(1) << 100 * v.get<double>();
    } else {
      t << "n/a";
    }
    return t.str();
  };
  std::ostringstream s;
  const nlohmann::json& run = json_field(j, "run");
  if (!run.is_string()) lack("run");
  s << "OOD warning of " << (run.is_string() ? run.get<std::string>() : "n/a")
    << " (flagged %: all = input checks or detector)\n";
  s << std::left << std::setw(18) << "set" << std::right << std::setw(6) << "n"
    << std::setw(8) << "all" << std::setw(8) << "checks" << std::setw(10)
    << "detector" << std::setw(8) << "AUROC"
    << "\n";
  auto row = [&](const std::string& name, const nlohmann::json& r,
                 const std::string& where) {
    const nlohmann::json& n = json_field(r, "n");
    if (!n.is_number_integer()) lack(where + ".n");
    s << std::left << std::setw(18) << name << std::right << std::setw(6)
      << (n.is_number_integer() ? std::to_string(n.get<int64_t>()) : "n/a")
      << std::setw(8) << pct(json_field(r, "flag_rate")) << std::setw(8)
      << pct(json_field(r, "by_checks")) << std::setw(10)
      << pct(json_field(r, "by_detector")) << std::setw(8);
    const nlohmann::json& auroc = json_field(r, "auroc");
    if (auroc.is_number()) {
      s << std::fixed << std::setprecision(3) << auroc.get<double>();
    } else {
      s << "-";
    }
    s << "\n";
  };
  const nlohmann::json& test = json_field(j, "test");
  if (test.is_object()) {
    row("in-dist. " + json_text(j, "split", "test"), test, "test");
  } else {
    lack("test");
  }
  const nlohmann::json& sets = json_field(j, "sets");
  if (sets.is_array()) {
    for (const auto& r : sets) {
      if (!json_field(r, "name").is_string()) lack("sets[].name");
      row(json_text(r, "name", "n/a"), r, "sets[]");
    }
  } else {
    lack("sets");
  }
  const nlohmann::json& notes = json_field(j, "notes");
  if (notes.is_array()) {
    for (const auto& n : notes) {
      s << "note: " << (n.is_string() ? n.get<std::string>() : n.dump())
        << "\n";
    }
  }
  s << missing_keys_note("ood.json", lacks,
                         "cxr evaluate RUN --ood-sets writes it again");
  return s.str();
}

}  // namespace cxr::evaluate
