// The trust checks of the Grad-CAM maps (explain's summary.json "trust"):
// per model and image set a deletion curve (map-guided vs random cells),
// the randomisation cascade curve, and rounded tables of both and of the
// lung vs border energy against the uniform-map reference. Every number
// shown is a number of the file, rounded to three decimals.
#include <cmath>
#include <filesystem>

#include "cxr/common/fs.h"
#include "cxr/common/text.h"
#include "cxr/viz/plot.h"
#include "html.h"
#include "page.h"

namespace fs = std::filesystem;

namespace cxr::report::detail {
namespace {

using nlohmann::json;

// The numbers of a JSON array (NaN for null), empty for anything else.
std::vector<double> numbers(const json& a) {
  std::vector<double> out;
  if (!a.is_array()) return out;
  for (const auto& v : a) out.push_back(number(v));
  return out;
}

// Guided and random mean drops per fraction, as a chart and a table.
void write_deletion(Page& p, const std::string& model, const TrustSet& s) {
  const json& d = s.trust().value("deletion", json::object());
  const std::vector<double> f = numbers(d.value("fractions", json())),
                            g = numbers(d.value("mean_drop_guided", json())),
                            r = numbers(d.value("mean_drop_random", json()));
  if (f.empty() || g.size() != f.size() || r.size() != f.size()) {
    p.h << "<p class=missing>deletion check: not available for this "
           "run</p>\n";
    return;
  }
  viz::LineChart c;
  c.title = "Deletion: guided vs random cells";
  c.x_label = "cells blanked (%)";
  c.y_label = "mean drop of P(predicted class)";
  c.width = 520;
  c.height = 340;
  viz::Series guided{"cells the map ranks highest", {}, g};
  viz::Series random{"as many random cells", {}, r, true};
  for (double v : f) guided.x.push_back(100 * v);
  random.x = guided.x;
  c.series = {guided, random};
  p.h << "<figure>"
      << chart_img(c, "deletion curve of " + model + ", " + s.label)
      << "<figcaption>The map is faithful where the guided curve lies above "
         "the random one (its cells matter more to the model).</figcaption>"
         "</figure>\n";
  p.h << "<table class=\"trust-deletion\"><caption>Deletion ("
      << d["cell_pixels"] << " px cells, random order repeated "
      << d["random_repeats"]
      << " times)</caption><tr><th>cells blanked</th><th>drop, guided</th>"
         "<th>drop, random</th><th>guided − random</th></tr>\n";
  for (size_t i = 0; i < f.size(); ++i) {
    p.h << "<tr><td>" << percent_of(f[i]) << "</td><td>" << fixed(g[i])
        << "</td><td>" << fixed(r[i]) << "</td><td>" << fixed(g[i] - r[i])
        << "</td></tr>\n";
  }
  p.h << "</table>\n";
}

// The cascade's mean |rank correlation| per step, or what an older run
// wrote instead (one step over the top modules).
void write_randomization(Page& p, const std::string& model, const TrustSet& s) {
  const json& r = s.trust().value("randomization", json::object());
  const json& cascade = r.value("cascade", json::array());
  if (!cascade.is_array() || cascade.empty()) {
    p.h << "<p class=\"missing\">Randomisation cascade: not available for "
           "this run (made by an older version).";
    if (r.contains("mean_rank_correlation")) {
      p.h << " Its single-step check, re-initialising <code>"
          << html_escape(r.value("modules", json::array()).dump())
          << "</code>, left a mean rank correlation of "
          << num(r["mean_rank_correlation"]) << " with the original maps.";
    }
    p.h << "</p>\n";
    return;
  }
  viz::LineChart c;
  c.title = "Randomisation cascade";
  c.x_label = "layers re-initialised from the output (steps)";
  c.y_label = "mean |rank correlation|";
  c.y_min = 0;
  c.y_max = 1;
  c.width = 520;
  c.height = 340;
  viz::Series curve{"map vs original", {}, {}};
  for (size_t i = 0; i < cascade.size(); ++i) {
    curve.x.push_back(static_cast<double>(i + 1));
    curve.y.push_back(number(cascade[i]["mean_abs_rank_correlation"]));
  }
  const double line = number(r.value("untrustworthy_above", json()));
  c.series = {curve};
  if (std::isfinite(line)) {
    c.series.push_back({"fails above this at the deepest step",
                        {1.0, static_cast<double>(cascade.size())},
                        {line, line},
                        true});
  }
  p.h << "<figure>"
      << chart_img(c, "randomisation cascade of " + model + ", " + s.label)
      << "<figcaption>A map that explains the model decorrelates as more of "
         "the model is destroyed.</figcaption></figure>\n";
  p.h << "<table class=\"trust-cascade\"><caption>Randomisation cascade: "
      << (r.value("untrustworthy", true) ? "fails" : "passes")
      << "</caption><tr><th>step</th><th>re-initialised down to</th>"
         "<th>mean |rank corr.|</th><th>mean rank corr.</th></tr>\n";
  for (size_t i = 0; i < cascade.size(); ++i) {
    p.h << "<tr><td>" << i + 1 << "</td><td><code>"
        << html_escape(cascade[i].value("layer", std::string()))
        << "</code></td><td>" << num(cascade[i]["mean_abs_rank_correlation"])
        << "</td><td>" << num(cascade[i]["mean_rank_correlation"])
        << "</td></tr>\n";
  }
  p.h << "</table>\n";
}

// Shares of the map mass in the lung box and the border frame.
void write_energy(Page& p, const TrustSet& s) {
  const json& e = s.trust().value("energy", json::object());
  if (!e.contains("mean") || !e.contains("uniform_map")) {
    p.h << "<p class=missing>energy check: not available for this run</p>\n";
    return;
  }
  p.h << "<table class=\"trust-energy\"><caption>Share of the map mass by "
         "region</caption><tr><th>region</th><th>all images</th>"
         "<th>correct</th><th>wrong</th><th>uniform map</th></tr>\n";
  for (const char* region : {"lung", "border"}) {
    p.h << "<tr><td>"
        << (std::string(region) == "lung" ? "lung box" : "border frame")
        << "</td>";
    for (const char* k : {"mean", "correct", "wrong", "uniform_map"}) {
      p.h << "<td>" << num(e.value(k, json::object()).value(region, json()))
          << "</td>";
    }
    p.h << "</tr>\n";
  }
  p.h << "</table>\n";
}

void write_set(Page& p, const Model& m, const TrustSet& s) {
  const json& es = s.summary;
  p.h << "<h4>" << html_escape(s.label) << " (" << es.value("images", 0)
      << " images, layer <code>"
      << html_escape(es.value("layer", std::string())) << "</code>)</h4>\n"
      << "<div class=\"figs\">";
  write_deletion(p, m.name, s);
  write_randomization(p, m.name, s);
  p.h << "</div><div class=\"tables\">";
  write_energy(p, s);
  p.h << "</div>\n";
}

}  // namespace

std::vector<TrustSet> trust_sets(const Model& m, const std::string& split) {
  std::vector<TrustSet> out;
  for (const char* kind : {"explain-examples", "explain-misclassified"}) {
    const fs::path f = m.run / kind / "summary.json";
    if (!fs::exists(f)) continue;
    json es = read_json(f);
    if (!es.contains("trust") || !es["trust"].is_object()) continue;
    out.push_back({kind,
                   std::string(kind) == "explain-examples"
                       ? "examples"
                       : "misclassified " + split + " images",
                   std::move(es)});
  }
  return out;
}

int deletion_index(const json& deletion, double target) {
  const json& f = deletion.value("fractions", json::array());
  const json& g = deletion.value("mean_drop_guided", json::array());
  const json& r = deletion.value("mean_drop_random", json::array());
  if (!f.is_array() || !g.is_array() || !r.is_array() || g.size() != f.size() ||
      r.size() != f.size()) {
    return -1;
  }
  int best = -1;
  for (size_t i = 0; i < f.size(); ++i) {
    if (!std::isfinite(number(f[i])) || !std::isfinite(number(g[i])) ||
        !std::isfinite(number(r[i]))) {
      continue;
    }
    if (best < 0 ||
        std::abs(number(f[i]) - target) < std::abs(number(f[best]) - target)) {
      best = static_cast<int>(i);
    }
  }
  return best;
}

std::string percent_of(double v) {
  const double pc = 100 * v;
  return fixed(pc, std::abs(pc - std::round(pc)) < 1e-9 ? 0 : 1) + " %";
}

void write_trust(Page& p) {
  p.section("trust", "Trust checks of the Grad-CAM maps");
  p.h << "<p>Three checks of whether the maps can be trusted "
         "(docs/trust.md). <b>Deletion</b> (Samek et al. 2017, Petsiuk et "
         "al. 2018): blank the square cells the map ranks highest and "
         "compare the drop of P(predicted class) with blanking as many cells "
         "at random; a faithful map beats random. <b>Randomisation "
         "cascade</b> (Adebayo et al. 2018): re-initialise the network from "
         "the output back, layer by layer, and measure how much the maps "
         "still resemble the original (Spearman rank correlation); a map "
         "that survives the destruction of the weights explains the image, "
         "not the model. <b>Energy</b>: the share of map mass in a box "
         "around the lungs and in the outer frame where text and markers "
         "sit, against a uniform map.</p>\n";
  bool any = false;
  for (const Model& m : p.in.models) {
    const std::vector<TrustSet> sets = trust_sets(m, p.o.split);
    if (sets.empty()) continue;
    any = true;
    p.h << "<h3>" << html_escape(m.name) << "</h3>\n";
    for (const TrustSet& s : sets) write_set(p, m, s);
  }
  if (!any) {
    p.h << "<p class=missing>No trust checks were found (cxr explain RUN "
           "--trust writes them).</p>\n";
  }
}

}  // namespace cxr::report::detail
