#pragma once
/// Scale-out on PyTorch's distributed engine, c10d (docs/distributed.md):
/// a TCPStore rendezvous and a process group (Gloo on the CPU; NCCL for a
/// CUDA device in builds that have it). One Context per process, created
/// from torchrun's environment contract (MASTER_ADDR MASTER_PORT WORLD_SIZE
/// RANK LOCAL_RANK, read by the CLI into Env) or "single process" when
/// WORLD_SIZE is unset or 1, so every caller runs unchanged without dist:
/// the collectives of a single-process Context return at once.
///
/// Every wait is bounded by Env::timeout: a dead or stuck peer ends the
/// waiting ranks with one DistError line instead of a hang.
///
/// Only train, tune, evaluate/predict and the CLI include this header
/// (docs/architecture.md); nothing below them knows it.
#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cxr/common/error.h"

namespace cxr::dist {

/// A rank lost contact with the others: a peer exited or timed out, the
/// master is unreachable. Exit code 5 (I/O: the communication failed).
class DistError : public Error {
 public:
  explicit DistError(const std::string& what) : Error(what, ExitCode::kIo) {}
};

/// Where this process sits in the job: torchrun's variables, filled by the
/// CLI (the library reads no environment).
struct Env {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  int node_rank = 0;
  /// Rank 0 hosts the TCPStore here; every rank connects to it.
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  /// Rendezvous and every collective (seconds).
  double timeout_s = 300;
  /// Gloo's network interface (GLOO_SOCKET_IFNAME); "" = by address:
  /// loopback when the master is local, else this host's name.
  std::string gloo_ifname;

  bool distributed() const { return world_size > 1; }
  /// Throws ConfigError naming the variable at fault.
  void validate() const;
};

/// The process's place in a distributed job and its collectives.
class Context {
 public:
  /// Single process: rank 0 of 1; every collective is a no-op.
  Context();
  /// Joins the job (rendezvous at master_addr:master_port within
  /// timeout_s). Rank 0 hosts the store; a busy port is a ConfigError, an
  /// unreachable master or a missing peer a DistError naming the address.
  /// `device`: a CUDA device selects NCCL where built with it, else Gloo.
  explicit Context(const Env& env, const torch::Device& device = torch::kCPU);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  int rank() const { return env_.rank; }
  int world_size() const { return env_.world_size; }
  int local_rank() const { return env_.local_rank; }
  int node_rank() const { return env_.node_rank; }
  bool distributed() const { return env_.world_size > 1; }
  bool is_main() const { return env_.rank == 0; }
  const Env& env() const { return env_; }
  /// "gloo", "nccl" or "none" (single process).
  std::string backend() const;

  /// Sums `tensors` in place over all ranks, then divides by the world
  /// size when `average`. Tensors are flattened into buckets of about
  /// `bucket_bytes` per dtype (one collective per bucket, all in flight
  /// together), so many small gradients cost a few messages.
  void all_reduce(const std::vector<torch::Tensor>& tensors,
                  bool average = false,
                  int64_t bucket_bytes = 25 << 20);
  /// The gradients of `params` (those that have one) averaged over ranks:
  /// call after backward, before the optimizer step.
  void average_gradients(const std::vector<torch::Tensor>& params);
  /// Overwrites `tensors` with rank 0's values (same initial weights).
  void broadcast(const std::vector<torch::Tensor>& tensors);
  /// Every rank's `local` (any shape, same dtype everywhere; first
  /// dimensions may differ), concatenated in rank order along dim 0.
  torch::Tensor all_gather_cat(const torch::Tensor& local);
  /// Every rank's string, in rank order (results, small byte blobs).
  std::vector<std::string> all_gather(const std::string& local);
  /// Waits until every rank is here.
  void barrier();
  /// Atomic add on a store counter (first call on a key starts at 0);
  /// returns the new value: `add("trial", 1)` claims the next piece of
  /// work exactly once across ranks.
  int64_t add(const std::string& key, int64_t delta);
  /// Store access for small shared values (bounded by the timeout).
  void store_set(const std::string& key, const std::string& value);
  std::string store_get(const std::string& key);

 private:
  struct Impl;
  Env env_;
  std::unique_ptr<Impl> impl_;
};

/// The process-wide context (torch's default process group): single
/// process until init() replaces it. The CLI calls init() once per worker;
/// the library asks world().
Context& world();
/// Joins the job described by `env` and makes it world(); a single-process
/// env leaves world() as it is.
void init(const Env& env, const torch::Device& device = torch::kCPU);
/// Leaves the job (world() is single-process again).
void shutdown();

/// While alive, world() is single-process (rank 0 of 1) and the job's
/// context stays joined, reachable through job(): for work that each rank
/// does alone through code that asks world(), such as a distributed tune's
/// trials, each trained in one process exactly as a 1-rank run trains it.
/// Restores world() when it ends. Not nestable.
class SoloScope {
 public:
  SoloScope();
  ~SoloScope();
  SoloScope(const SoloScope&) = delete;
  SoloScope& operator=(const SoloScope&) = delete;
  Context& job() { return *job_; }

 private:
  std::unique_ptr<Context> job_;
};

/// [begin, end) of one rank's contiguous part of n items: every item in
/// exactly one shard, sizes differing by at most one, in rank order (for
/// sharded inference, whose results gather back in input order).
std::pair<int64_t, int64_t> contiguous_shard(int64_t n, int rank, int world);
/// A seeded permutation of 0..n-1 (int64), the same on every rank.
torch::Tensor permutation(int64_t n, uint64_t seed);
/// A rank's slice [begin, end) of a global batch of `batch` items: equal
/// sizes batch / world on every rank; the last batch % world items are
/// dropped (at most world - 1), the same ones on every rank.
std::pair<int64_t, int64_t> batch_slice(int64_t batch, int rank, int world);
/// Rank `rank`'s training shard of a seeded permutation of n: disjoint,
/// equal sizes n / world (the remainder of the permutation dropped).
torch::Tensor shard_indices(int64_t n, uint64_t seed, int rank, int world);

}  // namespace cxr::dist
