// Throughput of the transfer classifiers (backbone + head) on the CPU:
// forward in inference mode, and forward+backward with the backbone
// trainable (fine-tuning; batch norm stays in inference mode). Compare with
// bench/reference_backbones.py via bench/run_backbones.sh.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "cxr/models/transfer.h"

namespace {

void BM_Transfer(benchmark::State& state,
                 const std::string& arch,
                 bool backward) {
  const int size = static_cast<int>(state.range(0));
  const int64_t batch = state.range(1);
  torch::manual_seed(0);
  cxr::models::ModelConfig config;
  config.arch = arch;
  config.input_size = size;
  auto model = cxr::models::make_model(config);
  model->train(backward);
  model->set_backbone_trainable(true);
  const torch::Tensor x = torch::rand({batch, 1, size, size});

  auto step = [&] {
    if (backward) {
      model->zero_grad();
      model->forward(x).sum().backward();
    } else {
      torch::NoGradGuard no_grad;
      torch::Tensor y = model->forward(x);
      benchmark::DoNotOptimize(y.data_ptr());
    }
  };
  step();  // warm-up: allocator and one-time kernel initialisation
  for (auto _ : state) step();
  state.counters["images/s"] =
      benchmark::Counter(static_cast<double>(batch * state.iterations()),
                         benchmark::Counter::kIsRate);
  state.counters["threads"] = torch::get_num_threads();
}

void configs(benchmark::internal::Benchmark* b) {
  b->Args({128, 16})->Args({224, 16});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK_CAPTURE(BM_Transfer,
                  mobilenetv2_fwd,
                  std::string("mobilenetv2"),
                  false)
    ->Apply(configs);
BENCHMARK_CAPTURE(BM_Transfer,
                  mobilenetv2_fwd_bwd,
                  std::string("mobilenetv2"),
                  true)
    ->Apply(configs);
BENCHMARK_CAPTURE(BM_Transfer, resnet50v2_fwd, std::string("resnet50v2"), false)
    ->Apply(configs);
BENCHMARK_CAPTURE(BM_Transfer,
                  resnet50v2_fwd_bwd,
                  std::string("resnet50v2"),
                  true)
    ->Apply(configs);

}  // namespace

BENCHMARK_MAIN();
