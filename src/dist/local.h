#pragma once
// Internal to src/dist: what a single process does in place of the store.
#include <cstdint>
#include <string>

namespace cxr::dist {

/// Context::add without a job: a process-local counter (first call on a key
/// starts at 0), so code that claims work through add() runs unchanged.
int64_t local_add(const std::string& key, int64_t delta);

}  // namespace cxr::dist
