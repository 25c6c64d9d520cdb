// cxr built without c10d's Gloo headers (CMakeLists.txt: a machine with no
// apt): a single process works unchanged, a distributed job says how to get
// the real dist stage (src/dist/context.cpp). world.cpp holds what both
// builds share.
#include "cxr/dist/dist.h"
#include "local.h"

namespace cxr::dist {

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
  return local_add(key, delta);
}
void Context::store_set(const std::string&, const std::string&) {
  throw ConfigError("dist: store_set needs a distributed job");
}
std::string Context::store_get(const std::string&) {
  throw ConfigError("dist: store_get needs a distributed job");
}

}  // namespace cxr::dist
