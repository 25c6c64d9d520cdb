#include "cxr/tune/tune.h"

#include <iomanip>
#include <iostream>
#include <random>
#include <set>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/common/progress.h"
#include "cxr/evaluate/evaluate.h"
#include "cxr/train/run_dir.h"

namespace fs = std::filesystem;

namespace cxr::tune {
namespace {

/// `where` names the text's origin in messages, e.g. "--grid token 'lr=x'",
/// "--config s.json, key \"lr\"" or "lr=x" (a trial's parameter).
double parse_number(const std::string& text, const std::string& where) {
  try {
    size_t used = 0;
    double v = std::stod(text, &used);
    if (used != text.size() || !std::isfinite(v))
      throw std::invalid_argument("");
    return v;
  } catch (const std::exception&) {
    throw ConfigError(where + ": '" + text + "' is not a number");
  }
}

int parse_int(const std::string& text, const std::string& name) {
  double v = parse_number(text, name + "=" + text);
  if (v != std::floor(v)) {
    throw ConfigError(name + "=" + text + ": needs an integer");
  }
  // Casting a double outside int's range is undefined (found by
  // fuzz_tune_space: filters=822222222222).
  if (!(std::abs(v) <= 1e9)) {
    throw ConfigError(name + "=" + text + ": out of range (at most 1e9)");
  }
  return static_cast<int>(v);
}

bool is_numeric_param(const std::string& n) {
  return n != "optimizer" && n != "filters" && n != "batch_norm" &&
         n != "unfreeze_from";
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::stringstream ss(s);
  while (std::getline(ss, cur, sep)) out.push_back(cur);
  if (!s.empty() && s.back() == sep) out.emplace_back();
  return out;
}

std::string fmt(double v, int p = 4) {
  if (std::isnan(v)) return "nan";
  std::ostringstream s;
  s << std::fixed << std::setprecision(p) << v;
  return s.str();
}

std::string number_text(double v) {
  std::ostringstream s;
  s << std::setprecision(6) << v;
  return s.str();
}

void validate_values(const ParamSpec& p, const std::string& where) {
  for (const auto& v : p.values) {
    if (v.empty()) throw ConfigError(where + ": empty value");
    if (is_numeric_param(p.name)) parse_number(v, where);
  }
  // Apply to a scratch config so bad values fail now, naming the token.
  for (const auto& v : p.values) {
    train::RunOptions scratch;
    try {
      apply_params({{p.name, v}}, scratch);
    } catch (const ConfigError& e) {
      throw ConfigError(where + ": " + e.what());
    }
  }
}

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

}  // namespace

const std::vector<std::string>& tunable_names() {
  static const std::vector<std::string> kNames = {
      "filters",      "batch_norm",    "dropout",
      "head_units",   "optimizer",     "lr",
      "momentum",     "weight_decay",  "batch_size",
      "epochs",       "patience",      "fine_tune_epochs",
      "fine_tune_lr", "unfreeze_from", "rotation",
      "zoom",         "width_shift"};
  return kNames;
}

namespace {

/// The parser behind --grid and --config: `where[i]` names token i's origin
/// in messages, so a --config file's error points at its key, not at a
/// --grid token the user never typed.
SearchSpace parse_tokens(const std::vector<std::string>& tokens,
                         const std::vector<std::string>& where_of,
                         const std::string& source) {
  SearchSpace space;
  std::set<std::string> seen;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string& token = tokens[i];
    const std::string& where = where_of[i];
    const auto eq = token.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == token.size()) {
      throw ConfigError(where + ": expected name=v1,v2,... or name=low..high");
    }
    ParamSpec p;
    p.name = token.substr(0, eq);
    const std::string rhs = token.substr(eq + 1);
    const auto& names = tunable_names();
    if (std::find(names.begin(), names.end(), p.name) == names.end()) {
      std::string list;
      for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
      throw ConfigError(where + ": unknown parameter '" + p.name +
                        "' (known: " + list + ")");
    }
    if (!seen.insert(p.name).second) {
      throw ConfigError(where + ": '" + p.name + "' is given twice");
    }
    const auto dots = rhs.find("..");
    if (dots != std::string::npos) {
      if (!is_numeric_param(p.name)) {
        throw ConfigError(where + ": a range needs a numeric parameter");
      }
      p.is_range = true;
      p.low = parse_number(rhs.substr(0, dots), where);
      p.high = parse_number(rhs.substr(dots + 2), where);
      if (!(p.low < p.high)) throw ConfigError(where + ": need low < high");
      p.log_scale = p.name == "lr" || p.name == "fine_tune_lr" ||
                    p.name == "weight_decay";
      if (p.log_scale && p.low <= 0) {
        throw ConfigError(where + ": a log-uniform range needs low > 0");
      }
    } else {
      p.values = split(rhs, ',');
      validate_values(p, where);
    }
    space.params.push_back(p);
  }
  if (space.params.empty()) {
    throw ConfigError(source + ": give at least one name=values " +
                      (source == "--grid" ? "token" : "entry"));
  }
  return space;
}

}  // namespace

SearchSpace parse_space(const std::vector<std::string>& tokens) {
  std::vector<std::string> where;
  for (const auto& t : tokens) where.push_back("--grid token '" + t + "'");
  return parse_tokens(tokens, where, "--grid");
}

SearchSpace read_space_file(const std::string& path) {
  // The search space is configuration the user wrote: a missing or broken
  // file is a flag error (exit 2) naming --config, not a data error.
  nlohmann::json j;
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    throw ConfigError("--config " + path +
                      ": no such file (give a JSON file of name: values, "
                      "e.g. {\"lr\": [0.001, 0.0001]})");
  }
  try {
    j = nlohmann::json::parse(read_text(path));
  } catch (const nlohmann::json::exception& e) {
    std::string why = e.what();
    const auto colon = why.find("] ");
    if (colon != std::string::npos) why = why.substr(colon + 2);
    throw ConfigError("--config " + path + ": not valid JSON (" + why +
                      "); fix the file");
  } catch (const DataError& e) {
    throw ConfigError("--config " + path + ": " + e.what());
  }
  if (!j.is_object()) {
    throw ConfigError("--config " + path +
                      ": expected a JSON object of name: values, e.g. "
                      "{\"lr\": [0.001, 0.0001]}");
  }
  std::vector<std::string> tokens, where;
  for (const auto& [k, v] : j.items()) {
    std::string rhs;
    if (v.is_array()) {
      for (const auto& x : v) {
        rhs += (rhs.empty() ? "" : ",") +
               (x.is_string() ? x.get<std::string>() : x.dump());
      }
    } else if (v.is_string()) {
      rhs = v.get<std::string>();
    } else {
      rhs = v.dump();
    }
    tokens.push_back(k + "=" + rhs);
    where.push_back("--config " + path + ", key \"" + k + "\"");
  }
  return parse_tokens(tokens, where, "--config " + path);
}

std::string trial_key(const Params& p) {
  std::string k;
  for (const auto& [n, v] : p) k += (k.empty() ? "" : ";") + n + "=" + v;
  return k;
}

std::vector<Params> grid_trials(const SearchSpace& space) {
  std::vector<Params> out{{}};
  for (const auto& p : space.params) {
    if (p.is_range) {
      throw ConfigError("search-space parameter '" + p.name +
                        "' is a low..high range: ranges need --mode random; "
                        "a grid needs value lists");
    }
    std::vector<Params> next;
    for (const auto& partial : out) {
      for (const auto& v : p.values) {
        Params q = partial;
        q[p.name] = v;
        next.push_back(q);
      }
    }
    out = std::move(next);
  }
  return out;
}

std::vector<Params> random_trials(const SearchSpace& space,
                                  int n,
                                  uint64_t seed) {
  if (n < 1) throw ConfigError("--trials must be >= 1");
  std::mt19937_64 rng(seed);
  // Portable uniform in [0, 1): 53 random bits.
  auto unit = [&] {
    return static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0);
  };
  std::vector<Params> out;
  std::set<std::string> seen;
  for (int attempt = 0; static_cast<int>(out.size()) < n && attempt < n * 50;
       ++attempt) {
    Params p;
    for (const auto& s : space.params) {
      if (s.is_range) {
        double v = s.log_scale
                       ? std::exp(std::log(s.low) +
                                  unit() * (std::log(s.high) - std::log(s.low)))
                       : s.low + unit() * (s.high - s.low);
        if (s.name == "batch_size" || s.name == "epochs" ||
            s.name == "patience" || s.name == "head_units" ||
            s.name == "fine_tune_epochs") {
          v = std::round(v);
        }
        p[s.name] = number_text(v);
      } else {
        p[s.name] = s.values[static_cast<size_t>(rng() % s.values.size())];
      }
    }
    if (seen.insert(trial_key(p)).second) out.push_back(p);
  }
  return out;
}

void apply_params(const Params& params, train::RunOptions& o) {
  for (const auto& [n, v] : params) {
    const std::string token = n + "=" + v;
    if (n == "filters") {
      std::vector<int> f;
      if (v.find('-') != std::string::npos) {
        for (const auto& part : split(v, '-')) f.push_back(parse_int(part, n));
      } else {
        const int b = parse_int(v, n);
        f = {b, 2 * b, 4 * b, 4 * b};
      }
      for (int x : f) {
        if (x <= 0) throw ConfigError(token + ": filters must be > 0");
      }
      o.model.filters = f;
    } else if (n == "batch_norm") {
      if (v != "true" && v != "false") {
        throw ConfigError(token + ": use true or false");
      }
      o.model.batch_norm = v == "true";
    } else if (n == "optimizer") {
      if (v != "adam" && v != "sgd" && v != "rmsprop") {
        throw ConfigError(token + ": use adam, sgd or rmsprop");
      }
      o.train.optimizer = v;
    } else if (n == "unfreeze_from") {
      o.train.unfreeze_from = v;
    } else {
      const double x = parse_number(v, token);
      if (n == "dropout") {
        if (!(x >= 0 && x < 1))
          throw ConfigError(token + ": dropout must be in [0, 1)");
        o.model.dropout = x;
      } else if (n == "head_units") {
        o.model.head_units = parse_int(v, n);
      } else if (n == "lr") {
        if (!(x > 0)) throw ConfigError(token + ": lr must be > 0");
        o.train.lr = x;
      } else if (n == "momentum") {
        o.train.momentum = x;
      } else if (n == "weight_decay") {
        o.train.weight_decay = x;
      } else if (n == "batch_size") {
        const int b = parse_int(v, n);
        if (b < 1) throw ConfigError(token + ": batch_size must be >= 1");
        o.train.batch_size = b;
      } else if (n == "epochs") {
        o.train.epochs = parse_int(v, n);
      } else if (n == "patience") {
        o.train.patience = parse_int(v, n);
      } else if (n == "fine_tune_epochs") {
        o.train.fine_tune_epochs = parse_int(v, n);
      } else if (n == "fine_tune_lr") {
        o.train.fine_tune_lr = x;
      } else if (n == "rotation") {
        o.train.augmentation.rotation_deg = x;
      } else if (n == "zoom") {
        o.train.augmentation.zoom = x;
      } else if (n == "width_shift") {
        o.train.augmentation.width_shift = x;
      } else {
        throw ConfigError(token + ": unknown parameter '" + n + "'");
      }
    }
  }
}

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

train::RunOptions refit_options(const train::RunOptions& base,
                                const TrialResult& best) {
  train::RunOptions ro = base;
  apply_params(best.params, ro);
  ro.train.train_on = "train+val";
  ro.train.patience = 0;
  // The refit has no validation left: it carries over the best trial's
  // threshold (its rule's, or 0.5) and its calibration temperature, fitted
  // on that trial's validation predictions at its best epoch. So the refit
  // copies that model as closely as it can: the trial's schedule, unchanged
  // (a cosine over the same epochs, so the same learning rate each epoch;
  // shortening it to the best epoch would anneal faster and give another
  // model), stopped after the best epoch.
  const bool transfer = ro.model.arch != "baseline";
  if (transfer && best.frozen_epochs > 0 &&
      best.frozen_epochs < ro.train.epochs) {
    // Early stopping ended the trial's frozen phase there.
    ro.train.epochs = best.frozen_epochs;
  }
  const int total =
      ro.train.epochs + (transfer ? ro.train.fine_tune_epochs : 0);
  ro.stop_after_epoch =
      best.best_epoch > 0 && best.best_epoch < total ? best.best_epoch : 0;
  ro.target_sensitivity = 0;
  ro.balanced_threshold = false;
  ro.threshold_from = best.run_dir;
  ro.resume = false;
  return ro;
}

namespace {
nlohmann::json tune_locked(const TuneOptions& o,
                           const data::Dataset* preloaded);
}  // namespace

nlohmann::json run_tune(const TuneOptions& o, const data::Dataset* preloaded) {
  if (o.metric != "val_loss" && o.metric != "val_accuracy" &&
      o.metric != "val_auc" && o.metric != "val_recall") {
    throw ConfigError("--metric " + o.metric +
                      ": use val_loss, val_accuracy, val_auc or val_recall");
  }
  if (o.mode != "grid" && o.mode != "random" && o.mode != "sequential") {
    throw ConfigError("--mode " + o.mode + ": use grid, random or sequential");
  }
  if (o.budget_minutes < 0) throw ConfigError("--budget-minutes must be >= 0");
  if (o.base.train.train_on != "train") {
    throw ConfigError("tuning selects on validation: --train-on must be train");
  }
  const fs::path out(o.out_dir);
  const bool existed = fs::exists(out);
  // One writer per tune folder, for the whole search.
  const train::DirLock lock(out.string());
  try {
    return tune_locked(o, preloaded);
  } catch (...) {
    if (!existed) train::remove_if_only_lock(out.string());
    throw;
  }
}

namespace {

nlohmann::json tune_locked(const TuneOptions& o,
                           const data::Dataset* preloaded) {
  const fs::path out(o.out_dir);
  const fs::path store = out / "trials.jsonl";
  if (o.overwrite) {
    std::error_code ec;
    for (const char* f : {"trials.jsonl", "trials.csv", "results.md",
                          "best.json", "trials", "refit"}) {
      fs::remove_all(out / f, ec);
    }
  }
  std::vector<TrialResult> done = read_store(store);
  data::Dataset owned;
  if (!preloaded) owned = data::load_dataset(o.base.data);
  const data::Dataset& ds = preloaded ? *preloaded : owned;
  // Reuse a stored trial only if everything that shaped it matches: a
  // changed --epochs, --size or data set makes other trials, not the same.
  for (const auto& r : done) {
    if (r.settings.is_null()) {
      throw ConfigError("'" + o.out_dir +
                        "' holds trials from an older cxr that did not "
                        "record their settings; use another --out or "
                        "--overwrite");
    }
    train::RunOptions ro = o.base;
    apply_params(r.params, ro);
    const auto now = trial_settings(ro, ds);
    if (r.settings != now) {
      throw ConfigError("'" + o.out_dir + "' was tuned with " +
                        first_difference(r.settings, now) +
                        "; use another --out or --overwrite");
    }
  }
  if (fs::exists(store)) {
    // Drop a torn last line (interrupted write) so appends stay parseable.
    std::string clean;
    for (const auto& r : done) clean += r.to_json().dump() + "\n";
    write_text_atomic(store, clean);
  }
  std::map<std::string, TrialResult> by_key;
  for (const auto& r : done) by_key[r.key] = r;
  int next_index = 0;
  for (const auto& r : done) next_index = std::max(next_index, r.index + 1);

  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed_min = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
               .count() /
           60.0;
  };
  bool budget_hit = false;
  int ran_now = 0;
  double ran_seconds = 0;
  std::vector<TrialResult> session;  // every trial of this search, in order

  auto run_trial = [&](const Params& p, int k,
                       int total) -> const TrialResult* {
    const std::string key = trial_key(p);
    if (auto it = by_key.find(key); it != by_key.end()) {
      session.push_back(it->second);
      return &it->second;
    }
    if (o.budget_minutes > 0 && elapsed_min() >= o.budget_minutes) {
      budget_hit = true;
      return nullptr;
    }
    train::RunOptions ro = o.base;
    apply_params(p, ro);
    ro.train.progress = false;
    TrialResult r;
    r.index = next_index++;
    r.params = p;
    r.key = key;
    r.settings = trial_settings(ro, ds);
    char name[32];
    std::snprintf(name, sizeof name, "trial-%03d", r.index);
    r.run_dir = (out / "trials" / name).string();
    // An interrupted trial left a partial folder: it is redone from scratch.
    std::error_code ec;
    fs::remove_all(r.run_dir, ec);
    ro.out_dir = r.run_dir;
    ro.resume = false;
    const double eta = ran_now > 0 ? ran_seconds / ran_now * (total - k) : NAN;
    if (o.progress) {
      std::cerr << "trial " << k + 1 << "/" << total << "  " << key
                << (ran_now > 0 ? "  (ETA " + format_duration(eta) + ")" : "")
                << "\n";
    }
    const auto ts = std::chrono::steady_clock::now();
    auto cfg = train::train_run(ro, &ds);
    r.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - ts)
            .count();
    const auto& res = cfg["result"];
    r.best_epoch = res["best_epoch"].get<int>();
    r.val_loss = res["best_val_loss"].is_number()
                     ? res["best_val_loss"].get<double>()
                     : NAN;
    r.val_accuracy = res["val"]["accuracy"].get<double>();
    r.val_precision = res["val"]["precision"].is_number()
                          ? res["val"]["precision"].get<double>()
                          : NAN;
    r.val_recall = res["val"]["recall"].get<double>();
    r.val_auc = res["val"]["auc"].get<double>();
    for (const auto& e : train::read_history_csv(
             (fs::path(r.run_dir) / "history.csv").string())) {
      if (e.phase == "frozen") ++r.frozen_epochs;
    }
    append_store(store, r);
    ++ran_now;
    ran_seconds += r.seconds;
    if (o.progress) {
      std::cerr << "  -> val loss " << fmt(r.val_loss) << "  acc "
                << fmt(r.val_accuracy, 3) << "  recall " << fmt(r.val_recall, 3)
                << "  AUC " << fmt(r.val_auc, 3) << "  best epoch "
                << r.best_epoch << "  " << format_duration(r.seconds) << "\n";
    }
    by_key[key] = r;
    session.push_back(r);
    return &by_key[key];
  };

  if (o.mode == "sequential") {
    Params current;
    for (const auto& p : o.space.params) {
      if (p.is_range) {
        throw ConfigError("search-space parameter '" + p.name +
                          "' is a low..high range: --mode sequential needs "
                          "value lists");
      }
      current[p.name] = p.values.front();
    }
    int total = 0;
    for (const auto& p : o.space.params)
      total += static_cast<int>(p.values.size());
    int k = 0;
    for (const auto& p : o.space.params) {
      const TrialResult* best = nullptr;
      for (const auto& v : p.values) {
        Params q = current;
        q[p.name] = v;
        const TrialResult* r = run_trial(q, k++, total);
        if (!r) break;
        if (!best || r->score(o.metric) > best->score(o.metric)) best = r;
      }
      if (best) current[p.name] = best->params.at(p.name);
      if (budget_hit) break;
    }
  } else {
    auto trials = o.mode == "grid" ? grid_trials(o.space)
                                   : random_trials(o.space, o.trials, o.seed);
    for (size_t k = 0; k < trials.size(); ++k) {
      if (!run_trial(trials[k], static_cast<int>(k),
                     static_cast<int>(trials.size()))) {
        break;
      }
    }
  }
  if (session.empty()) {
    throw ConfigError("--budget-minutes " + fmt(o.budget_minutes, 1) +
                      ": no trial could start; raise the budget");
  }
  // De-duplicate (sequential revisits the current best) keeping order.
  std::vector<TrialResult> unique;
  std::set<std::string> keys;
  for (const auto& r : session) {
    if (keys.insert(r.key).second) unique.push_back(r);
  }
  write_tables(out, unique, o.metric, o.mode);
  const TrialResult best =
      *std::max_element(unique.begin(), unique.end(),
                        [&](const TrialResult& a, const TrialResult& b) {
                          return a.score(o.metric) < b.score(o.metric);
                        });
  nlohmann::json j = {{"metric", o.metric},
                      {"mode", o.mode},
                      {"trials", unique.size()},
                      {"trials_run_now", ran_now},
                      {"budget_minutes", o.budget_minutes},
                      {"budget_exhausted", budget_hit},
                      {"minutes", elapsed_min()},
                      {"best", best.to_json()}};
  if (budget_hit && o.progress) {
    std::cerr << "cxr tune: --budget-minutes " << o.budget_minutes
              << " reached; " << unique.size()
              << " trials done, the rest not started\n";
  }
  if (o.refit) {
    train::RunOptions ro = refit_options(o.base, best);
    const int refit_epochs =
        ro.stop_after_epoch > 0
            ? ro.stop_after_epoch
            : ro.train.epochs +
                  (ro.model.arch == "baseline" ? 0 : ro.train.fine_tune_epochs);
    ro.out_dir = (out / "refit").string();
    ro.resume = false;
    std::error_code ec;
    fs::remove_all(ro.out_dir, ec);
    ro.train.progress = o.progress;
    if (o.progress) {
      std::cerr << "refit on train+val: " << best.key << " for " << refit_epochs
                << " epochs\n";
    }
    train::train_run(ro, &ds);
    evaluate::EvalOptions eo;
    eo.run_dir = ro.out_dir;
    eo.split = "test";
    eo.device = ro.device;
    eo.cache_dir = o.base.data.cache_dir;
    eo.data_root = o.base.data.root;
    auto m = evaluate::evaluate_run(eo);
    j["refit"] = {{"run_dir", ro.out_dir},
                  {"epochs", refit_epochs},
                  {"test",
                   {{"accuracy", m["accuracy"]},
                    {"recall", m["recall"]},
                    {"specificity", m["specificity"]},
                    {"auc", m["auc"]}}}};
  }
  write_json_atomic(out / "best.json", j);
  return j;
}

}  // namespace

}  // namespace cxr::tune
