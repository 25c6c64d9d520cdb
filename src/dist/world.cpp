// What the two builds of the dist stage share: the checks on torchrun's
// environment and the process-wide context (world(), init(), SoloScope).
// context.cpp (c10d) and unavailable.cpp (no Gloo headers) each define only
// Context itself; CMakeLists.txt compiles this file with either.
#include <map>

#include "cxr/dist/dist.h"
#include "local.h"

namespace cxr::dist {

void Env::validate() const {
  if (world_size < 1) {
    throw ConfigError("WORLD_SIZE must be >= 1 (it is " +
                      std::to_string(world_size) + ")");
  }
  if (rank < 0 || rank >= world_size) {
    throw ConfigError("RANK " + std::to_string(rank) + " is outside 0.." +
                      std::to_string(world_size - 1) + " (WORLD_SIZE " +
                      std::to_string(world_size) + ")");
  }
  if (local_rank < 0) throw ConfigError("LOCAL_RANK must be >= 0");
  if (master_port < 1 || master_port > 65535) {
    throw ConfigError("MASTER_PORT (--master-port) " +
                      std::to_string(master_port) +
                      " is not a port (1..65535)");
  }
  if (master_addr.empty()) {
    throw ConfigError(
        "MASTER_ADDR (--master-addr) is empty: give rank 0's "
        "host name or address");
  }
  if (!(timeout_s > 0)) {
    throw ConfigError("--dist-timeout must be > 0 seconds");
  }
}

int64_t local_add(const std::string& key, int64_t delta) {
  // One process: a local counter keeps the store counter's contract.
  static std::map<std::string, int64_t> counters;
  return counters[key] += delta;
}

namespace {
std::unique_ptr<Context>& current() {
  static std::unique_ptr<Context> ctx = std::make_unique<Context>();
  return ctx;
}
}  // namespace

Context& world() {
  return *current();
}

void init(const Env& env, const torch::Device& device) {
  env.validate();
  if (!env.distributed()) return;
  current() = std::make_unique<Context>(env, device);
}

void shutdown() {
  current() = std::make_unique<Context>();
}

SoloScope::SoloScope() : job_(std::move(current())) {
  current() = std::make_unique<Context>();
}
SoloScope::~SoloScope() {
  current() = std::move(job_);
}

}  // namespace cxr::dist
