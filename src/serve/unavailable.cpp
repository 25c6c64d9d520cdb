// Built instead of server.cpp when cpp-httplib was not found at configure
// time: `cxr serve` then explains how to get it instead of failing to link.
#include "cxr/common/error.h"
#include "cxr/serve/server.h"

namespace cxr::serve {

struct Server::Impl {};

namespace {

[[noreturn]] void unavailable() {
  throw ConfigError(
      "this cxr was built without cpp-httplib, so it cannot serve; install "
      "it (Debian: apt install libcpp-httplib-dev), re-run cmake and rebuild");
}

}  // namespace

Server::Server(ServeOptions) {}
Server::~Server() = default;
int Server::bind() {
  unavailable();
}
void Server::run() {
  unavailable();
}
void Server::stop() {}
std::vector<std::string> Server::model_ids() const {
  return {};
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

}  // namespace cxr::serve
