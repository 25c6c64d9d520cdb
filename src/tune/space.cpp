/// Search spaces: --grid tokens and --config files -> SearchSpace, the grid
/// and random trial lists, and applying a trial's parameters to RunOptions.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <set>
#include <sstream>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/tune/tune.h"

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

Params without_unused_params(const Params& p,
                             const std::string& base_optimizer) {
  const auto opt = p.find("optimizer");
  const std::string& used = opt == p.end() ? base_optimizer : opt->second;
  if (used == "sgd" || p.count("momentum") == 0) return p;
  Params q = p;
  q.erase("momentum");
  return q;
}

void check_space_applies(const SearchSpace& space,
                         const std::string& base_optimizer) {
  const ParamSpec* momentum = nullptr;
  std::vector<std::string> optimizers = {base_optimizer};
  for (const auto& s : space.params) {
    if (s.name == "momentum") momentum = &s;
    if (s.name == "optimizer") optimizers = s.values;
  }
  if (!momentum) return;
  if (std::find(optimizers.begin(), optimizers.end(), "sgd") !=
      optimizers.end()) {
    return;
  }
  std::string list;
  for (const auto& v : optimizers) list += (list.empty() ? "" : ", ") + v;
  throw ConfigError(
      "search-space parameter 'momentum' applies to optimizer sgd only, and "
      "no trial of this search uses sgd (optimizer " +
      list +
      " ignores momentum); drop momentum or add sgd to the optimizer "
      "values");
}

void apply_params(const Params& params, train::RunOptions& o) {
  for (const auto& [n, v] : params) {
    const std::string token = n + "=" + v;
    if (n == "filters") {
      // In int64: one value B means the blocks B, 2B, 4B, 4B, and 4B
      // overflowed int for B near parse_int's bound (UB; fuzz_tune_space:
      // filters=999999998).
      std::vector<int64_t> f;
      const bool one_value = v.find('-') == std::string::npos;
      if (!one_value) {
        for (const auto& part : split(v, '-')) f.push_back(parse_int(part, n));
      } else {
        const int64_t b = parse_int(v, n);
        f = {b, 2 * b, 4 * b, 4 * b};
      }
      for (int64_t x : f) {
        // The baseline's own bound on a block (models/baseline.cpp).
        if (x <= 0 || x > 4096) {
          throw ConfigError(
              token + ": each conv block has 1 to 4096 filters" +
              (one_value ? " (one value B means the blocks B, 2B, 4B, 4B: "
                           "B is 1 to 1024)"
                         : ""));
        }
      }
      o.model.filters.assign(f.begin(), f.end());
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

}  // namespace cxr::tune
