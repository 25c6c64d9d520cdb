// The trust layer of a trained run on a tiny PNG dataset: calibration and
// OOD detector written by train_run, read back by the Predictor, carried to
// a refit, and used by predict_files, evaluate_run and the cxr CLI.
#include <cmath>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/common/vectors.h"
#include "cxr/data/image_io.h"
#include "cxr/evaluate/evaluate.h"
#include "cxr/infer/fit_trust.h"
#include "cxr/infer/gradcam.h"
#include "cxr/infer/predictor.h"
#include "cxr/metrics/metrics.h"
#include "cxr/train/run.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using cxr::testing::TempDir;

cxr::train::RunOptions tiny_run(const fs::path& data, const fs::path& out) {
  cxr::train::RunOptions o;
  o.data.root = data.string();
  o.data.size = 16;
  o.model = cxr::testing::tiny_config();
  o.train = cxr::testing::tiny_train_options();
  o.device = "cpu";
  o.out_dir = out.string();
  return o;
}

/// One tiny run trained on train (calibrated on val), shared by the tests
/// of this file (trained once per process).
struct SharedRun {
  TempDir dir;
  fs::path data = dir / "data";
  std::string run = (dir / "run").string();
  nlohmann::json trained;
  SharedRun() {
    cxr::testing::make_tiny_dataset(data);
    // One validation COVID image filed as Normal: the tiny task is otherwise
    // separable on validation, and the fitted temperature would sit at its
    // lower bound (1e-3) instead of inside the range.
    const fs::path covid = data / "val" / "COVID";
    const fs::path first = fs::directory_iterator(covid)->path();
    fs::rename(first, data / "val" / "Normal" / "flipped.png");
    // The balanced threshold (not 0.5), so that deciding on the calibrated
    // probability instead of the raw one would change decisions.
    auto o = tiny_run(data, run);
    o.balanced_threshold = true;
    trained = cxr::train::train_run(o);
  }
};

const SharedRun& shared_run() {
  static SharedRun s;
  return s;
}

double sigmoid(double z) {
  return 1.0 / (1.0 + std::exp(-z));
}

cxr::data::Dataset load_data(const std::string& run) {
  const auto cfg = cxr::infer::read_run_config(run);
  return cxr::data::load_dataset(cfg.data_options("", ""));
}

using cxr::testing::read_text;

/// Splits CSV text into rows of fields (quoted fields with "" escapes).
std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false, any = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        field += c;
      }
      continue;
    }
    any = true;
    if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      row.push_back(field);
      field.clear();
    } else if (c == '\n') {
      row.push_back(field);
      rows.push_back(row);
      row.clear();
      field.clear();
      any = false;
    } else {
      field += c;
    }
  }
  if (any) {
    row.push_back(field);
    rows.push_back(row);
  }
  return rows;
}

TEST(PredictorRun, RunFolderHasCalibrationAndDetector) {
  const auto& s = shared_run();
  const fs::path run(s.run);
  EXPECT_TRUE(fs::is_regular_file(run / "ood.safetensors"));
  EXPECT_TRUE(fs::is_regular_file(run / "model-card.md"));
  const auto j = cxr::read_json(run / "config.json");
  ASSERT_TRUE(j.contains("calibration")) << j.dump(2);
  const auto& cal = j["calibration"];
  EXPECT_EQ(cal["method"], "temperature");
  const double t = cal["temperature"].get<double>();
  EXPECT_GT(t, 0.0);
  EXPECT_TRUE(std::isfinite(t));
  EXPECT_NE(cal["source"].get<std::string>().find("validation"),
            std::string::npos);
  EXPECT_EQ(cal["fit"]["n"], 12);
  // Temperature scaling minimises the NLL on the data it is fitted on, so
  // it cannot be worse than T = 1 there.
  EXPECT_LE(cal["fit"]["nll_after"].get<double>(),
            cal["fit"]["nll_before"].get<double>() + 1e-9);
  ASSERT_TRUE(j.contains("ood")) << j.dump(2);
  EXPECT_EQ(j["ood"]["version"], 1);
  ASSERT_TRUE(j["ood"]["threshold"].is_number());
  ASSERT_TRUE(j["ood"]["layers"].is_array());
  EXPECT_FALSE(j["ood"]["layers"].empty());
  const double threshold = j["threshold"]["value"].get<double>();
  ASSERT_TRUE(j["threshold"]["calibrated"].is_number());
  EXPECT_NEAR(j["threshold"]["calibrated"].get<double>(),
              sigmoid(std::log(threshold / (1 - threshold)) / t), 1e-9);

  // The temperature is the one fitted on the saved model's validation
  // logits.
  const torch::Device cpu(torch::kCPU);
  const auto p = cxr::infer::Predictor::load(s.run, cpu);
  const auto ds = load_data(s.run);
  const auto& val = ds.split(cxr::data::Split::kVal);
  const auto logits = cxr::infer::forward_logits(p.model(), val.images, cpu);
  EXPECT_NEAR(cxr::metrics::fit_temperature(cxr::to_doubles(logits),
                                            cxr::to_ints(val.labels)),
              t, 1e-9 * t);

  // The Predictor reads it all back.
  EXPECT_TRUE(p.has_detector());
  ASSERT_NE(p.detector(), nullptr);
  EXPECT_EQ(p.config().calibration.method, "temperature");
  EXPECT_DOUBLE_EQ(p.config().calibration.temperature, t);
  EXPECT_DOUBLE_EQ(p.threshold(), threshold);
  EXPECT_NEAR(p.calibrated_threshold(),
              j["threshold"]["calibrated"].get<double>(), 1e-12);
  EXPECT_NEAR(p.raw_threshold_for(p.calibrated_threshold()), threshold, 1e-9);
  EXPECT_DOUBLE_EQ(p.detector()->threshold,
                   j["ood"]["threshold"].get<double>());
  EXPECT_EQ(nlohmann::json(p.detector()->layer_names()), j["ood"]["layers"]);
  ASSERT_TRUE(p.detector()->reference.defined());
  EXPECT_EQ(p.detector()->reference.sizes(), torch::IntArrayRef({32, 32}));

  const std::string card = read_text(run / "model-card.md");
  EXPECT_NE(card.find("Temperature scaling"), std::string::npos) << card;
  EXPECT_NE(card.find("Out-of-distribution"), std::string::npos) << card;
}

TEST(PredictorRun, PredictUsesTheThresholdAndTheTemperature) {
  const auto& s = shared_run();
  const torch::Device cpu(torch::kCPU);
  const auto p = cxr::infer::Predictor::load(s.run, cpu);
  const auto cfg = cxr::infer::read_run_config(s.run);
  const double t = cfg.calibration.temperature;
  const auto ds = load_data(s.run);
  const auto& val = ds.split(cxr::data::Split::kVal);
  const auto preds = p.predict(val.images);
  ASSERT_EQ(preds.size(), 12u);
  std::cout << "[ info     ] T " << t << ", threshold " << cfg.threshold
            << " (calibrated " << cfg.threshold_calibrated() << ")\n";
  // Otherwise raw and calibrated decisions at the raw threshold coincide.
  EXPECT_NE(cfg.threshold, 0.5);
  EXPECT_GT(std::abs(t - 1), 0.01);
  const auto proba = cxr::infer::predict_proba(p.model(), val.images, cpu);
  int positives = 0, flagged = 0;
  for (size_t i = 0; i < preds.size(); ++i) {
    const auto& r = preds[i];
    EXPECT_TRUE(r.error.empty());
    EXPECT_NEAR(r.p_raw, sigmoid(r.logit), 1e-6) << i;
    EXPECT_NEAR(r.p, sigmoid(r.logit / t), 1e-6) << i;
    EXPECT_DOUBLE_EQ(r.p_raw, proba[static_cast<int64_t>(i)].item<double>());
    EXPECT_EQ(r.positive, r.p_raw >= cfg.threshold) << i;
    EXPECT_EQ(r.positive, r.p >= cfg.threshold_calibrated()) << i;
    EXPECT_EQ(r.decision, r.positive ? "COVID" : "Normal");
    ASSERT_TRUE(std::isfinite(r.ood_score)) << i;
    EXPECT_EQ(r.in_distribution, r.ood_score <= p.detector()->threshold);
    if (!r.in_distribution) {
      ASSERT_FALSE(r.reasons.empty());
      EXPECT_EQ(r.reasons[0].rfind("unlike the training images", 0), 0u)
          << r.reasons[0];
    }
    positives += r.positive ? 1 : 0;
    flagged += r.in_distribution ? 0 : 1;
  }
  // The detector's threshold was set on these 12 images: with 12 images no
  // flag keeps the Wilson upper bound under 5 %, so none is flagged.
  ASSERT_GT(cxr::metrics::wilson_interval(1, 12).high, 0.05);
  EXPECT_EQ(flagged, 0);
  EXPECT_DOUBLE_EQ(p.detector()->fitted_flag_rate, 0.0);
  // The tiny task is learnable: the decisions are not all one class.
  EXPECT_GT(positives, 0);
  EXPECT_LT(positives, 12);

  // A raw threshold halfway between an image's raw and calibrated
  // probability: the raw one decides (T != 1 moves p away from p_raw).
  size_t far = 0;
  for (size_t i = 1; i < preds.size(); ++i) {
    if (std::abs(preds[i].logit) > std::abs(preds[far].logit)) far = i;
  }
  ASSERT_GT(std::abs(preds[far].p - preds[far].p_raw), 1e-3);
  auto q = cxr::infer::Predictor::load(s.run, cpu);
  q.set_threshold(0.5 * (preds[far].p + preds[far].p_raw));
  const auto moved = q.predict(val.images);
  EXPECT_EQ(moved[far].positive, preds[far].p_raw >= q.threshold());
  EXPECT_NE(moved[far].positive, preds[far].p >= q.threshold());
  for (size_t i = 0; i < moved.size(); ++i) {
    EXPECT_EQ(moved[i].positive, moved[i].p_raw >= q.threshold()) << i;
    EXPECT_EQ(moved[i].positive, moved[i].p >= q.calibrated_threshold()) << i;
    EXPECT_DOUBLE_EQ(moved[i].p, preds[i].p);
  }
}

TEST(PredictorRun, MapsComeWithTheSamePredictionsInOnePass) {
  const auto& s = shared_run();
  const torch::Device cpu(torch::kCPU);
  auto p = cxr::infer::Predictor::load(s.run, cpu);
  p.batch_size = 5;  // several batches, the last one short
  const auto ds = load_data(s.run);
  const auto& val = ds.split(cxr::data::Split::kVal);
  const auto plain = p.predict(val.images);
  cxr::infer::PredictOptions o;
  o.maps = true;
  const auto mapped = p.predict(val.images, o);
  ASSERT_EQ(mapped.size(), plain.size());
  // The reference: GradCam on the same model and layer, separately.
  cxr::infer::GradCam cam(p.model_ptr(), "");
  const auto ref = cam.compute(val.images);
  const int64_t size = val.images.size(2);
  for (size_t i = 0; i < mapped.size(); ++i) {
    const auto k = static_cast<int64_t>(i);
    const auto& m = mapped[i];
    EXPECT_NEAR(m.p, plain[i].p, 1e-6) << i;
    EXPECT_NEAR(m.ood_score, plain[i].ood_score, 1e-4) << i;
    EXPECT_EQ(m.positive, plain[i].positive) << i;
    EXPECT_EQ(m.in_distribution, plain[i].in_distribution) << i;
    EXPECT_FALSE(plain[i].positive_map.defined());
    ASSERT_TRUE(m.positive_map.defined());
    ASSERT_EQ(m.positive_map.sizes(), (std::vector<int64_t>{size, size}));
    ASSERT_EQ(m.negative_map.sizes(), (std::vector<int64_t>{size, size}));
    EXPECT_GE(m.positive_map.min().item<float>(), 0.0f);
    EXPECT_LE(m.positive_map.max().item<float>(), 1.0f);
    EXPECT_TRUE(
        torch::allclose(m.positive_map, ref.positive_maps[k], 1e-4, 1e-4))
        << i;
    EXPECT_TRUE(
        torch::allclose(m.negative_map, ref.negative_maps[k], 1e-4, 1e-4))
        << i;
  }
  // No gradients left on the parameters, and the model stays in eval mode.
  for (const auto& t : p.model().parameters()) {
    EXPECT_FALSE(t.grad().defined());
  }
  EXPECT_FALSE(p.model().is_training());
  // An unknown layer names the valid ones, before anything is read.
  o.layer = "no_such_layer";
  try {
    p.predict_files({"/nonexistent.png"}, false, o);
    ADD_FAILURE() << "a bad layer was accepted";
  } catch (const cxr::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("no_such_layer"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("valid layers"), std::string::npos)
        << e.what();
  }
}

TEST(PredictorRun, FitTrustAgainIsDeterministic) {
  const auto& s = shared_run();
  const auto before = cxr::read_json(fs::path(s.run) / "config.json");
  cxr::infer::TrustOptions o;
  o.device = "cpu";
  const auto after = cxr::infer::fit_trust(s.run, o);
  const double t0 = before["calibration"]["temperature"].get<double>();
  EXPECT_NEAR(after["calibration"]["temperature"].get<double>(), t0, 1e-9 * t0);
  EXPECT_NEAR(after["ood"]["threshold"].get<double>(),
              before["ood"]["threshold"].get<double>(), 1e-9);
  EXPECT_NEAR(after["threshold"]["calibrated"].get<double>(),
              before["threshold"]["calibrated"].get<double>(), 1e-9);
  EXPECT_EQ(after["ood"]["layers"], before["ood"]["layers"]);
  EXPECT_EQ(after["threshold"]["value"], before["threshold"]["value"]);
  // What it returns is what it wrote.
  const auto written = cxr::read_json(fs::path(s.run) / "config.json");
  EXPECT_EQ(written["calibration"], after["calibration"]);
  EXPECT_EQ(written["ood"], after["ood"]);
}

TEST(PredictorRefit, CarriesTheTemperatureAndThresholdOver) {
  const auto& s = shared_run();
  const auto first = cxr::infer::read_run_config(s.run);
  TempDir dir;
  auto o = tiny_run(s.data, dir / "refit");
  o.train.train_on = "train+val";
  o.threshold_from = s.run;
  const nlohmann::json j = cxr::train::train_run(o);
  EXPECT_EQ(j["train"]["train_on"], "train+val");
  EXPECT_EQ(j["calibration"]["method"], "temperature");
  EXPECT_DOUBLE_EQ(j["calibration"]["temperature"].get<double>(),
                   first.calibration.temperature);
  const auto source = j["calibration"]["source"].get<std::string>();
  EXPECT_NE(source.find(s.run), std::string::npos) << source;
  EXPECT_DOUBLE_EQ(j["threshold"]["value"].get<double>(), first.threshold);
  ASSERT_TRUE(j["ood"]["threshold"].is_number());
  EXPECT_TRUE(std::isfinite(j["ood"]["threshold"].get<double>()));
  EXPECT_NE(j["ood"]["threshold_rule"].get<std::string>().find(s.run),
            std::string::npos);
  EXPECT_TRUE(fs::is_regular_file(dir / "refit" / "ood.safetensors"));
  const auto p =
      cxr::infer::Predictor::load(o.out_dir, torch::Device(torch::kCPU));
  EXPECT_TRUE(p.has_detector());
  EXPECT_DOUBLE_EQ(p.config().calibration.temperature,
                   first.calibration.temperature);

  // Without a train-only run: no calibration, a threshold from its own
  // training images.
  cxr::infer::TrustOptions t;
  t.device = "cpu";
  const auto none = cxr::infer::fit_trust(o.out_dir, t);
  EXPECT_EQ(none["calibration"]["method"], "none");
  EXPECT_EQ(none["calibration"]["temperature"], 1.0);
  EXPECT_TRUE(none["ood"]["threshold"].is_number());
  // A train+val run cannot be the source of another.
  t.from = o.out_dir;
  EXPECT_THROW(cxr::infer::fit_trust(o.out_dir, t), cxr::ConfigError);
}

TEST(PredictorFiles, CsvAndJsonWithColourAndCorruptFiles) {
  const auto& s = shared_run();
  TempDir dir;
  const fs::path images = dir / "images";
  fs::create_directories(images);
  int gray = 0;
  for (const auto& e : fs::directory_iterator(s.data / "test" / "COVID")) {
    fs::copy_file(e.path(), images / ("g" + e.path().filename().string()));
    if (++gray == 3) break;
  }
  // A saturated colour picture: red left half, blue right half.
  auto rgb = torch::zeros({3, 24, 24});
  rgb[0].slice(1, 0, 12).fill_(1.0);
  rgb[2].slice(1, 12, 24).fill_(1.0);
  cxr::data::write_png((images / "colour.png").string(), rgb);
  cxr::testing::write_bytes(images / "bad.png", "not a png at all");

  cxr::evaluate::PredictOptions o;
  o.run_dir = s.run;
  o.inputs = {images.string()};
  o.device = "cpu";
  o.csv_path = (dir / "out.csv").string();
  o.json_path = (dir / "out.json").string();
  // An unreadable file stops the run without --skip-bad.
  EXPECT_THROW(cxr::evaluate::predict_files(o), cxr::DataError);
  o.skip_bad = true;
  std::string positive;
  const auto preds = cxr::evaluate::predict_files(o, &positive);
  EXPECT_EQ(positive, "COVID");
  ASSERT_EQ(preds.size(), 5u);

  const auto rows = parse_csv(read_text(o.csv_path));
  ASSERT_EQ(rows.size(), 6u);
  EXPECT_EQ(rows[0],
            (std::vector<std::string>{
                "file", "p_COVID", "p_COVID_raw", "decision", "ood_score",
                "in_distribution", "ood_reasons", "error"}));
  EXPECT_EQ(read_text(o.csv_path).substr(0, read_text(o.csv_path).find('\n')),
            "file,p_COVID,p_COVID_raw,decision,ood_score,in_distribution,"
            "ood_reasons,error");
  const auto j = cxr::read_json(o.json_path);
  ASSERT_TRUE(j["predictions"].is_array());
  ASSERT_EQ(j["predictions"].size(), 5u);
  EXPECT_EQ(j["ood_detector"], true);
  EXPECT_EQ(j["calibration"]["method"], "temperature");

  bool saw_colour = false, saw_bad = false;
  for (size_t i = 0; i < preds.size(); ++i) {
    const auto& r = preds[i];
    const auto& row = rows[i + 1];
    const auto& e = j["predictions"][i];
    ASSERT_EQ(row.size(), 8u) << i;
    EXPECT_EQ(row[0], r.file);
    EXPECT_EQ(e["file"], r.file);
    const std::string name = fs::path(r.file).filename().string();
    if (name == "bad.png") {
      saw_bad = true;
      EXPECT_FALSE(r.error.empty());
      for (int c = 1; c <= 5; ++c) EXPECT_EQ(row[c], "") << c;
      EXPECT_FALSE(row[7].empty());
      EXPECT_TRUE(e.contains("error"));
      EXPECT_FALSE(e.contains("p_COVID"));
      continue;
    }
    EXPECT_TRUE(r.error.empty()) << r.error;
    EXPECT_EQ(row[7], "");
    for (const char* k : {"p_COVID", "p_COVID_raw", "decision", "ood_score",
                          "in_distribution", "ood_reasons"}) {
      EXPECT_TRUE(e.contains(k)) << name << " " << k;
    }
    EXPECT_NEAR(std::stod(row[1]), r.p, 1e-6);
    EXPECT_NEAR(std::stod(row[2]), r.p_raw, 1e-6);
    EXPECT_EQ(row[3], r.decision);
    EXPECT_NEAR(std::stod(row[4]), r.ood_score, 1e-4);
    EXPECT_EQ(row[5], r.in_distribution ? "1" : "0");
    EXPECT_DOUBLE_EQ(e["p_COVID"].get<double>(), r.p);
    EXPECT_DOUBLE_EQ(e["p_COVID_raw"].get<double>(), r.p_raw);
    EXPECT_EQ(e["in_distribution"], r.in_distribution);
    EXPECT_EQ(e["ood_reasons"].size(), r.reasons.size());
    if (name == "colour.png") {
      saw_colour = true;
      EXPECT_FALSE(r.in_distribution);
      ASSERT_FALSE(r.reasons.empty());
      EXPECT_EQ(r.reasons[0].rfind("colour", 0), 0u) << r.reasons[0];
      EXPECT_EQ(row[5], "0");
      EXPECT_EQ(row[6].rfind("colour", 0), 0u) << row[6];
      EXPECT_EQ(e["in_distribution"], false);
      EXPECT_EQ(e["ood_reasons"][0].get<std::string>().rfind("colour", 0), 0u);
    } else {
      for (const auto& why : r.reasons) {
        EXPECT_EQ(why.find("colour"), std::string::npos) << name << why;
      }
    }
  }
  EXPECT_TRUE(saw_colour);
  EXPECT_TRUE(saw_bad);
}

TEST(PredictorCli, CalibratePredictAndAMissingRun) {
  const auto& s = shared_run();
  TempDir dir;
  const fs::path run = dir / "run";
  fs::copy(s.run, run, fs::copy_options::recursive);
  const std::string bin = CXR_BINARY;
  std::string out;
  int rc = cxr::testing::run_command(
      bin + " calibrate " + run.string() + " --device cpu --no-cache", &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("calibration: temperature"), std::string::npos) << out;
  EXPECT_NE(out.find("out-of-distribution warning"), std::string::npos) << out;
  // Same temperature as the original run.
  EXPECT_NEAR(cxr::read_json(run / "config.json")["calibration"]["temperature"]
                  .get<double>(),
              s.trained["calibration"]["temperature"].get<double>(), 1e-6);

  fs::path png;
  for (const auto& e : fs::directory_iterator(s.data / "test" / "Normal")) {
    png = e.path();
    break;
  }
  rc = cxr::testing::run_command(
      bin + " predict " + run.string() + " " + png.string() + " --device cpu",
      &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("in-distribution"), std::string::npos) << out;
  EXPECT_NE(out.find(png.string()), std::string::npos) << out;

  const std::string missing = (dir / "nonexistent").string();
  rc = cxr::testing::run_command(bin + " calibrate " + missing, &out);
  EXPECT_EQ(rc, 4) << out;
  EXPECT_NE(out.find(missing), std::string::npos) << out;
  // One line.
  std::string body = out;
  while (!body.empty() && body.back() == '\n') body.pop_back();
  EXPECT_EQ(body.find('\n'), std::string::npos) << out;
}

TEST(PredictorEvaluate, TestSplitMetricsAndModelCard) {
  const auto& s = shared_run();
  cxr::evaluate::EvalOptions e;
  e.run_dir = s.run;
  e.split = "test";
  e.bootstrap = 100;
  e.device = "cpu";
  const auto m = cxr::evaluate::evaluate_run(e).to_json();
  const fs::path out = fs::path(s.run) / "eval-test";
  ASSERT_TRUE(fs::is_regular_file(out / "metrics.json"));
  const auto j = cxr::read_json(out / "metrics.json");
  EXPECT_EQ(j["calibration"], m["calibration"]);
  EXPECT_TRUE(fs::is_regular_file(out / "reliability.png"));
  EXPECT_GT(fs::file_size(out / "reliability.png"), 100u);

  // Recompute the calibration metrics from the Predictor's output.
  const torch::Device cpu(torch::kCPU);
  const auto p = cxr::infer::Predictor::load(s.run, cpu);
  const auto ds = load_data(s.run);
  const auto& test = ds.split(cxr::data::Split::kTest);
  const auto preds = p.predict(test.images);
  std::vector<double> raw, cal;
  int flagged = 0;
  for (const auto& r : preds) {
    raw.push_back(r.p_raw);
    cal.push_back(r.p);
    flagged += r.in_distribution ? 0 : 1;
  }
  const auto y = cxr::to_ints(test.labels);
  ASSERT_TRUE(j.contains("calibration"));
  EXPECT_EQ(j["calibration"]["method"], "temperature");
  EXPECT_EQ(j["calibration"]["bins"], 15);
  for (const char* k : {"raw", "calibrated"}) {
    const auto& c = j["calibration"][k];
    const auto& probs = std::string(k) == "raw" ? raw : cal;
    ASSERT_TRUE(c.contains("ece")) << k;
    for (const char* b : {"value", "low", "high"}) {
      ASSERT_TRUE(c["ece"][b].is_number()) << k << " " << b;
      EXPECT_GE(c["ece"][b].get<double>(), 0.0);
      EXPECT_LE(c["ece"][b].get<double>(), 1.0);
    }
    EXPECT_LE(c["ece"]["low"].get<double>(), c["ece"]["high"].get<double>());
    EXPECT_NEAR(c["ece"]["value"].get<double>(),
                cxr::metrics::expected_calibration_error(
                    cxr::metrics::calibration_table(probs, y, 15)),
                1e-9)
        << k;
    EXPECT_NEAR(c["brier"].get<double>(), cxr::metrics::brier_score(probs, y),
                1e-9)
        << k;
    EXPECT_NEAR(c["nll"].get<double>(), cxr::metrics::log_loss(probs, y), 1e-9)
        << k;
  }
  ASSERT_TRUE(j.contains("ood"));
  EXPECT_EQ(j["ood"]["detector"], true);
  EXPECT_NEAR(j["ood"]["flag_rate"].get<double>(), flagged / 12.0, 1e-12);
  EXPECT_NEAR(j["threshold_calibrated"].get<double>(), p.calibrated_threshold(),
              1e-12);

  const std::string card = read_text(fs::path(s.run) / "model-card.md");
  EXPECT_NE(card.find("Metrics on test"), std::string::npos) << card;
  EXPECT_NE(card.find("Calibration on test"), std::string::npos) << card;
  EXPECT_NE(card.find("OOD flag rate on the test split"), std::string::npos);
}

}  // namespace
