// "What this study shows": the report's opening, in words, built only from
// the numbers in the files (metrics.json, the explain folders' trust
// checks, the data's README.md). Every number is the file's, rounded as
// shown; every judgement ("not distinguishable", "not faithful") follows
// from the shown numbers by the rule stated next to it.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "cxr/common/fs.h"
#include "cxr/common/text.h"
#include "html.h"
#include "page.h"

namespace fs = std::filesystem;

namespace cxr::report::detail {
namespace {

using nlohmann::json;

// `v` rounded as the report shows it (three decimals), for comparisons
// that must agree with the printed numbers.
double shown(double v) {
  return std::round(v * 1000) / 1000;
}

std::string ci_text(const json& m) {
  return num(json_field(m, "value")) + " [" + num(json_field(m, "low")) + ", " +
         num(json_field(m, "high")) + "]";
}

// Paths inside a rule ("... of run /a/b/mobilenetv2 ...") as their last
// part, so a sentence stays readable.
std::string short_paths(const std::string& s) {
  std::istringstream in(s);
  std::string word, out;
  while (in >> word) {
    if (word.find('/') != std::string::npos) {
      std::string tail;
      while (!word.empty() &&
             std::ispunct(static_cast<unsigned char>(word.back())) &&
             word.back() != '/') {
        tail.insert(tail.begin(), word.back());
        word.pop_back();
      }
      word = fs::path(word).filename().string() + tail;
    }
    out += (out.empty() ? "" : " ") + word;
  }
  return out;
}

struct Scored {
  const Model* m;
  double acc;
};

// The best model by test accuracy against the next, with the CI width.
void write_best(Page& p) {
  std::vector<Scored> scored;
  for (const Model& m : p.in.models) {
    if (m.metrics.is_null() || !m.metrics.contains("accuracy")) continue;
    const double a = number(json_field(m.metrics, {"accuracy", "value"}));
    if (std::isfinite(a)) scored.push_back({&m, a});
  }
  const std::string& split = p.o.split;
  p.h << "<li><b>Best on the " << html_escape(split) << " split.</b> ";
  if (scored.empty()) {
    p.h << "No model was evaluated on the " << html_escape(split)
        << " split.</li>\n";
    return;
  }
  std::stable_sort(
      scored.begin(), scored.end(),
      [](const Scored& a, const Scored& b) { return a.acc > b.acc; });
  const json& best = scored[0].m->metrics;
  const std::string n = count(json_field(best, "n"));
  p.h << html_escape(scored[0].m->name) << " has the highest accuracy, "
      << ci_text(json_field(best, "accuracy")) << " (n = " << html_escape(n)
      << ").";
  if (scored.size() == 1) {
    p.h << " It is the only model evaluated.</li>\n";
    return;
  }
  const json& next = scored[1].m->metrics;
  const double diff = scored[0].acc - scored[1].acc;
  const double low = number(json_field(best, {"accuracy", "low"})),
               high = number(json_field(best, {"accuracy", "high"}));
  const double next_high = number(json_field(next, {"accuracy", "high"}));
  p.h << " Next is " << html_escape(scored[1].m->name) << ", "
      << ci_text(json_field(next, "accuracy")) << ". The difference, "
      << fixed(diff) << ", is ";
  if (std::isfinite(high - low)) {
    p.h << (shown(diff) < shown(high) - shown(low) ? "smaller than"
                                                   : "at least")
        << " the width of the best model's "
        << (best.contains("confidence")
                ? fixed(100 * number(json_field(best, "confidence")), 0) + " % "
                : std::string())
        << "CI (" << fixed(high - low) << ")";
  } else {
    p.h << "of unknown weight (no CI in metrics.json)";
  }
  if (std::isfinite(low) && std::isfinite(next_high)) {
    if (shown(low) <= shown(next_high)) {
      p.h << ", and the two intervals overlap: <b>not distinguishable at n "
             "= "
          << html_escape(n) << "</b>";
    } else {
      p.h << ", and the two intervals do not overlap";
    }
  }
  p.h << ".</li>\n";
}

// Each model's threshold and the rule that chose it (metrics.json).
void write_thresholds(Page& p) {
  std::string positive = "the positive class";
  for (const Model& m : p.in.models) {
    if (m.metrics.is_object() && m.metrics.contains("classes")) {
      positive =
          json_text(json_field(m.metrics, "classes"), "positive", positive);
      break;
    }
  }
  p.h << "<li><b>Decision threshold</b> (P(" << html_escape(positive)
      << ") at or above it is called " << html_escape(positive) << "):<ul>\n";
  bool any = false;
  for (const Model& m : p.in.models) {
    if (m.metrics.is_null() || !m.metrics.contains("threshold")) continue;
    p.h << "<li>" << html_escape(m.name) << ": <b>"
        << num(json_field(m.metrics, "threshold")) << "</b>, "
        << html_escape(short_paths(
               json_text(m.metrics, "threshold_rule", "rule not recorded")))
        << "</li>\n";
    any = true;
  }
  if (!any) p.h << "<li>not recorded</li>\n";
  p.h << "</ul></li>\n";
}

// One image set's deletion result at about 20 % of the cells: faithful
// when the guided drop, as shown, is above the random one.
std::string deletion_text(const TrustSet& s) {
  const json& d = json_field(s.trust(), "deletion");
  const int i = deletion_index(d);
  if (i < 0) return "deletion check not available";
  const size_t at = static_cast<size_t>(i);
  const double g = numbers(json_field(d, "mean_drop_guided"))[at],
               r = numbers(json_field(d, "mean_drop_random"))[at];
  return "blanking the " + percent_of(numbers(json_field(d, "fractions"))[at]) +
         " of cells the maps rank highest dropped P by " + fixed(g) +
         " against " + fixed(r) + " for random cells: " +
         (shown(g) > shown(r)
              ? std::string("faithful (better than random)")
              : std::string("<b>not faithful for these images</b> (no "
                            "better than random)"));
}

// The cascade's verdict (explain's rule, stated in docs/trust.md) and its
// first and last points; what an older run has instead.
std::string cascade_text(const TrustSet& s) {
  const json& r = json_field(s.trust(), "randomization");
  const json& c = json_field(r, "cascade");
  if (!c.is_array() || c.empty()) {
    std::string t =
        "randomisation cascade not available for this run (made by an "
        "older version)";
    if (r.contains("mean_rank_correlation")) {
      t += "; its single-step check left a rank correlation of " +
           num(json_field(r, "mean_rank_correlation"));
    }
    return t;
  }
  const bool passes = json_field(r, "untrustworthy") == false;
  const json& first = json_field(c.front(), "mean_abs_rank_correlation");
  const json& last = json_field(c.back(), "mean_abs_rank_correlation");
  // A pass whose correlation does not fall further (already low after the
  // first step, within the rule's tolerance) is not "decorrelating deeper".
  const bool falls = first.is_number() && last.is_number() &&
                     last.get<double>() < first.get<double>();
  return std::string("randomisation cascade ") +
         (passes ? "passes" : "<b>fails</b>") + ": mean |rank correlation| " +
         num(first) + " after step 1, " + num(last) + " after step " +
         std::to_string(c.size()) +
         (!passes ? " (the maps do not decorrelate as the cascade goes "
                    "deeper: they follow the image more than the model)"
          : falls ? " (the maps decorrelate as the cascade goes deeper)"
                  : " (the maps were already decorrelated after the first "
                    "step and stay so)");
}

// Lung and border shares against a uniform map, as shown.
std::string energy_text(const TrustSet& s) {
  const json& e = json_field(s.trust(), "energy");
  const json& mean = json_field(e, "mean");
  const json& uni = json_field(e, "uniform_map");
  if (!mean.is_object() || !uni.is_object()) {
    return "energy check not available";
  }
  const double l = number(json_field(mean, "lung")),
               b = number(json_field(mean, "border")),
               ul = number(json_field(uni, "lung")),
               ub = number(json_field(uni, "border"));
  if (!std::isfinite(l) || !std::isfinite(b)) {
    return "energy check not available (maps without mass)";
  }
  std::string t = "lung box " + fixed(l) + " of the map mass (uniform map " +
                  fixed(ul) + "), border frame " + fixed(b) + " (uniform map " +
                  fixed(ub) + "): ";
  if (shown(b) >= shown(ub)) {
    t += "<b>as much on the border, where text and markers sit, as a "
         "uniform map or more</b>";
  } else if (shown(l) > shown(ul)) {
    t += "more on the lungs than a uniform map";
  } else {
    t += "no more on the lungs than a uniform map";
  }
  return t;
}

void write_trust_summary(Page& p) {
  p.h << "<li><b>Trust checks of the Grad-CAM maps</b> (<a "
         "href=\"#trust\">details</a>):<ul>\n";
  const std::vector<ModelTrust> models = models_with_trust(p);
  for (const ModelTrust& mt : models) {
    p.h << "<li>" << html_escape(mt.model->name) << "<ul>\n";
    for (const TrustSet& s : mt.sets) {
      p.h << "<li>" << html_escape(s.label) << " ("
          << count(json_field(s.summary, "images"))
          << " images): " << deletion_text(s) << "; " << cascade_text(s) << "; "
          << energy_text(s) << ".</li>\n";
    }
    p.h << "</ul></li>\n";
  }
  if (models.empty()) p.h << "<li>No trust checks were run.</li>\n";
  p.h << "</ul></li>\n";
}

void write_ood_summary(Page& p) {
  std::vector<std::string> parts;
  for (const Model& m : p.in.models) {
    if (m.metrics.is_null() || !m.metrics.contains("ood")) continue;
    const double r = number(json_field(m.metrics, {"ood", "flag_rate"}));
    if (!std::isfinite(r)) continue;
    std::string part = html_escape(m.name) + " " + fixed(100 * r, 1) + " %";
    const fs::path oj = m.run / "eval-ood" / "ood.json";
    if (fs::exists(oj)) {
      const json o = read_json(oj);
      double lo = INFINITY, hi = -INFINITY;
      const json& sets = json_field(o, "sets");
      for (size_t i = 0; sets.is_array() && i < sets.size(); ++i) {
        const double f = number(json_field(sets[i], "flag_rate"));
        if (!std::isfinite(f)) continue;
        lo = std::min(lo, f);
        hi = std::max(hi, f);
      }
      if (lo <= hi) {
        const std::string a = fixed(100 * lo, 1), b = fixed(100 * hi, 1);
        part +=
            " (out-of-distribution sets: " + (a == b ? a : a + "–" + b) + " %)";
      }
    }
    parts.push_back(part);
  }
  if (parts.empty()) return;
  p.h << "<li><b>Out-of-distribution warning.</b> Share of the "
      << html_escape(p.o.split) << " images flagged: ";
  for (size_t i = 0; i < parts.size(); ++i) {
    p.h << (i ? "; " : "") << parts[i];
  }
  p.h << " (<a href=\"#ood\">details</a>).</li>\n";
}

// Where the data's README.md may be: study.json's data paths and the runs'
// data roots, as given and relative to the study's parent folders.
std::vector<fs::path> readme_candidates(const Page& p) {
  std::vector<std::string> roots;
  const json& sj = p.in.sj;
  if (sj.is_object()) {
    roots.push_back(json_text(json_field(sj, "options"), "data"));
    roots.push_back(json_text(sj, "data"));
  }
  for (const Model& m : p.in.models) {
    roots.push_back(json_text(json_field(m.config, "data"), "root"));
  }
  std::vector<fs::path> out;
  for (const std::string& r : roots) {
    if (r.empty()) continue;
    out.push_back(fs::path(r) / "README.md");
    if (fs::path(r).is_relative() && !p.in.study.empty()) {
      const fs::path s = fs::absolute(p.in.study);
      out.push_back(s.parent_path() / r / "README.md");
      out.push_back(s.parent_path().parent_path() / r / "README.md");
    }
  }
  return out;
}

// The README's bullet (a "- " item, joined over its lines) that says where
// the classes come from, or "" when it has none.
std::string source_statement(const fs::path& readme) {
  std::ifstream in(readme);
  std::string line, item;
  std::vector<std::string> items;
  while (std::getline(in, line)) {
    if (line.rfind("- ", 0) == 0) {
      if (!item.empty()) items.push_back(item);
      item = line.substr(2);
    } else if (!item.empty() && !line.empty() && line[0] == ' ') {
      item += " " + line.substr(line.find_first_not_of(' '));
    } else if (!item.empty()) {
      items.push_back(item);
      item.clear();
    }
  }
  if (!item.empty()) items.push_back(item);
  for (const std::string& it : items) {
    std::string lower = it;
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    if (lower.find("source") != std::string::npos &&
        lower.find("different") != std::string::npos) {
      return it;
    }
  }
  return "";
}

void write_confound(Page& p) {
  p.h << "<li><b>Known confound.</b> ";
  for (const fs::path& readme : readme_candidates(p)) {
    std::error_code ec;
    if (!fs::is_regular_file(readme, ec)) continue;
    const std::string s = source_statement(readme);
    if (s.empty()) {
      p.h << "The data's README (<code>" << html_escape(readme.string())
          << "</code>) does not say where the classes come from; if they "
             "come from different sources, a model can learn the source "
             "instead of the disease.</li>\n";
    } else {
      p.h << "The data's README (<code>" << html_escape(readme.string())
          << "</code>): <q>" << html_escape(s)
          << "</q> High accuracy may partly measure the source: read the "
             "trust checks and the Grad-CAM panels.</li>\n";
    }
    return;
  }
  p.h << "The data's README.md was not found, so this report cannot say "
         "whether the classes come from different sources; if they do, a "
         "model can learn the source instead of the disease.</li>\n";
}

}  // namespace

void write_summary(Page& p) {
  p.section("summary", "What this study shows");
  p.h << "<ul class=\"summary\">\n";
  write_best(p);
  write_thresholds(p);
  write_trust_summary(p);
  write_ood_summary(p);
  write_confound(p);
  p.h << "</ul>\n";
}

}  // namespace cxr::report::detail
