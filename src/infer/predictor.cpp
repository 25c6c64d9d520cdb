#include "cxr/infer/predictor.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <sstream>

#include "cxr/common/error.h"
#include "cxr/infer/gradcam.h"

namespace fs = std::filesystem;

namespace cxr::infer {
namespace {

std::string fixed(double v, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

double logit_of(double p) {
  return std::log(p / (1 - p));
}

/// The detector must read this model: its layers among the model's taps
/// and, per layer, as many features as the model gives there (one forward
/// pass of a blank image). A detector file from another run, or a damaged
/// one, is a ModelError here rather than a shape error in every prediction.
void check_detector(const OodDetector& det,
                    models::ClassifierImpl& model,
                    const torch::Device& device,
                    const std::string& file) {
  const auto taps = model.tap_names();
  const auto names = det.layer_names();
  for (const auto& name : names) {
    if (name != kInputLayer &&
        std::find(taps.begin(), taps.end(), name) == taps.end()) {
      throw ModelError("'" + file + "' models layer '" + name +
                       "', which this run's model does not have; re-fit it "
                       "with cxr calibrate RUN");
    }
  }
  const int s = model.config().input_size;
  ForwardOptions fo;
  fo.layers = names;
  const auto r =
      forward(model, torch::zeros({1, 1, s, s}, torch::kUInt8), device, fo);
  for (size_t k = 0; k < names.size(); ++k) {
    const int64_t want = det.layers[k].means.size(1);
    if (r.features[k].size(1) != want) {
      throw ModelError("'" + file + "' expects " + std::to_string(want) +
                       " features from layer '" + names[k] +
                       "', the model gives " +
                       std::to_string(r.features[k].size(1)) +
                       "; re-fit it with cxr calibrate RUN");
    }
  }
}

}  // namespace

Predictor Predictor::load(const std::string& dir, const torch::Device& device) {
  Predictor p;
  p.config_ = read_run_config(dir);
  if (p.config_.status == "training") {
    throw ModelError("run '" + dir +
                     "' has not finished training; wait for it or resume "
                     "it with cxr train --resume");
  }
  p.model_ = load_model(dir, p.config_.model, device);
  p.device_ = device;
  p.threshold_ = p.config_.threshold;
  if (!p.config_.ood.is_null()) {
    const std::string file = ood_file(dir);
    p.detector_ = std::make_shared<OodDetector>(OodDetector::load(file));
    check_detector(*p.detector_, *p.model_, device, file);
  }
  return p;
}

double Predictor::calibrated_threshold() const {
  if (threshold_ <= 0 || threshold_ >= 1) return threshold_;
  return config_.calibration.apply(logit_of(threshold_));
}

double Predictor::raw_threshold_for(double calibrated) const {
  if (calibrated <= 0 || calibrated >= 1) return calibrated;
  // sigmoid(z / T) = c  <=>  z = T logit(c).
  const double z = config_.calibration.temperature * logit_of(calibrated);
  return 1.0 / (1.0 + std::exp(-z));
}

std::string Predictor::cam_layer(const std::string& layer) const {
  // GradCam validates the name (and picks the default for "").
  return GradCam(model_, layer).layer();
}

std::vector<Prediction> Predictor::predict(const torch::Tensor& images,
                                           const PredictOptions& o) const {
  ForwardOptions fo;
  fo.batch_size = batch_size;
  if (detector_) fo.layers = detector_->layer_names();
  if (o.maps) fo.cam_layer = cam_layer(o.layer);
  const ForwardResult fr = forward(*model_, images, device_, fo);
  const torch::Tensor& logits = fr.logits;
  const std::vector<torch::Tensor>& feats = fr.features;
  // The raw probability in float32, as training and evaluation always
  // computed it, so decisions at the threshold are unchanged.
  const torch::Tensor p_raw = torch::sigmoid(logits).to(torch::kFloat64);
  const torch::Tensor p_cal =
      config_.calibration.apply(logits.to(torch::kFloat64));
  torch::Tensor scores;
  if (detector_) scores = detector_->score(feats);
  std::vector<Prediction> out(static_cast<size_t>(logits.size(0)));
  for (int64_t i = 0; i < logits.size(0); ++i) {
    auto& r = out[static_cast<size_t>(i)];
    r.logit = logits[i].item<double>();
    r.p_raw = p_raw[i].item<double>();
    r.p = p_cal[i].item<double>();
    r.positive = r.p_raw >= threshold_;
    r.decision = r.positive ? config_.positive : config_.negative;
    if (o.maps) {
      r.positive_map = fr.positive_maps[i];
      r.negative_map = fr.negative_maps[i];
    }
    if (detector_) {
      r.ood_score = scores[i].item<double>();
      if (r.ood_score > detector_->threshold) {
        r.in_distribution = false;
        r.reasons.push_back("unlike the training images: feature distance " +
                            fixed(r.ood_score, 2) + " > " +
                            fixed(detector_->threshold, 2) +
                            " (a limit that flags at most " +
                            fixed(100 * detector_->false_flag_rate, 0) +
                            " % of chest X-rays like the training data)");
      }
    }
  }
  return out;
}

torch::Tensor Predictor::preprocess(const data::GrayImage& image) const {
  // Same path as training: resize, quantise to 8 bits, model normalises.
  return data::resize_square(image.pixels, config_.model.input_size)
      .unsqueeze(0)
      .mul(255.0f)
      .round()
      .clamp(0, 255)
      .to(torch::kUInt8);
}

std::vector<Prediction> Predictor::predict(
    const std::vector<data::GrayImage>& images, const PredictOptions& o) const {
  if (images.empty()) return {};
  std::vector<torch::Tensor> batch;
  std::vector<std::vector<std::string>> checks;
  const torch::Tensor reference =
      detector_ ? detector_->reference : torch::Tensor();
  for (const auto& img : images) {
    checks.push_back(
        check_input(img, config_.model.input_size, reference, input_checks_));
    // Decoder notes (a multi-frame DICOM scored on its first frame) are
    // inputs unlike single chest films: flagged with the note as reason.
    checks.back().insert(checks.back().end(), img.info.notes.begin(),
                         img.info.notes.end());
    batch.push_back(preprocess(img));
  }
  auto out = predict(torch::stack(batch), o);
  for (size_t i = 0; i < out.size(); ++i) {
    if (checks[i].empty()) continue;
    out[i].in_distribution = false;
    out[i].reasons.insert(out[i].reasons.begin(), checks[i].begin(),
                          checks[i].end());
  }
  return out;
}

std::vector<Prediction> Predictor::predict_files(
    const std::vector<std::string>& files,
    bool skip_bad,
    const PredictOptions& o) const {
  if (o.maps) cam_layer(o.layer);  // a bad --layer before any file is read
  std::vector<Prediction> out(files.size());
  std::vector<data::GrayImage> batch;
  std::vector<size_t> ids;
  auto flush = [&] {
    if (batch.empty()) return;
    auto res = predict(batch, o);
    for (size_t k = 0; k < ids.size(); ++k) {
      res[k].file = files[ids[k]];
      out[ids[k]] = std::move(res[k]);
    }
    batch.clear();
    ids.clear();
  };
  for (size_t i = 0; i < files.size(); ++i) {
    out[i].file = files[i];
    try {
      batch.push_back(data::read_gray(files[i]));
      ids.push_back(i);
    } catch (const DataError& e) {
      if (!skip_bad) {
        throw DataError(std::string(e.what()) +
                        " (pass --skip-bad to predict the rest)");
      }
      out[i].error = e.what();
      out[i].in_distribution = false;
    }
    if (static_cast<int>(batch.size()) >= batch_size) flush();
  }
  flush();
  return out;
}

}  // namespace cxr::infer
