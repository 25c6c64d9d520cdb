// cxr built without c10d's Gloo headers (CMakeLists.txt: a machine with no
// apt): a single process works unchanged, a distributed job says how to get
// the real dist stage (src/dist/context.cpp).
#include <map>

#include "cxr/dist/dist.h"

namespace cxr::dist {

void Env::validate() const {
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    throw ConfigError("RANK/WORLD_SIZE: rank " + std::to_string(rank) + " of " +
                      std::to_string(world_size) + " is not a rank");
  }
}

struct Context::Impl {};

Context::Context() = default;
Context::~Context() = default;

Context::Context(const Env& env, const torch::Device& /*device*/) : env_(env) {
  env.validate();
  if (env.distributed()) {
    throw ConfigError(
        "this cxr was built without distributed support (no Gloo headers "
        "when it was configured): apt-get install libgloo-dev and rebuild, "
        "or run without --nproc/--nnodes and with WORLD_SIZE unset");
  }
}

std::string Context::backend() const {
  return "none";
}
void Context::all_reduce(const std::vector<torch::Tensor>&, bool, int64_t) {}
void Context::average_gradients(const std::vector<torch::Tensor>&) {}
void Context::broadcast(const std::vector<torch::Tensor>&) {}
torch::Tensor Context::all_gather_cat(const torch::Tensor& local) {
  return local;
}
std::vector<std::string> Context::all_gather(const std::string& local) {
  return {local};
}
void Context::barrier() {}
int64_t Context::add(const std::string& key, int64_t delta) {
  static std::map<std::string, int64_t> counters;
  return counters[key] += delta;
}
void Context::store_set(const std::string&, const std::string&) {
  throw ConfigError("dist: store_set needs a distributed job");
}
std::string Context::store_get(const std::string&) {
  throw ConfigError("dist: store_get needs a distributed job");
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
  if (env.distributed()) current() = std::make_unique<Context>(env, device);
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
