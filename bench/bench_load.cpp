// Cold (decode every PNG) and warm (decoded cache) load of cxr-seed.
//   build/bench/bench_load [--benchmark_repetitions=3]
#include <benchmark/benchmark.h>

#include <filesystem>

#include "bench_main.h"
#include "cxr/common/runtime.h"
#include "cxr/data/dataset.h"

namespace {

namespace fs = std::filesystem;

std::string seed_root() {
  return std::string(CXR_SHARED_DIR) + "/data/cxr-seed";
}

cxr::data::DatasetOptions options(const std::string& cache) {
  cxr::data::DatasetOptions o;
  o.root = seed_root();
  o.size = 128;
  o.cache_dir = cache;
  return o;
}

void report(benchmark::State& state, int64_t images) {
  state.counters["images_per_s"] = benchmark::Counter(
      static_cast<double>(images) * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate);
}

void BM_ColdLoad(benchmark::State& state) {
  if (!fs::is_directory(seed_root())) {
    state.SkipWithError("../shared/data/cxr-seed is absent");
    return;
  }
  int64_t n = 0;
  for (auto _ : state) {
    auto ds = cxr::data::load_dataset(options(""));
    n = ds.split(cxr::data::Split::kTrain).size() +
        ds.split(cxr::data::Split::kVal).size() +
        ds.split(cxr::data::Split::kTest).size();
  }
  report(state, n);
}

void BM_WarmLoad(benchmark::State& state) {
  if (!fs::is_directory(seed_root())) {
    state.SkipWithError("../shared/data/cxr-seed is absent");
    return;
  }
  const auto cache = fs::temp_directory_path() / "cxr-bench-cache";
  cxr::data::load_dataset(options(cache.string()));  // populate
  int64_t n = 0;
  for (auto _ : state) {
    auto ds = cxr::data::load_dataset(options(cache.string()));
    if (ds.stats.decoded != 0) state.SkipWithError("cache was not used");
    n = ds.stats.from_cache;
  }
  report(state, n);
  fs::remove_all(cache);
}

BENCHMARK(BM_ColdLoad)->Unit(benchmark::kMillisecond)->Iterations(2);
BENCHMARK(BM_WarmLoad)->Unit(benchmark::kMillisecond)->Iterations(5);

}  // namespace

int main(int argc, char** argv) {
  return cxr::bench::run_benchmarks(argc, argv);
}
