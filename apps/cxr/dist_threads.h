#pragma once
/// The CPU threads of a worker in a distributed job that runs one process
/// per task (tune's trials, predict's and evaluate's shards).
#include <algorithm>
#include <thread>

#include "cxr/dist/dist.h"

namespace cxr::cli {

/// --threads 0 ("all cores") in a worker: this node's cores shared among
/// its local ranks, so N workers on one machine do not each start a thread
/// per core (N-fold oversubscription). An explicit --threads is per worker.
inline void share_threads(int& threads) {
  const int local = dist::world().env().local_world_size;
  if (threads != 0 || local <= 1) return;
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  threads = std::max(1, cores / local);
}

}  // namespace cxr::cli
