// Training throughput of the baseline CNN (128 px, batch 32, augmentation on
// the device, Adam) -- the same work as bench/reference_train.py.
//   build/bench/bench_train [--benchmark_filter=...]
// Environment: CXR_BENCH_THREADS=N, CXR_BENCH_FILTERS=16,32,64,128,256 (the
// study's baseline), CXR_BENCH_DEFAULT_MALLOC=1 keeps glibc's default
// allocator settings instead of cxr's (cxr::configure_allocator).
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "bench_main.h"
#include "cxr/augment/augment.h"
#include "cxr/common/runtime.h"
#include "cxr/models/baseline.h"
#include "cxr/train/trainer.h"

namespace {

std::vector<int64_t> bench_filters() {
  const char* f = std::getenv("CXR_BENCH_FILTERS");
  std::string spec = f && *f ? f : "16,32,64,128,256";
  std::vector<int64_t> out;
  std::stringstream ss(spec);
  for (std::string tok; std::getline(ss, tok, ',');)
    out.push_back(std::stol(tok));
  return out;
}

void BM_BaselineTrainStep(benchmark::State& state) {
  const int size = static_cast<int>(state.range(0));
  const int batch = static_cast<int>(state.range(1));
  torch::manual_seed(0);
  cxr::models::ModelConfig c;
  c.input_size = size;
  c.filters.clear();
  for (int64_t f : bench_filters()) c.filters.push_back(static_cast<int>(f));
  c.batch_norm = true;
  c.dropout = 0.3;
  cxr::models::BaselineCnn model(c);
  model->train();
  // As cxr::train::fit does on the CPU (channels-last convolutions).
  const torch::Device cpu(torch::kCPU);
  cxr::train::use_device_layout(*model, cpu);
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(1e-3));
  auto images =
      torch::randint(0, 256, {batch * 8, 1, size, size}, torch::kUInt8);
  auto labels = (torch::arange(batch * 8) % 2).to(torch::kFloat32);
  cxr::augment::AugmentOptions aug;
  int64_t step = 0;
  for (auto _ : state) {
    const int64_t s = (step % 8) * batch;
    auto x = images.slice(0, s, s + batch).to(torch::kFloat32).div_(255.0f);
    x = cxr::augment::random_affine(x, aug, static_cast<uint64_t>(step));
    x = cxr::train::device_layout(x, cpu);
    auto y = labels.slice(0, s, s + batch);
    opt.zero_grad();
    auto loss = torch::binary_cross_entropy_with_logits(model->forward(x), y);
    loss.backward();
    opt.step();
    benchmark::DoNotOptimize(loss.item<float>());
    ++step;
  }
  state.counters["images_per_s"] = benchmark::Counter(
      static_cast<double>(batch) * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate);
}

void BM_BaselinePredictOne(benchmark::State& state) {
  const int size = static_cast<int>(state.range(0));
  cxr::models::ModelConfig c;
  c.input_size = size;
  c.filters.clear();
  for (int64_t f : bench_filters()) c.filters.push_back(static_cast<int>(f));
  cxr::models::BaselineCnn model(c);
  model->eval();
  torch::NoGradGuard no_grad;
  auto x = torch::rand({1, 1, size, size});
  for (auto _ : state) {
    benchmark::DoNotOptimize(torch::sigmoid(model->forward(x)).item<float>());
  }
  state.counters["images_per_s"] = benchmark::Counter(
      static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

/// The data side of a training step alone, as cxr::train's train_epoch
/// does it: gather a batch of decoded uint8 images by index, convert to
/// [0, 1] float, random affine augmentation, the device layout. Its
/// images/s against the fwd+bwd rows of bench_backbones says how much of an
/// epoch overlapping data preparation with compute could hide (issue 17).
void BM_PrepareBatch(benchmark::State& state) {
  const int size = static_cast<int>(state.range(0));
  const int batch = static_cast<int>(state.range(1));
  torch::manual_seed(0);
  const int64_t n = 256;
  auto images = torch::randint(0, 256, {n, 1, size, size}, torch::kUInt8);
  const torch::Device cpu(torch::kCPU);
  cxr::augment::AugmentOptions aug;
  int64_t step = 0;
  for (auto _ : state) {
    auto idx = torch::randperm(n, torch::kLong).slice(0, 0, batch);
    auto x = images.index_select(0, idx).to(torch::kFloat32).div_(255.0f);
    x = cxr::augment::random_affine(x, aug, static_cast<uint64_t>(step));
    x = cxr::train::device_layout(x, cpu);
    benchmark::DoNotOptimize(x.data_ptr<float>());
    ++step;
  }
  state.counters["images_per_s"] = benchmark::Counter(
      static_cast<double>(batch) * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate);
}

BENCHMARK(BM_BaselineTrainStep)
    ->Args({128, 32})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(10.0);
BENCHMARK(BM_PrepareBatch)
    ->Args({128, 32})
    ->Args({224, 32})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(3.0);
BENCHMARK(BM_BaselinePredictOne)
    ->Arg(128)
    ->Unit(benchmark::kMillisecond)
    ->MinTime(3.0);

}  // namespace

int main(int argc, char** argv) {
  return cxr::bench::run_benchmarks(argc, argv);
}
