/// The trial store (trials.jsonl, one JSON line per finished trial), trial
/// fingerprints for resuming, and the trials.csv / results.md tables.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <set>
#include <sstream>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "internal.h"

namespace fs = std::filesystem;

namespace cxr::tune {
namespace detail {

/// Trials stored one JSON line each; the last line may be torn by a crash.
std::vector<TrialResult> read_store(const fs::path& p) {
  std::vector<TrialResult> out;
  if (!fs::exists(p)) return out;
  std::istringstream in(read_text(p));
  std::string line;
  std::set<std::string> seen;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    try {
      auto r = TrialResult::from_json(nlohmann::json::parse(line));
      if (seen.insert(r.key).second) out.push_back(r);
    } catch (const std::exception&) {
      // A torn final line from an interruption: that trial is redone.
    }
  }
  return out;
}

void append_store(const fs::path& p, const TrialResult& r) {
  std::ofstream out(p, std::ios::app);
  out << r.to_json().dump() << "\n";
  out.flush();
  if (!out) throw IoError("cannot append to '" + p.string() + "'");
}

/// A trial's fingerprint: every setting that shapes it, data included.
nlohmann::json trial_settings(const train::RunOptions& o,
                              const data::Dataset& ds) {
  auto j = train::run_settings(o);
  j["data"] = train::describe_data(ds, o.data);
  return j;
}

/// Names the first setting where `stored` (an earlier search's trial) and
/// `now` differ, as a flag with its value where a flag sets it.
std::string first_difference(const nlohmann::json& stored,
                             const nlohmann::json& now) {
  const auto a = stored.flatten(), b = now.flatten();
  std::string where;
  for (const auto& [k, v] : b.items()) {
    if (!a.contains(k) || a[k] != v) {
      where = k;
      break;
    }
  }
  if (where.empty()) {
    for (const auto& [k, v] : a.items()) {
      if (!b.contains(k)) {
        where = k;
        break;
      }
    }
  }
  // "/model/filters/1" -> "/model/filters", set by --filters.
  std::string p = where;
  while (!p.empty() && train::flag_of_setting(p).empty()) {
    p = p.substr(0, p.rfind('/'));
  }
  if (p.empty()) p = where;
  const nlohmann::json::json_pointer ptr(p);
  const auto sv = stored.contains(ptr) ? stored.at(ptr) : nlohmann::json();
  const auto nv = now.contains(ptr) ? now.at(ptr) : nlohmann::json();
  const std::string flag = train::flag_of_setting(p);
  const std::string name = flag.empty() ? "setting " + p : flag;
  return name + " " + train::flag_text(sv) +
         " (this search: " + train::flag_text(nv) + ")";
}

void write_tables(const fs::path& dir,
                  std::vector<TrialResult> results,
                  const std::string& metric,
                  const std::string& mode) {
  std::set<std::string> names;
  for (const auto& r : results) {
    for (const auto& [k, v] : r.params) names.insert(k);
  }
  std::ostringstream csv;
  csv << "trial";
  for (const auto& n : names) csv << "," << n;
  csv << ",best_epoch,val_loss,val_accuracy,val_precision,val_recall,val_auc,"
         "seconds,run_dir\n";
  for (const auto& r : results) {
    csv << r.index;
    for (const auto& n : names) {
      auto it = r.params.find(n);
      csv << "," << (it == r.params.end() ? "" : it->second);
    }
    csv << "," << r.best_epoch << "," << fmt(r.val_loss, 6) << ","
        << fmt(r.val_accuracy, 6) << "," << fmt(r.val_precision, 6) << ","
        << fmt(r.val_recall, 6) << "," << fmt(r.val_auc, 6) << ","
        << fmt(r.seconds, 1) << "," << r.run_dir << "\n";
  }
  write_text_atomic(dir / "trials.csv", csv.str());

  std::stable_sort(results.begin(), results.end(),
                   [&](const TrialResult& a, const TrialResult& b) {
                     return a.score(metric) > b.score(metric);
                   });
  std::ostringstream md;
  md << "# Hyper-parameter search (" << mode << ", sorted by " << metric
     << ")\n\n| rank | trial |";
  for (const auto& n : names) md << " " << n << " |";
  md << " best epoch | val loss | val acc | val precision | val recall | "
        "val AUC | minutes |\n|---|---|";
  for (size_t i = 0; i < names.size(); ++i) md << "---|";
  md << "---|---|---|---|---|---|---|\n";
  int rank = 1;
  for (const auto& r : results) {
    md << "| " << rank++ << " | " << r.index << " |";
    for (const auto& n : names) {
      auto it = r.params.find(n);
      md << " " << (it == r.params.end() ? "" : it->second) << " |";
    }
    md << " " << r.best_epoch << " | " << fmt(r.val_loss) << " | "
       << fmt(r.val_accuracy, 3) << " | " << fmt(r.val_precision, 3) << " | "
       << fmt(r.val_recall, 3) << " | " << fmt(r.val_auc, 3) << " | "
       << fmt(r.seconds / 60.0, 1) << " |\n";
  }
  write_text_atomic(dir / "results.md", md.str());
}

}  // namespace detail

nlohmann::json TrialResult::to_json() const {
  auto num = [](double v) {
    return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v);
  };
  return {{"index", index},
          {"params", params},
          {"key", key},
          {"run_dir", run_dir},
          {"best_epoch", best_epoch},
          {"frozen_epochs", frozen_epochs},
          {"val_loss", num(val_loss)},
          {"val_accuracy", num(val_accuracy)},
          {"val_precision", num(val_precision)},
          {"val_recall", num(val_recall)},
          {"val_auc", num(val_auc)},
          {"seconds", seconds},
          {"settings", settings}};
}

TrialResult TrialResult::from_json(const nlohmann::json& j) {
  auto num = [](const nlohmann::json& v) {
    return v.is_number() ? v.get<double>() : static_cast<double>(NAN);
  };
  TrialResult r;
  r.index = j.at("index").get<int>();
  r.params = j.at("params").get<Params>();
  r.key = j.at("key").get<std::string>();
  r.run_dir = j.at("run_dir").get<std::string>();
  r.best_epoch = j.at("best_epoch").get<int>();
  r.frozen_epochs = j.value("frozen_epochs", 0);
  r.val_loss = num(j.at("val_loss"));
  r.val_accuracy = num(j.at("val_accuracy"));
  r.val_precision = num(j.at("val_precision"));
  r.val_recall = num(j.at("val_recall"));
  r.val_auc = num(j.at("val_auc"));
  r.seconds = j.at("seconds").get<double>();
  r.settings = j.value("settings", nlohmann::json());
  return r;
}

double TrialResult::score(const std::string& metric) const {
  double v = metric == "val_loss"       ? -val_loss
             : metric == "val_accuracy" ? val_accuracy
             : metric == "val_auc"      ? val_auc
             : metric == "val_recall"   ? val_recall
                                        : NAN;
  return std::isnan(v) ? -1e300 : v;
}

}  // namespace cxr::tune
