// `cxr report`: reads a study folder or run folders and writes one HTML
// page, section by section (each section writer below reads only its own
// files, so a missing file costs one section a "not found" line).
#include "cxr/report/report.h"

#include <algorithm>
#include <fstream>
#include <limits>
#include <sstream>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/common/text.h"
#include "cxr/version.h"
#include "cxr/viz/plot.h"
#include "html.h"
#include "page.h"

namespace fs = std::filesystem;

namespace cxr::report {
namespace {

using detail::ci;
using detail::count;
using detail::img;
using detail::Inputs;
using detail::maybe_json;
using detail::missing_keys;
using detail::Model;
using detail::num;
using detail::Page;
using detail::write_ood;
using nlohmann::json;

Inputs read_inputs(const ReportOptions& o) {
  if (o.inputs.empty()) {
    throw ConfigError("give a study folder or run folders to report on");
  }
  Inputs in;
  if (o.inputs.size() == 1 &&
      fs::exists(fs::path(o.inputs[0]) / "study.json")) {
    in.study = o.inputs[0];
    in.sj = read_json(in.study / "study.json");
    const json& models = json_field(in.sj, "models");
    for (size_t i = 0; i < models.size() && models.is_array(); ++i) {
      const std::string run = json_text(models[i], "run");
      if (run.empty()) {
        throw DataError((in.study / "study.json").string() + ": models[" +
                        std::to_string(i) +
                        "] has no \"run\" folder: rerun cxr study, or give "
                        "the run folders to cxr report instead");
      }
      in.models.push_back({json_text(models[i], "name", run), in.study / run,
                           nullptr, nullptr});
    }
  } else {
    for (const auto& path : o.inputs) {
      if (!fs::exists(fs::path(path) / "config.json")) {
        throw DataError("'" + path +
                        "' is neither a study folder (study.json) nor a run "
                        "folder (config.json)");
      }
      in.models.push_back(
          {fs::path(path).filename().string(), path, nullptr, nullptr});
    }
  }
  for (auto& m : in.models) {
    m.config = maybe_json(m.run / "config.json");
    m.metrics = maybe_json(m.run / ("eval-" + o.split) / "metrics.json");
  }
  return in;
}

// Readable at 1280 px (no page-wide horizontal scroll: wide tables and
// code scroll inside their own box, long words wrap) and printable (no
// fixed elements, each section on a new page, figures kept whole).
constexpr char kStyle[] =
    "body{font-family:'DejaVu Sans',sans-serif;max-width:1180px;margin:2em "
    "auto;padding:0 1em;color:#222;line-height:1.45;overflow-wrap:break-word}"
    "h1{border-bottom:3px solid #2a6;padding-bottom:.2em}"
    "h2{margin-top:2em;border-bottom:1px solid #ccc}"
    ".scroll{max-width:100%;overflow-x:auto}"
    "table{border-collapse:collapse;margin:.8em 0;font-size:14px;"
    "max-width:100%}"
    "caption{text-align:left;font-weight:bold;padding:2px 0}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right;"
    "vertical-align:top}"
    "td small,td code{overflow-wrap:anywhere}"
    ".trust-cascade td:nth-child(2){text-align:left}"
    "th{background:#f0f4f2}td:first-child,th:first-child{text-align:left}"
    "img{max-width:100%;height:auto;border:1px solid #ddd;margin:4px 0}"
    "figure{margin:0;display:inline-block;max-width:520px;width:100%;"
    "vertical-align:top}"
    "figcaption{font-size:13px;color:#555}"
    ".figs,.tables{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}"
    ".ci{color:#666;font-size:12px}.note{background:#fff8e0;border-left:4px "
    "solid #e0b000;padding:.5em 1em}.missing{color:#a00}"
    ".summary li{margin:.35em 0}"
    ".grid img{width:32%}code{background:#f4f4f4;padding:0 3px}"
    "pre{white-space:pre-wrap;max-height:40em;overflow:auto;"
    "background:#fafafa;padding:.5em}"
    "nav.toc{background:#f6f8f7;border:1px solid #dde5e0;padding:.3em 1.2em}"
    "nav.toc ol{columns:2;margin:.3em 0}"
    "@media print{body{max-width:none;margin:0}"
    "h2{break-before:page}h2#summary{break-before:auto}"
    "img,figure,table{break-inside:avoid}"
    "pre{max-height:none;overflow:visible}"
    ".scroll{overflow:visible}table{font-size:11px}td,th{padding:2px 4px}"
    ".grid img{width:45%}nav.toc ol{columns:1}}";

void write_head(Page& p) {
  p.h << "<h1>cxr: COVID-19 vs Normal chest X-ray study</h1>\n"
      << "<p class=\"note\">Research use only; not for clinical decisions. "
         "Read the summary's known confound and the trust checks before "
         "trusting the accuracy.</p>\n";
  const json& sj = p.in.sj;
  if (!sj.is_null()) {
    p.h << "<p>Data <code>" << html_escape(json_text(sj, "data", "n/a"))
        << "</code>, generated "
        << html_escape(json_text(sj, "finished", "n/a")) << " in "
        << num(json_field(sj, "minutes"), 1) << " minutes on "
        << html_escape(json_text(sj, "device", "n/a")) << ".</p>\n";
  }
}

// The page: head, title block, table of contents, then the sections.
std::string assemble(const Page& p, const std::string& title_block) {
  std::ostringstream out;
  out << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
         "<meta name=\"viewport\" content=\"width=device-width, "
         "initial-scale=1\"><title>cxr study report</title><style>"
      << kStyle << "</style></head><body>\n"
      << title_block
      << "<nav class=\"toc\" id=\"contents\"><b>Contents</b><ol>";
  for (const auto& [id, title] : p.toc) {
    out << "<li><a href=\"#" << html_escape(id) << "\">" << html_escape(title)
        << "</a></li>";
  }
  out << "</ol></nav>\n" << p.h.str() << "</body></html>\n";
  return out.str();
}

// The reference study's and the plain-PyTorch numbers under ours.
void write_published_rows(Page& p) {
  p.h << "<tr><td><i>reference study: baseline CNN (Keras)</i></td>"
         "<td>200</td><td><b>0.79</b></td><td colspan=6>no CIs, no other "
         "test metrics published</td></tr>\n"
         "<tr><td><i>reference study: ResNet50V2 fine-tuned</i></td>"
         "<td>200</td><td><b>0.76</b></td><td colspan=6></td></tr>\n"
         "<tr><td><i>plain PyTorch baseline on cxr-seed</i></td><td>200</td>"
         "<td><b>0.880</b> <span class=ci>[0.83, 0.92]</span></td><td></td>"
         "<td><b>0.880</b></td><td></td><td></td><td><b>0.955</b></td><td>"
         "</td></tr>\n"
         "<tr><td><i>plain PyTorch MobileNetV2 fine-tuned on cxr-seed</i>"
         "</td><td>200</td><td><b>0.930</b> <span class=ci>[0.89, 0.96]"
         "</span></td><td></td><td><b>0.940</b></td><td></td><td></td><td>"
         "<b>0.982</b></td><td></td></tr></table></div>\n";
}

// metrics.json's {"key": {"value": v}} as v; NaN when it is not there.
double headline(const json& metrics, const char* key) {
  const auto m = metrics.find(key);
  if (m != metrics.end() && m->is_object()) {
    const auto v = m->find("value");
    if (v != m->end() && v->is_number()) return v->get<double>();
  }
  return std::numeric_limits<double>::quiet_NaN();
}

void write_results(Page& p) {
  const std::string& split = p.o.split;
  p.section("results", "Results on the " + split + " split (95 % CIs)");
  p.h << "<div class=\"scroll\"><table "
         "class=\"results\"><tr><th>model</th><th>n</th><th>accuracy</th>"
         "<th>precision</th><th>recall (sensitivity)</th><th>specificity"
         "</th><th>F1</th><th>AUC</th><th>threshold</th></tr>\n";
  for (const auto& m : p.in.models) {
    if (m.metrics.is_null()) {
      p.h << "<tr><td>" << html_escape(m.name)
          << "</td><td colspan=8 class=missing>not evaluated on "
          << html_escape(split) << "</td></tr>\n";
      continue;
    }
    const auto& x = m.metrics;
    const auto at = [&x](const char* key) { return json_field(x, key); };
    p.h << "<tr><td>" << html_escape(m.name) << "</td><td>" << count(at("n"))
        << "</td><td>" << ci(at("accuracy")) << "</td><td>"
        << ci(at("precision")) << "</td><td>" << ci(at("recall")) << "</td><td>"
        << ci(at("specificity")) << "</td><td>" << ci(at("f1")) << "</td><td>"
        << ci(at("auc")) << "</td><td>" << num(at("threshold")) << "<br><small>"
        << html_escape(json_text(x, "threshold_rule"))
        << "</small></td></tr>\n";
    p.summary.models.push_back(
        {m.name, m.run.string(), headline(x, "accuracy"), headline(x, "recall"),
         headline(x, "specificity"), headline(x, "auc")});
  }
  write_published_rows(p);
  const auto& models = p.in.models;
  if (!models.empty() && !models[0].metrics.is_null()) {
    p.h << "<p>" << html_escape(json_text(models[0].metrics, "note"))
        << ".</p>\n";
  }
}

// Near-duplicate pairs found by explore, crossing splits in a table.
void write_leakage(Page& p, const json& d) {
  p.section("leakage", "Duplicate and leakage check");
  if (!d.is_object()) {
    p.h << "<p class=missing>explore/summary.json has no duplicates (cxr "
           "explore writes the check).</p>\n";
    return;
  }
  const json& q = json_field(d, "nearest_similarity_quantiles");
  p.h << "<p>" << html_escape(json_text(d, "method"))
      << ". Near-duplicate threshold "
      << num(json_field(d, "min_similarity"), 2)
      << "; each image's most similar other image: median "
      << num(json_field(q, "0.50")) << ", 99th percentile "
      << num(json_field(q, "0.99")) << ". Exact pairs within splits: "
      << count(json_field(d, "exact_within_split"))
      << "; near pairs within splits: "
      << count(json_field(d, "near_within_split"))
      << "; pairs crossing splits: <b>"
      << count(json_field(d, "cross_split_count")) << "</b>.</p>\n";
  const json& cross = json_field(d, "cross_split");
  if (!cross.is_array() || cross.empty()) return;
  auto side = [](const json& pair, const char* split, const char* path) {
    return html_escape(json_text(pair, split, "?")) + ": " +
           html_escape(fs::path(json_text(pair, path)).filename().string());
  };
  p.h << "<table><tr><th>kind</th><th>similarity</th><th>image A</th>"
         "<th>image B</th></tr>";
  for (const auto& pair : cross) {
    p.h << "<tr><td>" << html_escape(json_text(pair, "kind", "?"))
        << "</td><td>" << num(json_field(pair, "similarity")) << "</td><td>"
        << side(pair, "split_a", "path_a") << "</td><td>"
        << side(pair, "split_b", "path_b") << "</td></tr>";
  }
  p.h << "</table>\n";
}

// A JSON value as written, "n/a" when it is missing.
std::string dump_or_na(const json& v) {
  return v.is_null() ? "n/a" : v.dump();
}

// explore/summary.json of a study: counts, pixel statistics, figures,
// duplicates and augmentation examples.
void write_exploration(Page& p) {
  if (p.in.study.empty()) return;
  const fs::path ex = p.in.study / "explore";
  const json exj = maybe_json(ex / "summary.json");
  if (exj.is_null()) return;
  p.section("data", "Data exploration");
  p.h << missing_keys(exj,
                      {"dataset", "counts", "pixel_stats", "normalization",
                       "image_sizes", "bit_depths", "duplicates"},
                      "explore/summary.json");
  const std::string pos = json_text(json_field(exj, "dataset"), "positive",
                                    "positive"),
                    neg = json_text(json_field(exj, "dataset"), "negative",
                                    "negative");
  p.h << "<table><tr><th>split</th><th>" << html_escape(pos) << "</th><th>"
      << html_escape(neg)
      << "</th><th>pixel mean</th><th>pixel std</th><th>mean "
      << html_escape(pos) << "</th><th>mean " << html_escape(neg)
      << "</th></tr>";
  for (const char* s : {"train", "val", "test"}) {
    const json& c = json_field(exj, {"counts", s});
    const json& px = json_field(exj, {"pixel_stats", s});
    p.h << "<tr><td>" << s << "</td><td>" << count(json_field(c, pos))
        << "</td><td>" << count(json_field(c, neg)) << "</td><td>"
        << num(json_field(px, {"all", "mean"})) << "</td><td>"
        << num(json_field(px, {"all", "std"})) << "</td><td>"
        << num(json_field(px, {pos, "mean"})) << "</td><td>"
        << num(json_field(px, {neg, "mean"})) << "</td></tr>";
  }
  p.h << "</table><p>The reference study reports train 0.53/0.25, val "
         "0.55/0.25, test 0.56/0.26 (mean/std). Normalisation used by the "
         "baseline (train+val): mean "
      << num(json_field(exj, {"normalization", "mean"}), 4) << ", std "
      << num(json_field(exj, {"normalization", "std"}), 4) << ". Image sizes: "
      << html_escape(dump_or_na(json_field(exj, "image_sizes")))
      << "; formats: " << html_escape(dump_or_na(json_field(exj, "bit_depths")))
      << ".</p>\n";
  p.h << img(ex / "histograms.png", "intensity histograms") << "\n"
      << img(ex / "samples.png", "sample grid") << "\n";
  write_leakage(p, json_field(exj, "duplicates"));
  p.section("augmentation", "Augmentation examples");
  p.h << img(ex / "augment.png", "augmentation preview") << "\n";
}

void write_tuning(Page& p) {
  if (p.in.study.empty()) return;
  const json& tuning = json_field(p.in.sj, "tuning");
  for (size_t i = 0; tuning.is_array() && i < tuning.size(); ++i) {
    const json& t = tuning[i];
    const std::string dir = json_text(t, "dir");
    p.section("tuning", "Hyper-parameter search: " + json_text(t, "name", dir));
    if (dir.empty()) {
      p.h << "<p class=missing>study.json's tuning[" << i
          << "] has no dir: its search is not shown.</p>\n";
      continue;
    }
    const fs::path td = p.in.study / dir;
    const json best = maybe_json(td / "best.json");
    if (!best.is_null()) {
      p.h << missing_keys(best, {"mode", "trials", "minutes", "metric", "best"},
                          dir + "/best.json");
      p.h << "<p>Mode " << html_escape(json_text(best, "mode", "n/a")) << ", "
          << count(json_field(best, "trials")) << " trials in "
          << num(json_field(best, "minutes"), 1) << " minutes, ranked by "
          << html_escape(json_text(best, "metric", "n/a")) << ". Best: <code>"
          << html_escape(json_text(json_field(best, "best"), "key", "n/a"))
          << "</code> (best epoch "
          << count(json_field(best, {"best", "best_epoch"})) << ").</p>\n";
    }
    if (fs::exists(td / "trials.csv")) {
      p.h << "<div class=\"scroll\">"
          << detail::table_from_csv(read_text(td / "trials.csv"), 60)
          << "</div>\n";
    }
  }
}

// One line on how a run was trained, from config.json's result.
std::string training_line(const json& config) {
  const json& r = json_field(config, "result");
  const json& model = json_field(config, "model");
  const std::string pretrained = json_text(model, "pretrained");
  std::ostringstream s;
  s << missing_keys(config, {"model", "train", "result"}, "config.json")
    << "<p>" << html_escape(json_text(model, "arch", "n/a")) << ", trained on "
    << html_escape(json_text(json_field(config, "train"), "train_on", "n/a"))
    << ", " << count(json_field(r, "epochs_run"))
    << " epochs (weights of epoch " << count(json_field(r, "best_epoch"))
    << "), " << num(json_field(r, "seconds"), 0) << " s at "
    << num(json_field(r, "images_per_second"), 1) << " images/s on "
    << html_escape(json_text(r, "device", "n/a")) << ", "
    << count(json_field(r, "parameters")) << " parameters"
    << (pretrained.empty()
            ? ""
            : ", ImageNet weights from " +
                  html_escape(fs::path(pretrained).filename().string()))
    << ".</p>";
  return s.str();
}

void write_training(Page& p) {
  p.section("training", "Training curves");
  for (const auto& m : p.in.models) {
    p.h << "<h3>" << html_escape(m.name) << "</h3>";
    if (!m.config.is_null()) p.h << training_line(m.config);
    p.h << img(m.run / "curves.png", m.name + " training curves") << "\n";
  }
}

// One figure per model from its eval folder, side by side.
void write_eval_figures(Page& p, const std::string& file, const char* what) {
  p.h << "<div class=\"grid\">";
  for (const auto& m : p.in.models) {
    p.h << img(m.run / ("eval-" + p.o.split) / file, m.name + " " + what,
               "width:45%");
  }
  p.h << "</div>\n";
}

// Every evaluated model's ROC curve in one chart, drawn for the report.
void write_roc(Page& p) {
  p.section("roc", "ROC curves");
  viz::LineChart rc;
  rc.title = "ROC on the " + p.o.split + " split";
  rc.x_label = "1 - specificity";
  rc.y_label = "sensitivity";
  rc.x_min = rc.y_min = 0;
  rc.x_max = rc.y_max = 1;
  rc.diagonal = true;
  std::string lacking;
  for (const auto& m : p.in.models) {
    if (m.metrics.is_null() || !m.metrics.contains("roc")) continue;
    std::vector<double> fpr = detail::numbers(
                            json_field(m.metrics, {"roc", "fpr"})),
                        tpr = detail::numbers(
                            json_field(m.metrics, {"roc", "tpr"}));
    if (fpr.empty() || fpr.size() != tpr.size()) {
      lacking += "<p class=missing>" + html_escape(m.name) +
                 ": the roc in metrics.json has no fpr/tpr of equal "
                 "length.</p>\n";
      continue;
    }
    rc.series.push_back(
        {m.name + " (AUC " + num(json_field(m.metrics, {"auc", "value"})) + ")",
         std::move(fpr), std::move(tpr)});
  }
  rc.legend = viz::LineChart::Legend::kBelow;  // long model names, whole
  rc.width = 720;
  rc.height = 520 + 18 * static_cast<int>(rc.series.size());
  p.h << detail::chart_img(rc, "ROC curves", "width:720px") << "\n" << lacking;
}

void write_calibration(Page& p) {
  p.section("calibration",
            "Calibration: do the probabilities mean what they say?",
            "Temperature scaling (Guo et al. 2017): P = sigmoid(logit / T), "
            "T fitted on the validation split of each train-only run by "
            "minimising the NLL; a refit on train+val carries its train-only "
            "run's T over. Decisions at the threshold do not change. ECE: 15 "
            "equal-width bins, count-weighted, with a 95 % percentile "
            "bootstrap CI (ECE over few images per bin is biased upward, so "
            "the interval can sit above the point estimate).");
  p.h << "<table><tr><th>model</th><th>T (fitted on)</th><th>ECE raw</th>"
         "<th>ECE calibrated</th><th>Brier raw / cal.</th>"
         "<th>NLL raw / cal.</th></tr>\n";
  for (const auto& m : p.in.models) {
    if (m.metrics.is_null() || !m.metrics.contains("calibration")) continue;
    const json& c = json_field(m.metrics, "calibration");
    auto ece = [&](const char* k) {
      const json& e = json_field(c, {k, "ece"});
      return num(json_field(e, "value")) + " <span class=ci>[" +
             num(json_field(e, "low")) + ", " + num(json_field(e, "high")) +
             "]</span>";
    };
    p.h << "<tr><td>" << html_escape(m.name) << "</td><td>"
        << num(json_field(c, "temperature")) << "<br><small>"
        << html_escape(json_text(c, "source")) << "</small></td><td>"
        << ece("raw") << "</td><td>" << ece("calibrated") << "</td><td>"
        << num(json_field(c, {"raw", "brier"})) << " / "
        << num(json_field(c, {"calibrated", "brier"})) << "</td><td>"
        << num(json_field(c, {"raw", "nll"})) << " / "
        << num(json_field(c, {"calibrated", "nll"})) << "</td></tr>\n";
  }
  p.h << "</table>\n";
  write_eval_figures(p, "reliability.png", "reliability diagram");
}

void write_cards(Page& p) {
  p.section("cards", "Model cards");
  for (const auto& m : p.in.models) {
    const fs::path card = m.run / "model-card.md";
    if (!fs::exists(card)) continue;
    std::ifstream in(card);
    std::stringstream buf;
    buf << in.rdbuf();
    p.h << "<details><summary>" << html_escape(m.name) << " (<code>"
        << html_escape(card.string()) << "</code>)</summary><pre style=\""
        << "white-space:pre-wrap\">" << html_escape(buf.str())
        << "</pre></details>\n";
  }
}

// One explain folder's panels (at most `limit`) and trust checks. Returns
// whether the folder exists.
bool write_gallery(Page& p, const Model& m, const std::string& kind) {
  const fs::path ed = m.run / kind;
  const json es = maybe_json(ed / "summary.json");
  if (es.is_null()) return false;
  const bool mis = kind == "explain-misclassified";
  p.h << "<h3>" << html_escape(m.name) << ": "
      << (mis ? "every misclassified " + p.o.split + " image"
              : std::string("examples"))
      << " (" << count(json_field(es, "images")) << " images, layer <code>"
      << html_escape(json_text(es, "layer", "n/a")) << "</code>)</h3>\n";
  if (mis) {
    p.summary.sections.push_back("misclassified-" + m.run.filename().string());
  }
  std::vector<fs::path> panels;
  if (fs::is_directory(ed / "panels")) {
    for (const auto& e : fs::directory_iterator(ed / "panels")) {
      panels.push_back(e.path());
    }
  }
  std::sort(panels.begin(), panels.end());
  const size_t limit = mis ? 24 : 6;
  for (size_t i = 0; i < panels.size() && i < limit; ++i) {
    p.h << img(panels[i], panels[i].filename().string(), "width:49%");
  }
  if (panels.size() > limit) {
    p.h << "<p>(" << panels.size() - limit << " more panels in <code>"
        << html_escape(ed.string()) << "/panels</code>)</p>";
  }
  if (panels.empty()) p.h << "<p>None.</p>";
  return true;
}

void write_gradcam(Page& p) {
  p.section("gradcam", "Grad-CAM: why the models decided");
  p.h << "<p>Each panel: original | evidence for COVID (Grad-CAM of the "
         "logit) | evidence for Normal (Grad-CAM of the negated logit), "
         "viridis colour map, overlaid on the original image.</p>";
  int gallery = 0;
  for (const auto& m : p.in.models) {
    write_gallery(p, m, "explain-examples");
    gallery += write_gallery(p, m, "explain-misclassified");
  }
  if (gallery == 0) p.h << "<p>No misclassification gallery was produced.</p>";
}

void write_config(Page& p) {
  p.section("config", "Configuration and versions");
  p.h << "<p>cxr " << kVersion << ", LibTorch " << TORCH_VERSION << ".</p>";
  for (const auto& m : p.in.models) {
    if (m.config.is_null()) continue;
    json c = m.config;
    c.erase("result");
    p.h << "<details><summary>" << html_escape(m.name) << "</summary><pre>"
        << html_escape(c.dump(2)) << "</pre></details>";
  }
  if (!p.in.sj.is_null()) {
    p.h << "<details><summary>study.json</summary><pre>"
        << html_escape(p.in.sj.dump(2)) << "</pre></details>";
  }
}

}  // namespace

namespace detail {

std::string Page::section(const std::string& id, const std::string& title) {
  std::string anchor = id;
  for (int k = 2; std::any_of(toc.begin(), toc.end(),
                              [&](const auto& t) { return t.first == anchor; });
       ++k) {
    anchor = id + "-" + std::to_string(k);
  }
  h << "<h2 id=\"" << anchor << "\">" << html_escape(title) << "</h2>\n";
  toc.emplace_back(anchor, title);
  summary.sections.push_back(anchor);
  return anchor;
}

std::string Page::section(const std::string& id,
                          const std::string& title,
                          const std::string& intro_html) {
  std::string anchor = section(id, title);
  h << "<p>" << intro_html << "</p>\n";
  return anchor;
}

}  // namespace detail

json published_numbers() {
  return {{"study_baseline_test_accuracy", 0.79},
          {"study_transfer_test_accuracy", 0.76},
          {"pytorch_baseline",
           {{"accuracy", 0.880}, {"recall", 0.880}, {"auc", 0.955}}},
          {"pytorch_mobilenetv2_finetuned",
           {{"accuracy", 0.930}, {"recall", 0.940}, {"auc", 0.982}}}};
}

ReportSummary write_report(const ReportOptions& o) {
  const Inputs in = read_inputs(o);
  Page p(o, in);
  write_head(p);
  const std::string title_block = p.h.str();
  p.h.str("");
  detail::write_summary(p);
  write_results(p);
  write_exploration(p);
  write_tuning(p);
  write_training(p);
  p.section("confusion", "Confusion matrices");
  write_eval_figures(p, "confusion.png", "confusion matrix");
  write_roc(p);
  write_calibration(p);
  write_ood(p);
  write_cards(p);
  detail::write_trust(p);
  write_gradcam(p);
  write_config(p);
  write_text_atomic(o.out_path, assemble(p, title_block));
  p.summary.path = o.out_path;
  return p.summary;
}

}  // namespace cxr::report
