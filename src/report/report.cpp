#include "cxr/report/report.h"

#include <unistd.h>

#include <fstream>
#include <iomanip>
#include <sstream>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/version.h"
#include "cxr/viz/plot.h"

namespace fs = std::filesystem;

namespace cxr::report {
namespace {

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&':
        o += "&amp;";
        break;
      case '<':
        o += "&lt;";
        break;
      case '>':
        o += "&gt;";
        break;
      case '"':
        o += "&quot;";
        break;
      default:
        o += c;
    }
  }
  return o;
}

std::string base64(const std::string& in) {
  static const char* t =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v =
        (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    out += t[v >> 18];
    out += t[(v >> 12) & 63];
    out += t[(v >> 6) & 63];
    out += t[v & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    out += t[v >> 18];
    out += t[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += t[v >> 18];
    out += t[(v >> 12) & 63];
    out += t[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

std::string img(const fs::path& p,
                const std::string& alt,
                const std::string& style = "") {
  if (!fs::exists(p)) {
    return "<p class=\"missing\">(" + esc(p.filename().string()) +
           " not found)</p>";
  }
  return "<img alt=\"" + esc(alt) + "\"" +
         (style.empty() ? "" : " style=\"" + style + "\"") +
         " src=\"data:image/png;base64," + base64(read_text(p)) + "\">";
}

std::string num(const nlohmann::json& v, int p = 3) {
  if (!v.is_number()) return "n/a";
  std::ostringstream s;
  s << std::fixed << std::setprecision(p) << v.get<double>();
  return s.str();
}

std::string ci(const nlohmann::json& m) {
  if (!m.is_object()) return "n/a";
  return "<b>" + num(m["value"]) + "</b> <span class=\"ci\">[" + num(m["low"]) +
         ", " + num(m["high"]) + "]</span>";
}

nlohmann::json maybe_json(const fs::path& p) {
  if (!fs::exists(p)) return nullptr;
  return read_json(p);
}

struct Model {
  std::string name;
  fs::path run;
  nlohmann::json config, metrics;
};

std::string table_from_csv(const std::string& text, size_t max_rows) {
  std::istringstream in(text);
  std::string line;
  std::ostringstream h;
  h << "<table>";
  size_t row = 0;
  while (std::getline(in, line) && row <= max_rows) {
    std::stringstream ls(line);
    std::string cell;
    h << "<tr>";
    while (std::getline(ls, cell, ',')) {
      if (cell.find('/') != std::string::npos) {
        cell = fs::path(cell).filename().string();  // run folders
      }
      h << (row == 0 ? "<th>" : "<td>") << esc(cell)
        << (row == 0 ? "</th>" : "</td>");
    }
    h << "</tr>";
    ++row;
  }
  h << "</table>";
  return h.str();
}

void flatten(const nlohmann::json& j,
             const std::string& prefix,
             std::vector<std::pair<std::string, std::string>>& out) {
  if (j.is_object()) {
    for (const auto& [k, v] : j.items()) {
      flatten(v, prefix.empty() ? k : prefix + "." + k, out);
    }
  } else if (j.is_number_float()) {
    out.emplace_back(prefix, num(j, 3));
  } else if (j.is_array() && j.size() > 8) {
    out.emplace_back(prefix, "(" + std::to_string(j.size()) + " values)");
  } else {
    out.emplace_back(prefix, j.is_string() ? j.get<std::string>() : j.dump());
  }
}

}  // namespace

nlohmann::json published_numbers() {
  return {{"study_baseline_test_accuracy", 0.79},
          {"study_transfer_test_accuracy", 0.76},
          {"pytorch_baseline",
           {{"accuracy", 0.880}, {"recall", 0.880}, {"auc", 0.955}}},
          {"pytorch_mobilenetv2_finetuned",
           {{"accuracy", 0.930}, {"recall", 0.940}, {"auc", 0.982}}}};
}

nlohmann::json write_report(const ReportOptions& o) {
  if (o.inputs.empty()) {
    throw ConfigError("give a study folder or run folders to report on");
  }
  fs::path study;
  nlohmann::json sj;
  std::vector<Model> models;
  if (o.inputs.size() == 1 &&
      fs::exists(fs::path(o.inputs[0]) / "study.json")) {
    study = o.inputs[0];
    sj = read_json(study / "study.json");
    for (const auto& m : sj.value("models", nlohmann::json::array())) {
      models.push_back({m["name"].get<std::string>(),
                        study / m["run"].get<std::string>(), nullptr, nullptr});
    }
  } else {
    for (const auto& in : o.inputs) {
      if (!fs::exists(fs::path(in) / "config.json")) {
        throw DataError("'" + in +
                        "' is neither a study folder (study.json) nor a run "
                        "folder (config.json)");
      }
      models.push_back(
          {fs::path(in).filename().string(), in, nullptr, nullptr});
    }
  }
  for (auto& m : models) {
    m.config = maybe_json(m.run / "config.json");
    m.metrics = maybe_json(m.run / ("eval-" + o.split) / "metrics.json");
  }

  std::ostringstream h;
  nlohmann::json summary = {{"sections", nlohmann::json::array()},
                            {"models", nlohmann::json::array()}};
  auto section = [&](const std::string& id, const std::string& title) {
    h << "<h2 id=\"" << id << "\">" << esc(title) << "</h2>\n";
    summary["sections"].push_back(id);
  };
  h << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
       "<title>cxr study report</title><style>"
       "body{font-family:'DejaVu Sans',sans-serif;max-width:1200px;margin:2em "
       "auto;padding:0 1em;color:#222;line-height:1.45}"
       "h1{border-bottom:3px solid #2a6;padding-bottom:.2em}"
       "h2{margin-top:2em;border-bottom:1px solid #ccc}"
       "table{border-collapse:collapse;margin:.8em 0;font-size:14px}"
       "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
       "th{background:#f0f4f2}td:first-child,th:first-child{text-align:left}"
       "img{max-width:100%;border:1px solid #ddd;margin:4px 0}"
       ".ci{color:#666;font-size:12px}.note{background:#fff8e0;border-left:4px "
       "solid #e0b000;padding:.5em 1em}.missing{color:#a00}"
       ".grid img{width:32%}code{background:#f4f4f4;padding:0 3px}"
       "</style></head><body>\n";
  h << "<h1>cxr: COVID-19 vs Normal chest X-ray study</h1>\n"
    << "<p class=\"note\">Research use only; not for clinical decisions. The "
       "two classes come from different hospitals, so a model can learn the "
       "source instead of the disease: read the Grad-CAM and trust sections "
       "before trusting the accuracy.</p>\n";
  if (!sj.is_null()) {
    h << "<p>Data <code>" << esc(sj.value("data", std::string())) << "</code>, "
      << "generated " << esc(sj.value("finished", std::string())) << " in "
      << num(sj.value("minutes", nlohmann::json(nullptr)), 1) << " minutes on "
      << esc(sj.value("device", std::string())) << ".</p>\n";
  }

  // ---- headline table
  section("results", "Results on the " + o.split + " split (95 % CIs)");
  h << "<table><tr><th>model</th><th>n</th><th>accuracy</th><th>precision</th>"
       "<th>recall "
       "(sensitivity)</th><th>specificity</th><th>F1</th><th>AUC</th>"
       "<th>threshold</th></tr>\n";
  for (const auto& m : models) {
    if (m.metrics.is_null()) {
      h << "<tr><td>" << esc(m.name) << "</td><td colspan=8 class=missing>not "
        << "evaluated on " << esc(o.split) << "</td></tr>\n";
      continue;
    }
    const auto& x = m.metrics;
    h << "<tr><td>" << esc(m.name) << "</td><td>" << x["n"] << "</td><td>"
      << ci(x["accuracy"]) << "</td><td>" << ci(x["precision"]) << "</td><td>"
      << ci(x["recall"]) << "</td><td>" << ci(x["specificity"]) << "</td><td>"
      << ci(x["f1"]) << "</td><td>" << ci(x["auc"]) << "</td><td>"
      << num(x["threshold"]) << "<br><small>"
      << esc(x.value("threshold_rule", std::string()))
      << "</small></td></tr>\n";
    summary["models"].push_back({{"name", m.name},
                                 {"run", m.run.string()},
                                 {"accuracy", x["accuracy"]["value"]},
                                 {"recall", x["recall"]["value"]},
                                 {"specificity", x["specificity"]["value"]},
                                 {"auc", x["auc"]["value"]}});
  }
  const auto pub = published_numbers();
  h << "<tr><td><i>reference study: baseline CNN (Keras)</i></td><td>200</td>"
       "<td><b>0.79</b></td><td colspan=6>no CIs, no other test metrics "
       "published</td></tr>\n"
       "<tr><td><i>reference study: ResNet50V2 fine-tuned</i></td><td>200</td>"
       "<td><b>0.76</b></td><td colspan=6></td></tr>\n"
       "<tr><td><i>plain PyTorch baseline on cxr-seed</i></td><td>200</td>"
       "<td><b>0.880</b> <span class=ci>[0.83, 0.92]</span></td><td></td>"
       "<td><b>0.880</b></td><td></td><td></td><td><b>0.955</b></td><td></td></"
       "tr>\n"
       "<tr><td><i>plain PyTorch MobileNetV2 fine-tuned on cxr-seed</i></td>"
       "<td>200</td><td><b>0.930</b> <span class=ci>[0.89, 0.96]</span></td>"
       "<td></td><td><b>0.940</b></td><td></td><td></td><td><b>0.982</b></td>"
       "<td></td></tr></table>\n";
  if (!models.empty() && !models[0].metrics.is_null()) {
    h << "<p>" << esc(models[0].metrics.value("note", std::string()))
      << ".</p>\n";
  }

  // ---- data exploration
  const fs::path ex = study.empty() ? fs::path() : study / "explore";
  auto exj =
      study.empty() ? nlohmann::json(nullptr) : maybe_json(ex / "summary.json");
  if (!exj.is_null()) {
    section("data", "Data exploration");
    const std::string pos = exj["dataset"]["positive"],
                      neg = exj["dataset"]["negative"];
    h << "<table><tr><th>split</th><th>" << esc(pos) << "</th><th>" << esc(neg)
      << "</th><th>pixel mean</th><th>pixel std</th><th>mean " << esc(pos)
      << "</th><th>mean " << esc(neg) << "</th></tr>";
    for (const char* s : {"train", "val", "test"}) {
      const auto& c = exj["counts"][s];
      const auto& p = exj["pixel_stats"][s];
      h << "<tr><td>" << s << "</td><td>" << c[pos] << "</td><td>" << c[neg]
        << "</td><td>" << num(p["all"]["mean"]) << "</td><td>"
        << num(p["all"]["std"]) << "</td><td>" << num(p[pos]["mean"])
        << "</td><td>" << num(p[neg]["mean"]) << "</td></tr>";
    }
    h << "</table><p>The reference study reports train 0.53/0.25, val "
         "0.55/0.25, test 0.56/0.26 (mean/std). Normalisation used by the "
         "baseline (train+val): mean "
      << num(exj["normalization"]["mean"], 4) << ", std "
      << num(exj["normalization"]["std"], 4)
      << ". Image sizes: " << esc(exj["image_sizes"].dump())
      << "; formats: " << esc(exj["bit_depths"].dump()) << ".</p>\n";
    h << img(ex / "histograms.png", "intensity histograms") << "\n"
      << img(ex / "samples.png", "sample grid") << "\n";
    section("leakage", "Duplicate and leakage check");
    const auto& d = exj["duplicates"];
    h << "<p>" << esc(d.value("method", std::string())) << ". Near-duplicate "
      << "threshold " << num(d["min_similarity"], 2) << "; each image's most "
      << "similar other image: median "
      << num(d["nearest_similarity_quantiles"]["0.50"]) << ", 99th percentile "
      << num(d["nearest_similarity_quantiles"]["0.99"]) << ". Exact pairs "
      << "within splits: " << d["exact_within_split"]
      << "; near pairs within splits: " << d["near_within_split"]
      << "; pairs crossing splits: <b>" << d["cross_split_count"]
      << "</b>.</p>\n";
    if (!d["cross_split"].empty()) {
      h << "<table><tr><th>kind</th><th>similarity</th><th>image A</th>"
           "<th>image B</th></tr>";
      for (const auto& p : d["cross_split"]) {
        h << "<tr><td>" << esc(p["kind"].get<std::string>()) << "</td><td>"
          << num(p["similarity"]) << "</td><td>"
          << esc(p["split_a"].get<std::string>()) << ": "
          << esc(fs::path(p["path_a"].get<std::string>()).filename().string())
          << "</td><td>" << esc(p["split_b"].get<std::string>()) << ": "
          << esc(fs::path(p["path_b"].get<std::string>()).filename().string())
          << "</td></tr>";
      }
      h << "</table>\n";
    }
    section("augmentation", "Augmentation examples");
    h << img(ex / "augment.png", "augmentation preview") << "\n";
  }

  // ---- tuning
  if (!study.empty()) {
    for (const auto& t : sj.value("tuning", nlohmann::json::array())) {
      const fs::path td = study / t["dir"].get<std::string>();
      section("tuning",
              "Hyper-parameter search: " + t["name"].get<std::string>());
      auto best = maybe_json(td / "best.json");
      if (!best.is_null()) {
        h << "<p>Mode " << esc(best["mode"].get<std::string>()) << ", "
          << best["trials"] << " trials in " << num(best["minutes"], 1)
          << " minutes, ranked by " << esc(best["metric"].get<std::string>())
          << ". Best: <code>" << esc(best["best"]["key"].get<std::string>())
          << "</code> (best epoch " << best["best"]["best_epoch"] << ").</p>\n";
      }
      if (fs::exists(td / "trials.csv")) {
        h << table_from_csv(read_text(td / "trials.csv"), 60) << "\n";
      }
    }
  }

  // ---- per-model sections
  section("training", "Training curves");
  for (const auto& m : models) {
    h << "<h3>" << esc(m.name) << "</h3>";
    if (!m.config.is_null()) {
      const auto& r = m.config["result"];
      h << "<p>" << esc(m.config["model"]["arch"].get<std::string>())
        << ", trained on "
        << esc(m.config["train"]["train_on"].get<std::string>()) << ", "
        << r.value("epochs_run", 0) << " epochs (weights of epoch "
        << r.value("best_epoch", 0) << "), " << num(r["seconds"], 0) << " s at "
        << num(r["images_per_second"], 1) << " images/s on "
        << esc(r.value("device", std::string())) << ", "
        << r.value("parameters", 0) << " parameters"
        << (m.config["model"].value("pretrained", std::string()).empty()
                ? ""
                : ", ImageNet weights from " +
                      esc(fs::path(m.config["model"]["pretrained"]
                                       .get<std::string>())
                              .filename()
                              .string()))
        << ".</p>";
    }
    h << img(m.run / "curves.png", m.name + " training curves") << "\n";
  }
  section("confusion", "Confusion matrices");
  h << "<div class=\"grid\">";
  for (const auto& m : models) {
    h << img(m.run / ("eval-" + o.split) / "confusion.png",
             m.name + " confusion matrix", "width:45%");
  }
  h << "</div>\n";
  section("roc", "ROC curves");
  {
    viz::LineChart rc;
    rc.title = "ROC on the " + o.split + " split";
    rc.x_label = "1 - specificity";
    rc.y_label = "sensitivity";
    rc.x_min = rc.y_min = 0;
    rc.x_max = rc.y_max = 1;
    rc.diagonal = true;
    for (const auto& m : models) {
      if (m.metrics.is_null() || !m.metrics.contains("roc")) continue;
      rc.series.push_back(
          {m.name + " (AUC " + num(m.metrics["auc"]["value"]) + ")",
           m.metrics["roc"]["fpr"].get<std::vector<double>>(),
           m.metrics["roc"]["tpr"].get<std::vector<double>>()});
    }
    const fs::path tmp =
        fs::temp_directory_path() /
        ("cxr-report-roc-" + std::to_string(::getpid()) + ".png");
    viz::save_line_chart(rc, tmp.string());
    h << img(tmp, "ROC curves", "width:60%") << "\n";
    std::error_code ec;
    fs::remove(tmp, ec);
  }

  // ---- calibration
  section("calibration",
          "Calibration: do the probabilities mean what they say?");
  h << "<p>Temperature scaling (Guo et al. 2017): P = sigmoid(logit / T), T "
       "fitted on the validation split of each train-only run by minimising "
       "the NLL; a refit on train+val carries its train-only run's T over. "
       "Decisions at the threshold do not change. ECE: 15 equal-width bins, "
       "count-weighted, with a 95 % percentile bootstrap CI (ECE over few "
       "images per bin is biased upward, so the interval can sit above the "
       "point estimate).</p>\n"
       "<table><tr><th>model</th><th>T (fitted on)</th><th>ECE raw</th>"
       "<th>ECE calibrated</th><th>Brier raw / cal.</th>"
       "<th>NLL raw / cal.</th></tr>\n";
  for (const auto& m : models) {
    if (m.metrics.is_null() || !m.metrics.contains("calibration")) continue;
    const auto& c = m.metrics["calibration"];
    auto ece = [&](const char* k) {
      return num(c[k]["ece"]["value"]) + " <span class=ci>[" +
             num(c[k]["ece"]["low"]) + ", " + num(c[k]["ece"]["high"]) +
             "]</span>";
    };
    h << "<tr><td>" << esc(m.name) << "</td><td>" << num(c["temperature"])
      << "<br><small>" << esc(c.value("source", std::string()))
      << "</small></td><td>" << ece("raw") << "</td><td>" << ece("calibrated")
      << "</td><td>" << num(c["raw"]["brier"]) << " / "
      << num(c["calibrated"]["brier"]) << "</td><td>" << num(c["raw"]["nll"])
      << " / " << num(c["calibrated"]["nll"]) << "</td></tr>\n";
  }
  h << "</table>\n<div class=\"grid\">";
  for (const auto& m : models) {
    h << img(m.run / ("eval-" + o.split) / "reliability.png",
             m.name + " reliability diagram", "width:45%");
  }
  h << "</div>\n";

  // ---- out-of-distribution warning
  section("ood", "Out-of-distribution warning");
  h << "<p>Before the model, cheap input checks (colour photograph, nearly "
       "constant, extreme aspect ratio, far smaller than the model's input, "
       "inverted or rotated against the training images' mean). After it, a "
       "feature-space detector: Mahalanobis distance to the nearest class "
       "mean on several layers' per-channel means and standard deviations "
       "(Lee et al. 2018), fitted on the train split, its threshold set so "
       "that at most 5 % of chest X-rays like the training data are flagged "
       "(95 % upper bound on validation). Flag rates per set: by the checks, "
       "by the detector, in all; AUROC of the detector's score against the "
       "test split.</p>\n";
  for (const auto& m : models) {
    const auto oj = maybe_json(m.run / "eval-ood" / "ood.json");
    h << "<h3>" << esc(m.name) << "</h3>\n";
    if (!m.metrics.is_null() && m.metrics.contains("ood")) {
      h << "<p>Flagged on the " << esc(o.split) << " split (detector): "
        << num(nlohmann::json(100 * m.metrics["ood"].value("flag_rate", 0.0)),
               1)
        << " %.</p>\n";
    }
    if (oj.is_null()) {
      h << "<p class=missing>not scored on the OOD sets (cxr evaluate RUN "
           "--ood-sets)</p>\n";
      continue;
    }
    h << "<table><tr><th>set</th><th>n</th><th>flagged</th><th>by input "
         "checks</th><th>by detector</th><th>AUROC</th></tr>\n";
    auto pct = [&](const nlohmann::json& v) {
      return v.is_number()
                 ? num(nlohmann::json(100 * v.get<double>()), 1) + " %"
                 : std::string("n/a");
    };
    auto row = [&](const std::string& name, const std::string& what,
                   const nlohmann::json& r) {
      h << "<tr><td>" << esc(name) << "<br><small>" << esc(what)
        << "</small></td><td>" << r["n"] << "</td><td><b>"
        << pct(r["flag_rate"]) << "</b></td><td>" << pct(r["by_checks"])
        << "</td><td>" << pct(r["by_detector"]) << "</td><td>"
        << (r.contains("auroc") ? num(r["auroc"]) : std::string("-"))
        << "</td></tr>\n";
    };
    row("cxr-seed " + oj.value("split", std::string("test")),
        "in distribution: should be flagged rarely", oj["test"]);
    for (const auto& r : oj["sets"]) {
      row(r["name"].get<std::string>(), r.value("description", std::string()),
          r);
    }
    h << "</table>\n";
  }

  // ---- model cards
  section("cards", "Model cards");
  for (const auto& m : models) {
    const fs::path card = m.run / "model-card.md";
    if (!fs::exists(card)) continue;
    std::ifstream in(card);
    std::stringstream buf;
    buf << in.rdbuf();
    h << "<details><summary>" << esc(m.name) << " (<code>" << esc(card.string())
      << "</code>)</summary><pre style=\"white-space:"
      << "pre-wrap\">" << esc(buf.str()) << "</pre></details>\n";
  }

  section("gradcam", "Grad-CAM: why the models decided");
  h << "<p>Each panel: original | evidence for COVID (Grad-CAM of the logit) | "
       "evidence for Normal (Grad-CAM of the negated logit), viridis colour "
       "map, overlaid on the original image.</p>";
  int gallery = 0;
  for (const auto& m : models) {
    for (const char* kind : {"explain-examples", "explain-misclassified"}) {
      const fs::path ed = m.run / kind;
      auto es = maybe_json(ed / "summary.json");
      if (es.is_null()) continue;
      const bool mis = std::string(kind) == "explain-misclassified";
      h << "<h3>" << esc(m.name) << ": "
        << (mis ? "every misclassified " + o.split + " image"
                : std::string("examples"))
        << " (" << es["images"] << " images, layer <code>"
        << esc(es["layer"].get<std::string>()) << "</code>)</h3>\n";
      if (mis) {
        ++gallery;
        summary["sections"].push_back("misclassified-" +
                                      m.run.filename().string());
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
        h << img(panels[i], panels[i].filename().string(), "width:49%");
      }
      if (panels.size() > limit) {
        h << "<p>(" << panels.size() - limit << " more panels in <code>"
          << esc(ed.string()) << "/panels</code>)</p>";
      }
      if (panels.empty()) h << "<p>None.</p>";
      if (es.contains("trust")) {
        std::vector<std::pair<std::string, std::string>> rows;
        flatten(es["trust"], "", rows);
        h << "<h4>Trust checks (" << esc(m.name) << ", "
          << (mis ? "misclassified images" : "examples") << ")</h4><table>";
        for (const auto& [k, v] : rows) {
          h << "<tr><td>" << esc(k) << "</td><td>" << esc(v) << "</td></tr>";
        }
        h << "</table>";
      }
    }
  }
  summary["sections"].push_back("trust");
  if (gallery == 0) h << "<p>No misclassification gallery was produced.</p>";

  section("config", "Configuration and versions");
  h << "<p>cxr " << kVersion << ", LibTorch " << TORCH_VERSION << ".</p>";
  for (const auto& m : models) {
    if (m.config.is_null()) continue;
    nlohmann::json c = m.config;
    c.erase("result");
    h << "<h3>" << esc(m.name) << "</h3><pre>" << esc(c.dump(2)) << "</pre>";
  }
  if (!sj.is_null()) {
    h << "<h3>study.json</h3><pre>" << esc(sj.dump(2)) << "</pre>";
  }
  h << "</body></html>\n";
  write_text_atomic(o.out_path, h.str());
  summary["path"] = o.out_path;
  return summary;
}

}  // namespace cxr::report
