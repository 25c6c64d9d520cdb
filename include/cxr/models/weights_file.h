#pragma once
/// Data-only weights files in the safetensors layout
/// (https://github.com/huggingface/safetensors, followed exactly, so Python's
/// `safetensors.torch.load_file` and other outside tools read them):
///
///   8 bytes    N, unsigned little-endian: the header's length in bytes
///   N bytes    UTF-8 JSON object, padded with spaces to a multiple of 8:
///              {"NAME": {"dtype": "F32", "shape": [..], "data_offsets":
///              [BEGIN, END]}, ..., "__metadata__": {"KEY": "VALUE", ..}}
///   the rest   the tensors' bytes, little-endian, row-major; offsets are
///              relative to the first byte after the header
///
/// A run folder's weights are `model.safetensors` (docs/run-dir.md): unlike
/// LibTorch's archives (model.pt: a zip of pickles and TorchScript source
/// that `torch::jit::load` compiles), the file is read by the checked code
/// behind this header, so a hostile file is a ModelError, never a crash or
/// an allocation larger than the file (docs/reliability.md, "Third
/// campaign").
#include <torch/torch.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace cxr::models {

/// The weights file of a run folder written by this cxr.
inline constexpr const char* kWeightsFile = "model.safetensors";

/// Limits of the reader: a header larger than this, more tensors, or a
/// tensor of higher rank is refused (MobileNetV2's header is about 40 KB).
inline constexpr uint64_t kMaxWeightsHeaderBytes = 16u << 20;
inline constexpr size_t kMaxWeightsTensors = 100000;
inline constexpr size_t kMaxWeightsRank = 8;

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

struct TensorFile {
  /// The header's "__metadata__" (string to string; empty when absent).
  std::map<std::string, std::string> metadata;
  /// Every tensor, CPU and contiguous, in the order of their data.
  NamedTensors tensors;
};

/// Writes `tensors` (any device or layout; copied to the CPU, row-major) and
/// `metadata` atomically (temp file + rename). Names must be unique and not
/// "__metadata__". Throws IoError naming the path when it cannot be written,
/// ConfigError for a dtype safetensors has no name for.
void write_tensor_file(const std::string& path,
                       const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata);

/// Reads and checks a whole file: the header length against the file size
/// and kMaxWeightsHeaderBytes, the JSON (no duplicate keys, nothing but the
/// three fields per tensor, known dtypes, non-negative shapes), and the
/// offsets (each tensor's byte count, contiguous from 0 to the end of the
/// file without gaps or overlaps). Allocates at most the file's size.
/// Throws ModelError "'PATH' WHAT; FIX" (one line) on any violation.
TensorFile read_tensor_file(const std::string& path, const std::string& fix);

/// A module's parameters and buffers, with `metadata`, as write_tensor_file.
void save_module_weights(const std::string& path,
                         torch::nn::Module& module,
                         const std::map<std::string, std::string>& metadata);

/// Reads `path` into `module`'s parameters and buffers: the file must hold
/// exactly the module's tensors (a missing, extra or duplicate name, another
/// dtype or shape is a ModelError "'PATH' does not match MODEL_SOURCE:
/// tensor ...; FIX"). Everything is checked before the module is touched.
/// Returns the metadata.
std::map<std::string, std::string> load_module_weights(
    const std::string& path,
    torch::nn::Module& module,
    const std::string& fix,
    const std::string& model_source = "the model");

/// The safetensors name of a dtype ("F32", "I64", ...); "" for none.
std::string safetensors_dtype(torch::ScalarType t);

}  // namespace cxr::models
