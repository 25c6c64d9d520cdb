#include <map>

#include "cxr/data/dataset.h"

namespace cxr::data {

std::vector<SkippedImage> skipped_images(const Dataset& ds) {
  std::map<std::string, Split> split_of;
  for (const auto& s : ds.index.samples) split_of[s.path] = s.split;
  std::vector<SkippedImage> out;
  for (const auto& b : ds.skipped) {
    const auto it = split_of.find(b.path);
    out.push_back({b.path, b.reason,
                   it == split_of.end() ? std::string()
                                        : std::string(split_name(it->second))});
  }
  return out;
}

}  // namespace cxr::data
