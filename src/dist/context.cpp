// c10d behind cxr::dist::Context: the TCPStore rendezvous, the process group
// and bounded collectives. c10d's own errors (long, multi-line, with C++
// frames) become one DistError/ConfigError line that names the address or
// the operation and says what to check.
#include <torch/csrc/utils/tensor_flatten.h>
#include <torch/version.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <algorithm>
#include <cstring>
#include <map>
#include <sstream>

#include "cxr/dist/dist.h"
#include "local.h"

namespace cxr::dist {
namespace {

// PyTorch 2 moved the collectives from ProcessGroup to Backend; the
// concrete Gloo/NCCL groups keep their names and constructors.
#if TORCH_VERSION_MAJOR >= 2
using Group = c10d::Backend;
#else
using Group = c10d::ProcessGroup;
#endif

std::string first_line(const std::string& s) {
  auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

std::string what_of(const std::exception& e) {
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) {
    return first_line(c->what_without_backtrace());
  }
  return first_line(e.what());
}

bool contains(const std::string& s, const char* part) {
  return s.find(part) != std::string::npos;
}

std::string seconds_text(double s) {
  std::ostringstream o;
  o << s << " s";
  return o.str();
}

bool is_loopback(const std::string& addr) {
  return addr == "127.0.0.1" || addr == "localhost" || addr == "::1" ||
         addr.rfind("127.", 0) == 0;
}

}  // namespace

struct Context::Impl {
  c10::intrusive_ptr<c10d::Store> store;  // counters and small values
  c10::intrusive_ptr<Group> group;
  std::string backend = "gloo";
  std::chrono::milliseconds timeout{300000};
  torch::Device device = torch::kCPU;

  // Runs one collective; a peer that died or timed out becomes one line.
  template <class F>
  void run(const char* what, const Env& env, F&& f) {
    try {
      auto work = f();
      work->wait();
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      throw DistError("rank " + std::to_string(env.rank) + ": " + what +
                      " failed (another rank exited or did not answer "
                      "within --dist-timeout " +
                      seconds_text(env.timeout_s) + "): " + what_of(e));
    }
  }
  // Every rank's `t` (the same shape everywhere), in rank order.
  std::vector<torch::Tensor> gather_same(const torch::Tensor& t,
                                         const Env& env) {
    std::vector<torch::Tensor> in = {t};
    std::vector<std::vector<torch::Tensor>> out(1);
    for (int r = 0; r < env.world_size; ++r) {
      out[0].push_back(torch::empty_like(t));
    }
    run("all-gather", env, [&] { return group->allgather(out, in); });
    return out[0];
  }
  template <class F>
  auto store_op(const std::string& what, const Env& env, F&& f)
      -> decltype(f()) {
    try {
      return f();
    } catch (const std::exception& e) {
      throw DistError("rank " + std::to_string(env.rank) + ": " + what +
                      " through the store at " + env.master_addr + ":" +
                      std::to_string(env.master_port) +
                      " failed (rank 0 exited or a rank did not arrive "
                      "within --dist-timeout " +
                      seconds_text(env.timeout_s) + "): " + what_of(e));
    }
  }
};

Context::Context() = default;
Context::~Context() = default;

Context::Context(const Env& env, const torch::Device& device) : env_(env) {
  env.validate();
  if (!env.distributed()) return;
#if defined(CXR_QUIET_GLOG) && defined(C10_USE_GLOG)
  // c10d logs each socket error through glog before it throws (several
  // lines, "Logging before InitGoogleLogging()"); the DistError line below
  // carries the same text, so only glog's fatal messages remain.
  FLAGS_minloglevel = std::max(FLAGS_minloglevel, 3);
#endif
  impl_ = std::make_unique<Impl>();
  impl_->device = device;
  impl_->timeout = std::chrono::milliseconds(
      static_cast<int64_t>(std::max(1.0, env.timeout_s * 1000.0)));
  const std::string where =
      env.master_addr + ":" + std::to_string(env.master_port);

  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(env.master_port);
  so.isServer = env.rank == 0;
  so.numWorkers = static_cast<std::size_t>(env.world_size);
  so.waitWorkers = true;  // the constructor returns when every rank is in
  so.timeout = impl_->timeout;
  c10::intrusive_ptr<c10d::Store> tcp;
  try {
    tcp = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
  } catch (const std::exception& e) {
    const std::string w = what_of(e);
    if (env.rank == 0 &&
        (contains(w, "in use") || contains(w, "failed to listen") ||
         contains(w, "bind"))) {
      throw ConfigError("rank 0 cannot listen on " + where +
                        " (MASTER_ADDR:MASTER_PORT): the port is in use or "
                        "the address is not this host's; choose another "
                        "--master-port (or leave it out for a local run) (" +
                        w + ")");
    }
    if (contains(w, "waiting for clients") || contains(w, "clients joined")) {
      throw DistError("rendezvous at " + where + ": not every one of the " +
                      std::to_string(env.world_size) +
                      " ranks arrived within --dist-timeout " +
                      seconds_text(env.timeout_s) +
                      " (a rank failed to start, or WORLD_SIZE/--nnodes is "
                      "larger than the job) (" +
                      w + ")");
    }
    throw DistError("rank " + std::to_string(env.rank) +
                    " cannot reach the master at " + where +
                    " (MASTER_ADDR:MASTER_PORT) within --dist-timeout " +
                    seconds_text(env.timeout_s) +
                    ": check that rank 0 runs and that the address and port "
                    "are right and open (" +
                    w + ")");
  }
  impl_->store = c10::make_intrusive<c10d::PrefixStore>("cxr/", tcp);
  auto group_store = c10::make_intrusive<c10d::PrefixStore>("pg/", tcp);

  try {
#ifdef USE_C10D_NCCL
    // NCCL needs a GPU per rank ("Duplicate GPU detected"): when a node runs
    // more local ranks than it has GPUs, they share devices and use Gloo,
    // whose collectives take CUDA tensors through host copies. (Nodes with
    // different GPU counts could choose differently; their groups then fail
    // to meet and the job stops at --dist-timeout with exit 5.)
    if (device.is_cuda() && static_cast<size_t>(env.local_world_size) <=
                                torch::cuda::device_count()) {
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = impl_->timeout;
      impl_->group = c10::make_intrusive<c10d::ProcessGroupNCCL>(
          group_store, env.rank, env.world_size, opts);
      impl_->backend = "nccl";
    }
#endif
    if (!impl_->group) {
      auto opts = c10d::ProcessGroupGloo::Options::create(impl_->timeout);
      if (!env.gloo_ifname.empty()) {
        opts->devices.push_back(
            c10d::ProcessGroupGloo::createDeviceForInterface(env.gloo_ifname));
      } else if (is_loopback(env.master_addr)) {
        // A local job: peers talk over loopback, never an outside address.
        opts->devices.push_back(
            c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      opts->threads = 2;
      impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(
          group_store, env.rank, env.world_size, opts);
      impl_->backend = "gloo";
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw DistError("rank " + std::to_string(env.rank) + ": connecting the " +
                    std::to_string(env.world_size) +
                    " ranks (process group) failed within --dist-timeout " +
                    seconds_text(env.timeout_s) +
                    " (a rank exited, or a firewall blocks the ranks' ports; "
                    "GLOO_SOCKET_IFNAME picks the interface): " +
                    what_of(e));
  }
}

std::string Context::backend() const {
  return impl_ ? impl_->backend : "none";
}

void Context::all_reduce(const std::vector<torch::Tensor>& tensors,
                         bool average,
                         int64_t bucket_bytes) {
  if (!distributed() || tensors.empty()) return;
  // Buckets per dtype, in the given order, each under bucket_bytes (a
  // larger tensor is a bucket of its own).
  std::map<c10::ScalarType, std::vector<std::vector<torch::Tensor>>> by_type;
  std::map<c10::ScalarType, int64_t> filled;
  for (const auto& t : tensors) {
    if (!t.defined() || t.numel() == 0) continue;
    auto& buckets = by_type[t.scalar_type()];
    int64_t& bytes = filled[t.scalar_type()];
    const int64_t tb = t.numel() * static_cast<int64_t>(t.element_size());
    if (buckets.empty() || bytes + tb > bucket_bytes) {
      buckets.emplace_back();
      bytes = 0;
    }
    buckets.back().push_back(t);
    bytes += tb;
  }
  struct Pending {
    std::vector<torch::Tensor> members;
    std::vector<torch::Tensor> flat;  // one tensor: the collective's list
    c10::intrusive_ptr<c10d::Work> work;
  };
  std::vector<Pending> pending;
  try {
    for (auto& [type, buckets] : by_type) {
      for (auto& members : buckets) {
        Pending p;
        p.members = members;
        p.flat = {torch::utils::flatten_dense_tensors(members)};
        p.work = impl_->group->allreduce(p.flat);
        pending.push_back(std::move(p));
      }
    }
    for (auto& p : pending) p.work->wait();
  } catch (const std::exception& e) {
    throw DistError("rank " + std::to_string(rank()) +
                    ": all-reduce failed (another rank exited or did not "
                    "answer within --dist-timeout " +
                    seconds_text(env_.timeout_s) + "): " + what_of(e));
  }
  torch::NoGradGuard no_grad;
  for (auto& p : pending) {
    auto flat = p.flat[0];
    if (average) flat.div_(static_cast<double>(world_size()));
    auto parts = torch::utils::unflatten_dense_tensors(flat, p.members);
    for (size_t i = 0; i < parts.size(); ++i) p.members[i].copy_(parts[i]);
  }
}

void Context::average_gradients(const std::vector<torch::Tensor>& params) {
  if (!distributed()) return;
  std::vector<torch::Tensor> grads;
  grads.reserve(params.size());
  for (const auto& p : params) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  all_reduce(grads, /*average=*/true);
}

void Context::broadcast(const std::vector<torch::Tensor>& tensors) {
  if (!distributed() || tensors.empty()) return;
  torch::NoGradGuard no_grad;
  for (const auto& t : tensors) {
    if (!t.defined() || t.numel() == 0) continue;
    // The collective writes its (contiguous) list in place.
    std::vector<torch::Tensor> list = {t.is_contiguous() ? t : t.contiguous()};
    c10d::BroadcastOptions opts;
    opts.rootRank = 0;
    impl_->run("broadcast", env_,
               [&] { return impl_->group->broadcast(list, opts); });
    if (!list[0].is_same(t)) t.copy_(list[0]);
  }
}

torch::Tensor Context::all_gather_cat(const torch::Tensor& local) {
  if (!distributed()) return local;
  auto x = local.contiguous();
  // First dimensions may differ: gather the sizes, pad to the largest.
  auto n = torch::tensor({x.dim() ? x.size(0) : int64_t{1}}, torch::kLong);
  int64_t most = 0;
  std::vector<int64_t> sizes;
  for (const auto& t : impl_->gather_same(n, env_)) {
    sizes.push_back(t.item<int64_t>());
    most = std::max(most, sizes.back());
  }
  if (x.dim() == 0) x = x.reshape({1});
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape[0] = most;
  auto padded = torch::zeros(shape, x.options());
  if (x.size(0) > 0) padded.slice(0, 0, x.size(0)).copy_(x);
  const auto out = impl_->gather_same(padded, env_);
  std::vector<torch::Tensor> parts;
  for (size_t r = 0; r < out.size(); ++r) {
    parts.push_back(out[r].slice(0, 0, sizes[r]));
  }
  return torch::cat(parts, 0);
}

std::vector<std::string> Context::all_gather(const std::string& local) {
  if (!distributed()) return {local};
  auto bytes =
      torch::empty({static_cast<int64_t>(local.size())}, torch::kUInt8);
  if (!local.empty()) {
    std::memcpy(bytes.data_ptr<uint8_t>(), local.data(), local.size());
  }
  // Rank order and each rank's length: gather the lengths first.
  auto len = torch::tensor({static_cast<int64_t>(local.size())}, torch::kLong);
  const auto lens = impl_->gather_same(len, env_);
  auto all = all_gather_cat(bytes);
  std::vector<std::string> result;
  int64_t at = 0;
  const auto* p = reinterpret_cast<const char*>(all.data_ptr<uint8_t>());
  for (const auto& l : lens) {
    const int64_t k = l.item<int64_t>();
    result.emplace_back(p + at, p + at + k);
    at += k;
  }
  return result;
}

void Context::barrier() {
  if (!distributed()) return;
  impl_->run("barrier", env_, [&] { return impl_->group->barrier(); });
}

int64_t Context::add(const std::string& key, int64_t delta) {
  if (!distributed()) return local_add(key, delta);
  return impl_->store_op("counter '" + key + "'", env_,
                         [&] { return impl_->store->add(key, delta); });
}

void Context::store_set(const std::string& key, const std::string& value) {
  if (!distributed()) {
    throw ConfigError("dist: store_set needs a distributed job");
  }
  impl_->store_op("set '" + key + "'", env_, [&] {
    impl_->store->set(key, std::vector<uint8_t>(value.begin(), value.end()));
  });
}

std::string Context::store_get(const std::string& key) {
  if (!distributed()) {
    throw ConfigError("dist: store_get needs a distributed job");
  }
  auto v = impl_->store_op("get '" + key + "'", env_,
                           [&] { return impl_->store->get(key); });
  return std::string(v.begin(), v.end());
}

}  // namespace cxr::dist
