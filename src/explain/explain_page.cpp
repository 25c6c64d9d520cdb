// What `cxr explain` reports: summary.json (ExplainResult::to_json), the
// text the CLI prints (format_summary) and the index page with the
// randomisation curve.
#include <sstream>

#include "cxr/common/fs.h"
#include "cxr/common/text.h"
#include "cxr/explain/explain.h"
#include "cxr/version.h"
#include "cxr/viz/plot.h"
#include "internal.h"

namespace cxr::explain {

namespace fs = std::filesystem;

namespace {

/// The points of the randomisation curve (mean |Spearman| per step).
std::vector<double> curve(const TrustReport& t) {
  std::vector<double> y;
  for (const auto& s : t.cascade) y.push_back(s.mean_abs_rank_correlation);
  return y;
}

/// Two lines on the randomisation cascade.
std::string randomization_text(const TrustReport& t) {
  std::ostringstream s;
  s << "randomisation cascade, mean |rank correlation| with the original "
       "map (output first): ";
  for (size_t i = 0; i < t.cascade.size(); ++i) {
    s << (i ? ", " : "") << t.cascade[i].layer << " "
      << fixed(t.cascade[i].mean_abs_rank_correlation, 3, "nan");
  }
  s << (t.untrustworthy
            ? "\n  -> UNTRUSTWORTHY: the maps do not decorrelate as the "
              "model's weights are destroyed\n"
            : "\n  (the maps decorrelate: they depend on the model)\n");
  return s.str();
}

void randomization_chart(const TrustReport& t, const fs::path& png) {
  viz::LineChart chart;
  chart.title = "Model randomisation cascade (Adebayo et al. 2018)";
  chart.x_label = "layers re-initialised, from the output (1 = head)";
  chart.y_label = "mean |rank correlation| with the original map";
  const auto y = curve(t);
  std::vector<double> x;
  for (size_t i = 0; i < y.size(); ++i) x.push_back(static_cast<double>(i + 1));
  const double last = static_cast<double>(y.size());
  chart.series = {{"maps", x, y},
                  {"pass line",
                   {1.0, last},
                   {t.untrustworthy_correlation, t.untrustworthy_correlation},
                   /*dashed=*/true}};
  chart.x_min = 0.5;
  chart.x_max = last + 0.5;
  chart.y_min = 0.0;
  chart.y_max = 1.0;
  viz::save_line_chart(chart, png.string());
}

/// The trust paragraph of the index page: verdict, curve, table.
std::string trust_html(const TrustReport& t) {
  std::ostringstream h;
  h << "<p>Randomisation cascade (Adebayo et al. 2018): the network is "
       "re-initialised from the output back to the first layer; mean rank "
       "correlation with the original map after the deepest step "
    << fixed(t.mean_rank_correlation, 3, "nan")
    << (t.untrustworthy
            ? " &mdash; <b class=\"wrong\">the maps do not decorrelate as "
              "the weights are destroyed: untrustworthy</b>"
            : " (the maps decorrelate: they depend on the model)")
    << ". See trust.json.</p>\n"
    << "<p><img src=\"randomisation.png\" alt=\"randomisation curve\" "
       "style=\"max-width:720px;width:100%\"></p>\n<table>\n"
    << "<tr><th>step</th><th>re-initialised down to</th>"
       "<th>mean |rank correlation|</th></tr>\n";
  for (size_t i = 0; i < t.cascade.size(); ++i) {
    h << "<tr><td>" << i + 1 << "</td><td><code>"
      << html_escape(t.cascade[i].layer) << "</code></td><td>"
      << fixed(t.cascade[i].mean_abs_rank_correlation, 3, "nan")
      << "</td></tr>\n";
  }
  h << "</table>\n";
  return h.str();
}

}  // namespace

double ExplainResult::images_per_second() const {
  return gradcam_seconds > 0 ? static_cast<double>(images) / gradcam_seconds
                             : 0.0;
}

nlohmann::json ExplainResult::skipped_json() const {
  auto sk = nlohmann::json::array();
  for (const auto& b : skipped) {
    sk.push_back({{"file", b.file},
                  {"reason", b.reason},
                  {"split", b.split.empty() ? nlohmann::json(nullptr)
                                            : nlohmann::json(b.split)}});
  }
  return sk;
}

nlohmann::json ExplainResult::to_json() const {
  nlohmann::json j = {{"run", run},
                      {"out", out},
                      {"arch", arch},
                      {"layer", layer},
                      {"layers", layers},
                      {"device", device},
                      {"source", source},
                      {"threshold", threshold},
                      {"positive", positive},
                      {"negative", negative},
                      {"images", images},
                      {"labelled", labelled},
                      {"misclassified", misclassified},
                      {"gradcam_seconds", gradcam_seconds},
                      {"gradcam_images_per_second", images_per_second()},
                      {"seconds", seconds},
                      {"records", "records/"},
                      {"panels", "panels/"},
                      {"index", "index.html"},
                      {"cxr_version", kVersion},
                      {"created", created}};
  if (!split.empty()) {
    j["split"] = split;
    j["split_size"] = split_size;
    j["only_misclassified"] = only_misclassified;
    j["skipped"] = skipped_json();
  } else {
    j["inputs"] = inputs;
  }
  if (maps_saved) j["maps"] = "maps/";
  if (trust) {
    auto t = trust->to_json();
    t.erase("images");
    j["trust"] = t;
  }
  return j;
}

std::string format_summary(const ExplainResult& r) {
  std::ostringstream s;
  s << "explained " << r.images << " " << r.source << " on layer " << r.layer
    << " (" << fixed(r.images_per_second(), 1, "nan")
    << " img/s for prediction + both maps)\n";
  if (r.trust) {
    const auto& t = *r.trust;
    s << randomization_text(t) << "deletion, drop of P(predicted): ";
    for (size_t i = 0; i < t.deletion_fractions.size(); ++i) {
      s << (i ? ", " : "") << fixed(100 * t.deletion_fractions[i], 0)
        << "%: map " << fixed(t.mean_drop_guided[i], 3, "nan") << " vs random "
        << fixed(t.mean_drop_random[i], 3, "nan");
    }
    const auto& g = t.regions;
    s << "\nmap energy: lung field " << fixed(t.mean_energy.lung, 3, "nan")
      << ", border " << fixed(t.mean_energy.border, 3, "nan")
      << " (uniform map: "
      << fixed((g.lung_x1 - g.lung_x0) * (g.lung_y1 - g.lung_y0), 3) << ", "
      << fixed(1.0 - (1.0 - 2.0 * g.border) * (1.0 - 2.0 * g.border), 3)
      << ")\n";
  }
  s << "wrote " << r.out << "/{index.html,summary.json,panels/,records/,"
    << "thumbs/" << (r.maps_saved ? ",maps/" : "") << "}"
    << (r.trust ? " and trust.json" : "") << "\n";
  return s.str();
}

namespace detail {

void write_index(const ExplainResult& r, const fs::path& out, int size) {
  std::ostringstream html;
  html << "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\n"
       << "<title>cxr explain: " << html_escape(r.source)
       << "</title>\n<style>body{font-family:sans-serif;margin:1.5em}"
       << ".card{display:inline-block;width:" << std::max(size, 128) + 16
       << "px;margin:6px;vertical-align:top;font-size:12px}"
       << ".card img{width:100%;image-rendering:pixelated}"
       << ".wrong{color:#b00}</style></head><body>\n"
       << "<h1>Grad-CAM: " << r.images << " " << html_escape(r.source)
       << "</h1>\n<p>run <code>" << html_escape(r.run)
       << "</code>, layer <code>" << html_escape(r.layer)
       << "</code>, threshold " << fixed(r.threshold, 3, "nan")
       << ". Thumbnails show the map of the predicted class; click for the "
          "panel (original | "
       << html_escape(r.positive) << " evidence | " << html_escape(r.negative)
       << " evidence).</p>\n";
  if (r.trust && !r.trust->cascade.empty()) {
    randomization_chart(*r.trust, out / "randomisation.png");
    html << trust_html(*r.trust);
  }
  if (!r.skipped.empty()) {
    html << "<p>Skipped " << r.skipped.size()
         << " unreadable images (--skip-bad):</p>\n<ul>\n";
    for (const auto& b : r.skipped) {
      html << "<li><code>" << html_escape(b.file)
           << "</code>: " << html_escape(b.reason) << "</li>\n";
    }
    html << "</ul>\n";
  }
  if (r.images == 0) html << "<p>Nothing to show.</p>\n";
  for (const auto& im : r.explained) {
    const bool bad = im.label >= 0 && (im.label == 1) != im.predicted_positive;
    const std::string name = html_escape(im.name);
    html << "<div class=\"card\"><a href=\"panels/" << name
         << ".png\"><img src=\"thumbs/" << name
         << ".png\" loading=\"lazy\" alt=\"" << name << "\"></a><br>"
         << html_escape(fs::path(im.file).filename().string()) << "<br><span"
         << (bad ? " class=\"wrong\"" : "") << ">pred "
         << html_escape(im.predicted_positive ? r.positive : r.negative)
         << ", P(" << html_escape(r.positive) << ") "
         << fixed(im.probability, 3, "nan");
    if (im.label >= 0) {
      html << ", true " << html_escape(im.label == 1 ? r.positive : r.negative);
    }
    html << "</span></div>\n";
  }
  html << "</body></html>\n";
  write_text_atomic(out / "index.html", html.str());
}

}  // namespace detail

}  // namespace cxr::explain
