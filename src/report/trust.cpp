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

// The trust figures share one size, so they sit side by side.
viz::LineChart trust_chart(const std::string& title,
                           const std::string& x_label,
                           const std::string& y_label) {
  viz::LineChart c;
  c.title = title;
  c.x_label = x_label;
  c.y_label = y_label;
  c.width = 520;
  c.height = 340;
  return c;
}

// Guided and random mean drops per fraction, as a chart and a table.
void write_deletion(Page& p, const std::string& model, const TrustSet& s) {
  const json& d = json_field(s.trust(), "deletion");
  const std::vector<double> f = numbers(json_field(d, "fractions")),
                            g = numbers(json_field(d, "mean_drop_guided")),
                            r = numbers(json_field(d, "mean_drop_random"));
  if (f.empty() || g.size() != f.size() || r.size() != f.size()) {
    p.h << "<p class=missing>deletion check: not available for this "
           "run</p>\n";
    return;
  }
  viz::LineChart c =
      trust_chart("Deletion: guided vs random cells", "cells blanked (%)",
                  "mean drop of P(predicted class)");
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
      << count(json_field(d, "cell_pixels"))
      << " px cells, random order repeated "
      << count(json_field(d, "random_repeats"))
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
  const json& r = json_field(s.trust(), "randomization");
  const json& cascade = json_field(r, "cascade");
  if (!cascade.is_array() || cascade.empty()) {
    p.h << "<p class=\"missing\">Randomisation cascade: not available for "
           "this run (made by an older version).";
    if (r.contains("mean_rank_correlation")) {
      p.h << " Its single-step check, re-initialising <code>"
          << html_escape(json_field(r, "modules").is_null()
                             ? std::string("n/a")
                             : json_field(r, "modules").dump())
          << "</code>, left a mean rank correlation of "
          << num(json_field(r, "mean_rank_correlation"))
          << " with the original maps.";
    }
    p.h << "</p>\n";
    return;
  }
  viz::LineChart c = trust_chart(
      "Randomisation cascade", "layers re-initialised from the output (steps)",
      "mean |rank correlation|");
  c.y_min = 0;
  c.y_max = 1;
  viz::Series curve{"map vs original", {}, {}};
  for (size_t i = 0; i < cascade.size(); ++i) {
    curve.x.push_back(static_cast<double>(i + 1));
    curve.y.push_back(
        number(json_field(cascade[i], "mean_abs_rank_correlation")));
  }
  const double line = number(json_field(r, "untrustworthy_above"));
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
      << (json_field(r, "untrustworthy") == false ? "passes" : "fails")
      << "</caption><tr><th>step</th><th>re-initialised down to</th>"
         "<th>mean |rank corr.|</th><th>mean rank corr.</th></tr>\n";
  for (size_t i = 0; i < cascade.size(); ++i) {
    p.h << "<tr><td>" << i + 1 << "</td><td><code>"
        << html_escape(json_text(cascade[i], "layer")) << "</code></td><td>"
        << num(json_field(cascade[i], "mean_abs_rank_correlation"))
        << "</td><td>" << num(json_field(cascade[i], "mean_rank_correlation"))
        << "</td></tr>\n";
  }
  p.h << "</table>\n";
}

// Shares of the map mass in the lung box and the border frame.
void write_energy(Page& p, const TrustSet& s) {
  const json& e = json_field(s.trust(), "energy");
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
      p.h << "<td>" << num(json_field(e, {k, region})) << "</td>";
    }
    p.h << "</tr>\n";
  }
  p.h << "</table>\n";
}

void write_set(Page& p, const Model& m, const TrustSet& s) {
  const json& es = s.summary;
  p.h << "<h4>" << html_escape(s.label) << " ("
      << count(json_field(es, "images")) << " images, layer <code>"
      << html_escape(json_text(es, "layer", "n/a")) << "</code>)</h4>\n"
      << "<div class=\"figs\">";
  write_deletion(p, m.name, s);
  write_randomization(p, m.name, s);
  p.h << "</div><div class=\"tables\">";
  write_energy(p, s);
  p.h << "</div>\n";
}

}  // namespace

const json& TrustSet::trust() const {
  return json_field(summary, "trust");
}

std::vector<ModelTrust> models_with_trust(const Page& p) {
  std::vector<ModelTrust> out;
  for (const Model& m : p.in.models) {
    std::vector<TrustSet> sets = trust_sets(m, p.o.split);
    if (!sets.empty()) out.push_back({&m, std::move(sets)});
  }
  return out;
}

std::vector<TrustSet> trust_sets(const Model& m, const std::string& split) {
  std::vector<TrustSet> out;
  for (const char* kind : {"explain-examples", "explain-misclassified"}) {
    const fs::path f = m.run / kind / "summary.json";
    if (!fs::exists(f)) continue;
    json es = read_json(f);
    if (!json_field(es, "trust").is_object()) continue;
    out.push_back({kind,
                   std::string(kind) == "explain-examples"
                       ? "examples"
                       : "misclassified " + split + " images",
                   std::move(es)});
  }
  return out;
}

int deletion_index(const json& deletion, double target) {
  const json& f = json_field(deletion, "fractions");
  const json& g = json_field(deletion, "mean_drop_guided");
  const json& r = json_field(deletion, "mean_drop_random");
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
  p.section(
      "trust", "Trust checks of the Grad-CAM maps",
      "Three checks of whether the maps can be trusted "
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
      "sit, against a uniform map.");
  const std::vector<ModelTrust> models = models_with_trust(p);
  for (const ModelTrust& mt : models) {
    p.h << "<h3>" << html_escape(mt.model->name) << "</h3>\n";
    for (const TrustSet& s : mt.sets) write_set(p, *mt.model, s);
  }
  if (models.empty()) {
    p.h << "<p class=missing>No trust checks were found (cxr explain RUN "
           "--trust writes them).</p>\n";
  }
}

}  // namespace cxr::report::detail
