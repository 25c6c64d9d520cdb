#pragma once
/// Sharded inference for `cxr predict` and `cxr evaluate` with --nproc
/// (docs/distributed.md): each rank scores a contiguous run of whole
/// batches, rank 0 gathers the rows back in input order. Internal to
/// src/evaluate.
#include <cstdint>
#include <utility>
#include <vector>

#include "cxr/dist/dist.h"
#include "cxr/infer/predictor.h"

namespace cxr::evaluate::detail {

/// [begin, end) of rank `rank`'s items among n, cut at multiples of `batch`
/// so every rank's batches hold the same images as a 1-rank run's: the
/// float rounding of a batched forward pass (OpenBLAS's GEMM blocking)
/// depends on the batch, and whole batches keep the outputs bit-identical.
std::pair<int64_t, int64_t> batch_shard(int64_t n,
                                        int64_t batch,
                                        int rank,
                                        int world);

/// One line on stderr per rank of a distributed job: which part it scores
/// ("cxr predict: rank 1 of 2 scores files 13-24 of 24").
void say_shard(const char* command,
               const char* what,
               const dist::Context& ctx,
               int64_t begin,
               int64_t end,
               int64_t n);

/// Every rank's predictions, in rank order (so in input order for
/// contiguous shards); on every rank. The Grad-CAM maps are not carried.
std::vector<infer::Prediction> gather_predictions(
    dist::Context& ctx, const std::vector<infer::Prediction>& local);

}  // namespace cxr::evaluate::detail
