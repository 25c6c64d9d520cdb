// Deterministic sharding: every rank computes the same permutation from the
// seed alone, so no indices travel between ranks.
#include <algorithm>

#include "cxr/dist/dist.h"

namespace cxr::dist {

std::pair<int64_t, int64_t> contiguous_shard(int64_t n, int rank, int world) {
  if (world < 1 || rank < 0 || rank >= world || n < 0) {
    throw ConfigError("dist: shard " + std::to_string(rank) + " of " +
                      std::to_string(world) + " is not a shard");
  }
  // The first n % world shards hold one item more.
  const int64_t base = n / world, extra = n % world;
  const int64_t begin = rank * base + std::min<int64_t>(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

torch::Tensor permutation(int64_t n, uint64_t seed) {
  // A CPU generator of its own: the global RNG (dropout, augmentation) and
  // the device play no part, so the order is the same on every rank.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return torch::randperm(n, gen, torch::kLong);
}

std::pair<int64_t, int64_t> batch_slice(int64_t batch, int rank, int world) {
  if (world < 1 || rank < 0 || rank >= world || batch < 0) {
    throw ConfigError("dist: slice " + std::to_string(rank) + " of " +
                      std::to_string(world) + " is not a slice");
  }
  const int64_t per = batch / world;
  return {rank * per, (rank + 1) * per};
}

torch::Tensor shard_indices(int64_t n, uint64_t seed, int rank, int world) {
  const auto [b, e] = batch_slice(n, rank, world);
  return permutation(n, seed).slice(0, b, e);
}

}  // namespace cxr::dist
