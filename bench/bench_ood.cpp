// The out-of-distribution warning of a trained run: first the table the
// issue asks for (per OOD evaluation set: n, share flagged by the input
// checks, by the detector and in all, AUROC of the detector's score against
// the run's test split), then the latency the detector adds to one
// prediction (the same Predictor with and without it, in the same run), and
// with both Grad-CAM maps as well.
//   CXR_BENCH_RUN=study/baseline build/bench/bench_ood
//   CXR_BENCH_RUN=study/mobilenetv2 build/bench/bench_ood
//   --benchmark_repetitions=3
// Without CXR_BENCH_RUN it says so and exits.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "bench_main.h"
#include "cxr/evaluate/ood_sets.h"
#include "cxr/infer/predictor.h"

namespace {

std::string run_dir() {
  const char* r = std::getenv("CXR_BENCH_RUN");
  return r ? r : "";
}

/// One preprocessed image (uint8 [1, 1, S, S]) of the run's test split
/// would need the data; latency does not depend on the pixels, so a seeded
/// X-ray-like gradient is used.
torch::Tensor one_image(int size) {
  torch::manual_seed(3);
  auto y = torch::linspace(0, 1, size).unsqueeze(1).expand({size, size});
  auto x = (0.3 + 0.4 * y + 0.05 * torch::rand({size, size})) * 255;
  return x.round().clamp(0, 255).to(torch::kUInt8).view({1, 1, size, size});
}

void predict_one(benchmark::State& state, bool detector, bool maps = false) {
  auto p = cxr::infer::Predictor::load(run_dir(), torch::kCPU);
  if (!detector) p.disable_detector();
  if (detector && !p.has_detector()) {
    state.SkipWithError("the run has no OOD detector (cxr calibrate RUN)");
    return;
  }
  const auto x = one_image(p.config().model.input_size);
  cxr::infer::PredictOptions o;
  o.maps = maps;
  for (auto _ : state) {
    auto r = p.predict(x, o);
    benchmark::DoNotOptimize(r.front().p);
  }
  state.counters["images_per_s"] = benchmark::Counter(
      static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

void BM_PredictOneWithoutDetector(benchmark::State& state) {
  predict_one(state, false);
}
void BM_PredictOneWithDetector(benchmark::State& state) {
  predict_one(state, true);
}
/// What `serve` does for one image with ?maps=1: prediction, detector and
/// both Grad-CAM maps in one pass.
void BM_PredictOneWithDetectorAndMaps(benchmark::State& state) {
  predict_one(state, true, true);
}

}  // namespace

int main(int argc, char** argv) {
  if (run_dir().empty()) {
    std::printf(
        "bench_ood: set CXR_BENCH_RUN to a trained run folder (e.g. "
        "study/baseline); nothing to measure\n");
    return 0;
  }
  {
    cxr::evaluate::OodEvalOptions o;
    o.run_dir = run_dir();
    o.shared_dir = CXR_SHARED_DIR;
    o.device = "cpu";
    o.out_dir =
        (std::filesystem::temp_directory_path() / "cxr-bench-ood").string();
    std::printf(
        "%s\n",
        cxr::evaluate::format_ood(cxr::evaluate::evaluate_ood(o)).c_str());
  }
  benchmark::RegisterBenchmark("PredictOne/without_detector",
                               BM_PredictOneWithoutDetector)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("PredictOne/with_detector",
                               BM_PredictOneWithDetector)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("PredictOne/with_detector_and_maps",
                               BM_PredictOneWithDetectorAndMaps)
      ->Unit(benchmark::kMillisecond);
  return cxr::bench::run_benchmarks(argc, argv);
}
