#pragma once
// The main() of every benchmark program: the runtime set up as the cxr
// program sets it up, then Google Benchmark.
//   CXR_BENCH_THREADS=N        intra-op threads (else OMP_NUM_THREADS, else
//                              all hardware threads)
//   CXR_BENCH_DEFAULT_MALLOC=1 keep glibc's default malloc settings instead
//                              of cxr::configure_allocator's
#include <benchmark/benchmark.h>

#include <cstdlib>

#include "cxr/common/runtime.h"

namespace cxr::bench {

inline int run_benchmarks(int argc, char** argv) {
  if (!std::getenv("CXR_BENCH_DEFAULT_MALLOC")) cxr::configure_allocator();
  if (const char* t = std::getenv("CXR_BENCH_THREADS")) {
    cxr::configure_threads(std::atoi(t));
  } else if (!std::getenv("OMP_NUM_THREADS")) {
    cxr::configure_threads(0);
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace cxr::bench
