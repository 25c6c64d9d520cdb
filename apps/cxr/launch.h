#pragma once
/// The distributed launcher of the commands that scale out
/// (docs/distributed.md), with torchrun's contract: `--nproc N` starts N local
/// workers (the same command, re-executed with RANK WORLD_SIZE LOCAL_RANK
/// MASTER_ADDR MASTER_PORT set); `--nnodes M --node-rank K --master-addr
/// --master-port` run it on each of M nodes; a scheduler (Slurm, Kubernetes,
/// torchrun) may instead start every worker itself with that environment.
#include <CLI/CLI.hpp>
#include <optional>
#include <string>

namespace cxr::cli {

/// The launcher's flags (add_dist_flags). Rank r of node k is k * nproc + r
/// in a world of nproc * nnodes, so every node must be given the same job
/// flags; only --node-rank differs from node to node.
struct DistFlags {
  // The job: the same on every node.
  int nproc = 1;
  int nnodes = 1;
  /// Unset: 127.0.0.1 on one node (needed on many).
  std::optional<std::string> master_addr;
  /// Unset: a free port on one node, 29500 on many.
  std::optional<int> master_port;
  // This node's place in the job: the one flag that differs between nodes.
  int node_rank = 0;
  // Each rank's own patience: how long it waits for the others (the
  // rendezvous, each collective) before it fails.
  double timeout_s = 300;
};
void add_dist_flags(CLI::App& cmd, DistFlags& flags);

/// Call first in the command's callback. As the launcher (N * M > 1, not a
/// worker): starts this node's workers, forwards their output, waits for
/// all, and ends the process with their exit status (a failed worker stops
/// the others; its rank and code in one error line). As a worker (our
/// launcher's or a scheduler's environment): joins the job through
/// dist::init and returns; `device` becomes this worker's GPU (cuda:LOCAL_RANK)
/// when it names CUDA. Single process: returns at once.
void launch_or_join(const DistFlags& flags, std::string& device);

}  // namespace cxr::cli
