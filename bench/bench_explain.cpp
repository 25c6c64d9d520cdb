// Grad-CAM cost on the CPU: the baseline of the study (filters 32-64-128-128,
// batch norm) at 128 px, random weights (the cost does not depend on them).
//   build/bench/bench_explain [--benchmark_repetitions=3]
// Target (issue): one image, prediction + both maps, under 50 ms.
#include <benchmark/benchmark.h>

#include <filesystem>

#include "bench_main.h"
#include "cxr/common/runtime.h"
#include "cxr/explain/explain.h"
#include "cxr/explain/trust.h"
#include "cxr/infer/gradcam.h"
#include "cxr/models/baseline.h"
#include "cxr/train/trainer.h"

namespace {

cxr::models::Classifier baseline() {
  torch::manual_seed(0);
  cxr::models::ModelConfig c;  // defaults: 128 px, 32-64-128-128, BN
  auto m = cxr::models::make_model(c);
  m->eval();
  return m;
}

torch::Tensor images(int64_t n) {
  torch::manual_seed(1);
  return (torch::rand({n, 1, 128, 128}) * 255).round().to(torch::kUInt8);
}

/// Torch intra-op threads for one benchmark (range(1)), restored after.
class Threads {
 public:
  explicit Threads(int64_t n) : previous_(torch::get_num_threads()) {
    torch::set_num_threads(static_cast<int>(n));
  }
  ~Threads() { torch::set_num_threads(previous_); }

 private:
  int previous_;
};

void rate(benchmark::State& state, int64_t per_iteration) {
  state.counters["images_per_s"] =
      benchmark::Counter(static_cast<double>(per_iteration) *
                             static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate);
}

/// Prediction alone (no graph), for comparison.
void BM_PredictOnly(benchmark::State& state) {
  Threads threads(state.range(1));
  auto model = baseline();
  auto x = images(state.range(0));
  for (auto _ : state) {
    auto p = cxr::train::predict_proba(*model, x, torch::Device(torch::kCPU),
                                       static_cast<int>(state.range(0)));
    benchmark::DoNotOptimize(p.data_ptr<float>());
  }
  rate(state, state.range(0));
}

/// Prediction + COVID map + Normal map: one forward, one gradient.
void BM_GradCam(benchmark::State& state) {
  Threads threads(state.range(1));
  auto model = baseline();
  auto x = images(state.range(0));
  cxr::infer::GradCam cam(model, "", static_cast<int>(state.range(0)));
  for (auto _ : state) {
    auto r = cam.compute(x);
    benchmark::DoNotOptimize(r.negative_maps.data_ptr<float>());
  }
  rate(state, state.range(0));
}

/// What `cxr explain` adds per image: the three-tile panel with colour bar
/// (cairo + PNG encoding). Single-threaded, as explain_run draws.
void BM_Panel(benchmark::State& state) {
  auto model = baseline();
  auto x = images(1);
  auto r = cxr::infer::GradCam(model).compute(x);
  auto gray = x[0][0].to(torch::kFloat32) / 255;
  const auto path =
      (std::filesystem::temp_directory_path() / "cxr-bench-panel.png").string();
  cxr::explain::PanelInfo info;
  info.title = "bench.png";
  info.probability = r.probabilities[0].item<double>();
  const int threads = torch::get_num_threads();
  torch::set_num_threads(1);
  for (auto _ : state) {
    cxr::explain::save_panel(gray, r.positive_maps[0], r.negative_maps[0], info,
                             path);
  }
  torch::set_num_threads(threads);
  std::filesystem::remove(path);
  rate(state, 1);
}

/// All three trust checks (randomisation, deletion at 10/20/50 % with 3
/// random repeats, energy) per batch of images.
void BM_TrustChecks(benchmark::State& state) {
  Threads threads(state.range(1));
  auto model = baseline();
  auto x = images(state.range(0));
  for (auto _ : state) {
    auto rep = cxr::explain::trust_checks(model, x, {});
    benchmark::DoNotOptimize(rep.mean_rank_correlation);
  }
  rate(state, state.range(0));
}

// Arguments: images per call, torch threads. Wall-clock time: torch works
// on several threads, and the main thread's CPU time would understate the
// cost. One thread is in the grid because on a busy 2-core machine OpenMP
// workers waiting for a core can make two threads slower than one.
BENCHMARK(BM_PredictOnly)
    ->ArgsProduct({{1, 4, 8, 32}, {1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_GradCam)
    ->ArgsProduct({{1, 4, 8, 32}, {1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_Panel)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_TrustChecks)
    ->ArgsProduct({{32}, {1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(1)
    ->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  return cxr::bench::run_benchmarks(argc, argv);
}
