// Throughput of the transfer classifiers (backbone + head) on the CPU:
// forward in inference mode, and forward+backward with the backbone
// trainable (fine-tuning; batch norm stays in inference mode). Compare with
// bench/reference_backbones.py via bench/run_backbones.sh.
//
// Each configuration also runs under bfloat16 autocast (`--precision bf16`,
// cxr::AutocastGuard), named <arch>_<mode>_bf16: the bf16 vs fp32 table of
// docs/performance.md section 4. Only the fp32 rows have a PyTorch
// reference. `--benchmark_filter=bf16` or `=-bf16` selects one side.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <cstdlib>

#include "bench_main.h"
#include "cxr/common/precision.h"
#include "cxr/common/runtime.h"
#include "cxr/models/transfer.h"
#include "cxr/train/trainer.h"

namespace {

// CXR_BENCH_DEVICE=cuda (default cpu) and CXR_BENCH_BATCH=N (default 16)
// select the device and batch; bench/run_backbones.sh sets both.
torch::Device bench_device() {
  const char* d = std::getenv("CXR_BENCH_DEVICE");
  return cxr::resolve_device(d && *d ? d : "cpu");
}
int64_t bench_batch() {
  const char* b = std::getenv("CXR_BENCH_BATCH");
  return b && *b ? std::max(1L, std::atol(b)) : 16;
}

void BM_Transfer(benchmark::State& state,
                 const std::string& arch,
                 bool backward,
                 cxr::Precision precision,
                 const std::string& trainable_from = "") {
  const int size = static_cast<int>(state.range(0));
  const int64_t batch = bench_batch();
  const torch::Device device = bench_device();
  torch::manual_seed(0);
  cxr::models::ModelConfig config;
  config.arch = arch;
  config.input_size = size;
  if (arch == "baseline") {
    // The study's baseline (docs/study.md).
    config.filters = {16, 32, 64, 128, 256};
  } else {
    // Random weights, timed as fine-tuning of a pretrained backbone:
    // marking it pretrained keeps batch norm in inference mode, as the
    // reference does.
    config.pretrained = "random weights (benchmark)";
  }
  auto model = cxr::models::make_model(config);
  model->train(backward);
  model->set_backbone_trainable(true);
  // --unfreeze-from: the layers before it stay frozen (no weight gradients,
  // and the backward pass stops there).
  if (!trainable_from.empty()) model->set_trainable_from(trainable_from);
  model->to(device);
  // The layout cxr trains and predicts in (channels-last on the CPU).
  cxr::train::use_device_layout(*model, device);
  const torch::Tensor x = cxr::train::device_layout(
      torch::rand({batch, 1, size, size}, torch::TensorOptions(device)),
      device);

  // As the trainer and infer::forward run a step: autocast around the
  // forward pass only, the loss in float32.
  auto step = [&] {
    if (backward) {
      model->zero_grad();
      torch::Tensor y;
      {
        cxr::AutocastGuard autocast(device, precision);
        y = model->forward(x);
      }
      y.to(torch::kFloat32).sum().backward();
    } else {
      torch::NoGradGuard no_grad;
      cxr::AutocastGuard autocast(device, precision);
      torch::Tensor y = model->forward(x);
      benchmark::DoNotOptimize(y.data_ptr());
    }
    // Time the kernels, not their launch.
    if (device.is_cuda()) torch::cuda::synchronize();
  };
  step();  // warm-up: allocator and one-time kernel initialisation
  for (auto _ : state) step();
  state.counters["images/s"] =
      benchmark::Counter(static_cast<double>(batch * state.iterations()),
                         benchmark::Counter::kIsRate);
  state.counters["threads"] = torch::get_num_threads();
  state.counters["batch"] = static_cast<double>(batch);
}

void configs(benchmark::internal::Benchmark* b) {
  b->Args({128})->Args({224});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}
void baseline_configs(benchmark::internal::Benchmark* b) {
  // The study trains the baseline at 128 px.
  b->Args({128});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

constexpr auto kFp32 = cxr::Precision::kFloat32;
constexpr auto kBf16 = cxr::Precision::kBFloat16;

#define CXR_BENCH_ARCH(arch, apply)                                            \
  BENCHMARK_CAPTURE(BM_Transfer, arch##_fwd, std::string(#arch), false, kFp32) \
      ->Apply(apply);                                                          \
  BENCHMARK_CAPTURE(BM_Transfer, arch##_fwd_bwd, std::string(#arch), true,     \
                    kFp32)                                                     \
      ->Apply(apply);                                                          \
  BENCHMARK_CAPTURE(BM_Transfer, arch##_fwd_bf16, std::string(#arch), false,   \
                    kBf16)                                                     \
      ->Apply(apply);                                                          \
  BENCHMARK_CAPTURE(BM_Transfer, arch##_fwd_bwd_bf16, std::string(#arch),      \
                    true, kBf16)                                               \
      ->Apply(apply)

CXR_BENCH_ARCH(mobilenetv2, configs);
CXR_BENCH_ARCH(resnet50v2, configs);
CXR_BENCH_ARCH(baseline, baseline_configs);

// Fine-tuning with the earliest MobileNetV2 blocks frozen (cxr train
// --unfreeze-from): from block 3 (the 112 and 56 px stages frozen) and from
// block 6 (up to the 28 px stage).
void frozen_configs(benchmark::internal::Benchmark* b) {
  b->Args({224});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}
BENCHMARK_CAPTURE(BM_Transfer,
                  mobilenetv2_fwd_bwd_from_block_3,
                  std::string("mobilenetv2"),
                  true,
                  kFp32,
                  std::string("block_3_expand"))
    ->Apply(frozen_configs);
BENCHMARK_CAPTURE(BM_Transfer,
                  mobilenetv2_fwd_bwd_from_block_3_bf16,
                  std::string("mobilenetv2"),
                  true,
                  kBf16,
                  std::string("block_3_expand"))
    ->Apply(frozen_configs);
BENCHMARK_CAPTURE(BM_Transfer,
                  mobilenetv2_fwd_bwd_from_block_6,
                  std::string("mobilenetv2"),
                  true,
                  kFp32,
                  std::string("block_6_expand"))
    ->Apply(frozen_configs);
BENCHMARK_CAPTURE(BM_Transfer,
                  mobilenetv2_fwd_bwd_from_block_6_bf16,
                  std::string("mobilenetv2"),
                  true,
                  kBf16,
                  std::string("block_6_expand"))
    ->Apply(frozen_configs);

}  // namespace

int main(int argc, char** argv) {
  return cxr::bench::run_benchmarks(argc, argv);
}
