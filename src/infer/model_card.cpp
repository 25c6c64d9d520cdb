// model-card.md: what a run is for, what it was trained on, how it does on
// test, its calibration and OOD warning, and where it fails. Written from
// the run's files alone (config.json, eval-test/metrics.json, trust.json).
#include <cmath>
#include <sstream>

#include "cxr/common/fs.h"
#include "cxr/common/text.h"
#include "cxr/infer/fit_trust.h"
#include "cxr/infer/run_config.h"
#include "cxr/version.h"

namespace fs = std::filesystem;

namespace cxr::infer {
namespace {

void intended_use(std::ostream& s, const RunConfig& c, const fs::path& d) {
  s << "# Model card: " << c.model.arch << " (" << d.filename().string()
    << ")\n\n";
  s << "## Intended use\n"
    << "Research on COVID-19 assisted diagnosis from frontal chest X-rays: "
       "P("
    << c.positive << ") vs " << c.negative
    << ". **Not for clinical decisions.** Inputs the model does not know "
       "(other populations, body parts, views or devices) are flagged as "
       "out of distribution, but a score is never proof of disease.\n\n";
}

void training_data(std::ostream& s, const RunConfig& c) {
  s << "## Training data\n";
  s << "- Data: `" << c.data.value("root", std::string("?")) << "` ("
    << c.data.value("layout", std::string("?")) << " layout), "
    << c.model.input_size << " px, trained on " << c.train_on() << ".\n";
  if (c.data.contains("counts")) {
    for (const auto& [split, counts] : c.data["counts"].items()) {
      s << "- " << split << ": ";
      bool first = true;
      for (const auto& [cls, n] : counts.items()) {
        s << (first ? "" : ", ") << n.dump() << " " << cls;
        first = false;
      }
      s << "\n";
    }
  }
  s << "- Known confound: in cxr-seed the classes come from different "
       "hospitals and sources (COVID: mostly BIMCV/PadChest, SIRM, "
       "publications; Normal: RSNA, USA). The model can learn the source "
       "(markers, text, processing, tubes) instead of the disease; read the "
       "Grad-CAM trust checks.\n\n";
}

// "value [low, high]" of a metrics.json interval, n/a where undefined.
std::string interval(const nlohmann::json& m, const char* k) {
  const auto& v = m[k];
  if (!v.is_object() || !v["value"].is_number()) return "n/a";
  auto num = [&](const char* f) {
    return v[f].is_number() ? fixed(v[f].get<double>()) : "n/a";
  };
  return num("value") + " [" + num("low") + ", " + num("high") + "]";
}

// eval-test/metrics.json as the card's test section (a file written by
// cxr evaluate: infer sits below evaluate, so it reads the file).
void test_metrics(std::ostream& s,
                  const RunConfig& c,
                  const nlohmann::json& m) {
  s << "- On the test split (n = " << m.value("n", 0)
    << "): sensitivity (recall) " << interval(m, "recall") << ", specificity "
    << interval(m, "specificity") << ": of 100 " << c.positive
    << " chest X-rays like the test set, about "
    << fixed(100 * m["recall"].value("value", 0.0), 0) << " are called "
    << c.positive << "; of 100 " << c.negative << " ones, about "
    << fixed(100 * (1 - m["specificity"].value("value", 0.0)), 0)
    << " are wrongly called " << c.positive << ".\n\n";
  s << "## Metrics on test (95 % bootstrap CIs, at the threshold)\n"
    << "| metric | value [95 % CI] |\n|---|---|\n";
  for (const char* k :
       {"accuracy", "precision", "recall", "specificity", "f1", "auc"}) {
    s << "| " << k << " | " << interval(m, k) << " |\n";
  }
  if (m.contains("calibration")) {
    const auto& cm = m["calibration"];
    s << "\n## Calibration on test\n"
      << "| | ECE (15 bins) | Brier | NLL |\n|---|---|---|---|\n";
    for (const char* k : {"raw", "calibrated"}) {
      if (!cm.contains(k)) continue;
      const auto& v = cm[k];
      s << "| " << k << " | " << fixed(v["ece"]["value"].get<double>()) << " ["
        << fixed(v["ece"]["low"].get<double>()) << ", "
        << fixed(v["ece"]["high"].get<double>()) << "] | "
        << fixed(v["brier"].get<double>()) << " | "
        << fixed(v["nll"].get<double>()) << " |\n";
    }
  }
  if (m.contains("ood")) {
    s << "\nOOD flag rate on the test split: "
      << fixed(100 * m["ood"].value("flag_rate", NAN), 1) << " %.\n";
  }
}

void threshold_and_test(std::ostream& s,
                        const RunConfig& c,
                        const fs::path& d,
                        const std::string& dir) {
  s << "## Decision threshold\n"
    << "- P(" << c.positive << ") >= " << fixed(c.threshold_calibrated(), 4)
    << " (calibrated; " << fixed(c.threshold, 4)
    << " on the model's raw probability) means " << c.positive << ".\n"
    << "- Rule: " << c.threshold_rule << ".\n";
  const fs::path eval = d / "eval-test" / "metrics.json";
  if (fs::exists(eval)) {
    test_metrics(s, c, read_json(eval));
  } else {
    s << "- Not yet evaluated on test: run `cxr evaluate " << dir
      << " --split test` (this card is then rewritten).\n";
  }
}

void calibration_and_ood(std::ostream& s,
                         const RunConfig& c,
                         const std::string& dir) {
  s << "\n## Calibration\n";
  if (c.calibration.method == "temperature") {
    s << "- Temperature scaling, T = " << fixed(c.calibration.temperature, 3)
      << ", fitted on " << c.calibration.source << ".\n";
    const auto& f = c.calibration.fit;
    if (f.contains("ece_before")) {
      s << "- On that data: ECE " << fixed(f["ece_before"].get<double>())
        << " -> " << fixed(f["ece_after"].get<double>()) << ", NLL "
        << fixed(f["nll_before"].get<double>()) << " -> "
        << fixed(f["nll_after"].get<double>()) << ".\n";
    }
  } else {
    s << "- None (" << c.calibration.source
      << "); probabilities are the model's own.\n";
  }
  s << "\n## Out-of-distribution warning\n";
  if (c.ood.is_null()) {
    s << "- No detector (fit one with `cxr calibrate " << dir << "`).\n";
    return;
  }
  s << "- " << c.ood.value("method", std::string()) << "; layers";
  for (const auto& l : c.ood["layers"]) s << " " << l.get<std::string>();
  s << ".\n- Flag threshold " << fixed(c.ood.value("threshold", NAN), 2) << ": "
    << c.ood.value("threshold_rule", std::string()) << ".\n"
    << "- Input checks before the model: colour photographs, nearly "
       "constant images, extreme aspect ratios, images far smaller than "
       "the model's input, and images unlike (or inverted against) the "
       "training images' mean.\n";
}

void failure_modes(std::ostream& s, const fs::path& d) {
  s << "\n## Known failure modes\n"
    << "- Other populations (e.g. children), other hospitals and devices: "
       "the model's probabilities mean nothing there; heed the warning.\n";
  for (const char* sub : {"explain-misclassified", "explain-examples"}) {
    const fs::path t = d / sub / "trust.json";
    if (!fs::exists(t)) continue;
    const auto tj = read_json(t);
    if (tj.contains("randomization")) {
      s << "- Grad-CAM randomisation check (" << sub << "): mean rank "
        << "correlation "
        << fixed(tj["randomization"].value("mean_rank_correlation", NAN))
        << (tj["randomization"].value("untrustworthy", false)
                ? " (maps barely depend on the weights: untrustworthy)"
                : "")
        << ".\n";
    }
    if (tj.contains("energy") && tj["energy"].contains("mean")) {
      s << "- Grad-CAM energy (" << sub << "): " << tj["energy"]["mean"].dump()
        << " (lung box vs border frame; compare with a uniform map "
        << tj["energy"]["uniform_map"].dump() << ").\n";
    }
  }
  if (fs::exists(d / "explain-misclassified")) {
    s << "- Misclassified test images with their Grad-CAM maps: "
         "`explain-misclassified/index.html`.\n";
  }
}

void provenance(std::ostream& s, const RunConfig& c) {
  s << "\n## Provenance\n"
    << "- cxr " << (c.cxr_version.empty() ? kVersion : c.cxr_version)
    << ", created " << c.created << ".\n"
    << "- Training options: `" << c.train.dump() << "`.\n"
    << "- Model: `" << c.model.to_json().dump() << "`.\n";
}

}  // namespace

void write_model_card(const std::string& dir) {
  const RunConfig c = read_run_config(dir);
  const fs::path d(dir);
  std::ostringstream s;
  intended_use(s, c, d);
  training_data(s, c);
  threshold_and_test(s, c, d, dir);
  calibration_and_ood(s, c, dir);
  failure_modes(s, d);
  provenance(s, c);
  write_text_atomic(d / "model-card.md", s.str());
}

}  // namespace cxr::infer
