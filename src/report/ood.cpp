// The out-of-distribution section of `cxr report`: each model's flag rate
// on the split and its eval-ood/ood.json table (the OOD evaluation sets).
#include "cxr/common/text.h"
#include "html.h"
#include "page.h"

namespace cxr::report::detail {
namespace {

using nlohmann::json;

std::string percent(const json& v) {
  return v.is_number() ? num(json(100 * v.get<double>()), 1) + " %"
                       : std::string("n/a");
}

// One OOD evaluation set: flag rates in all, by checks, by detector.
void write_ood_row(Page& p,
                   const std::string& name,
                   const std::string& what,
                   const json& r) {
  p.h << "<tr><td>" << html_escape(name) << "<br><small>" << html_escape(what)
      << "</small></td><td>" << count(json_field(r, "n")) << "</td><td><b>"
      << percent(json_field(r, "flag_rate")) << "</b></td><td>"
      << percent(json_field(r, "by_checks")) << "</td><td>"
      << percent(json_field(r, "by_detector")) << "</td><td>"
      << (r.contains("auroc") ? num(json_field(r, "auroc")) : std::string("-"))
      << "</td></tr>\n";
}

// A model's flag rate on the split and its eval-ood/ood.json table.
void write_ood_model(Page& p, const Model& m) {
  const json oj = maybe_json(m.run / "eval-ood" / "ood.json");
  p.h << "<h3>" << html_escape(m.name) << "</h3>\n";
  if (!m.metrics.is_null() && m.metrics.contains("ood")) {
    p.h << "<p>Flagged on the " << html_escape(p.o.split)
        << " split (detector): "
        << percent(json_field(m.metrics, {"ood", "flag_rate"})) << ".</p>\n";
  }
  if (oj.is_null()) {
    p.h << "<p class=missing>not scored on the OOD sets (cxr evaluate RUN "
           "--ood-sets)</p>\n";
    return;
  }
  p.h << "<table><tr><th>set</th><th>n</th><th>flagged</th><th>by input "
         "checks</th><th>by detector</th><th>AUROC</th></tr>\n";
  write_ood_row(p, "cxr-seed " + json_text(oj, "split", "test"),
                "in distribution: should be flagged rarely",
                json_field(oj, "test"));
  const json& sets = json_field(oj, "sets");
  for (size_t i = 0; sets.is_array() && i < sets.size(); ++i) {
    write_ood_row(p, json_text(sets[i], "name", "n/a"),
                  json_text(sets[i], "description"), sets[i]);
  }
  p.h << "</table>\n";
}

}  // namespace

void write_ood(Page& p) {
  p.section(
      "ood", "Out-of-distribution warning",
      "Before the model, cheap input checks (colour photograph, "
      "nearly constant, extreme aspect ratio, far smaller than the model's "
      "input, inverted or rotated against the training images' mean). "
      "After it, a feature-space detector: Mahalanobis distance to the "
      "nearest class mean on several layers' per-channel means and "
      "standard deviations (Lee et al. 2018), fitted on the train split, "
      "its threshold set so that at most 5 % of chest X-rays like the "
      "training data are flagged (95 % upper bound on validation). Flag "
      "rates per set: by the checks, by the detector, in all; AUROC of "
      "the detector's score against the test split.");
  for (const auto& m : p.in.models) write_ood_model(p, m);
}

}  // namespace cxr::report::detail
