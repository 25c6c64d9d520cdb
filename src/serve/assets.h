#pragma once
// The web page's files, embedded at build time (src/serve/embed_assets.cmake
// writes the definitions from src/serve/web).
#include <cstddef>

namespace cxr::serve {

struct WebAsset {
  const char* path;  ///< URL path, "/index.html"
  const char* mime;
  const unsigned char* data;
  size_t size;
};

extern const WebAsset kWebAssets[];
extern const size_t kWebAssetCount;

}  // namespace cxr::serve
