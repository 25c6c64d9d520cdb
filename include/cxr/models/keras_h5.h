#pragma once
/// Keras 2 HDF5 weight files (`model.save_weights("x.h5")` or a full-model
/// `model.save("x.h5")`) and the mapping of their layers onto torch modules.
///
/// File layout (the one Keras' `hdf5_format.save_weights_to_hdf5_group`
/// writes): the root group (or `/model_weights` in a full-model file) has a
/// string-array attribute `layer_names`, possibly split into `layer_names0`,
/// `layer_names1`, ... when it exceeds the 64 KiB attribute limit. Every layer
/// has a group whose attribute `weight_names` lists its weights in creation
/// order (e.g. `Conv1/kernel:0`), each a dataset at `<layer>/<weight_name>`.
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace cxr::models {

/// One weight of a Keras layer, in Keras layout (e.g. Conv2D kernel
/// [kh, kw, in, out]) as float32 on the CPU.
struct KerasWeight {
  std::string name;  ///< as in `weight_names`, e.g. "Conv1/kernel:0"
  torch::Tensor value;
};

/// The weights of one Keras layer, in `weight_names` order.
struct KerasLayerWeights {
  std::string layer;  ///< Keras layer name, e.g. "bn_Conv1"
  std::vector<KerasWeight> weights;
};

/// How long the HDF5 reader process may take before the file is refused.
inline constexpr double kKerasReadTimeout = 60;

/// Reads every layer named in `layer_names` that has weights, in file order
/// (weightless layers such as `Conv1_relu` are skipped). Any numeric dataset
/// type is converted to float32. Throws ModelError naming the file (and the
/// layer or dataset) when the file is missing, not HDF5 or not in this layout.
///
/// libhdf5 (1.10.8 on Debian 12) crashes and loops on some corrupt files, so
/// the file is parsed in a process of its own, the program cxr-keras-reader
/// (built with cxr and found beside the running program, or through
/// $CXR_KERAS_READER), which sends the weights back over a pipe: a crash, a
/// reader slower than `timeout_s`, or more data than 64 MiB plus 8 times the
/// file's size is a ModelError "weights file 'PATH': not a readable Keras
/// HDF5 weights file (the HDF5 reader crashed on it ...)"; a missing reader
/// program is a ModelError that says where it was looked for
/// (docs/reliability.md, "Fuzzing").
std::vector<KerasLayerWeights> read_keras_h5(
    const std::string& path, double timeout_s = kKerasReadTimeout);

/// The root `layer_names` of a Keras HDF5 file: every layer in model order,
/// weightless ones and the input included. Throws ModelError like
/// read_keras_h5 (in a child process too).
std::vector<std::string> read_keras_layer_names(
    const std::string& path, double timeout_s = kKerasReadTimeout);

/// Variants of the layout that exist in the wild; read_keras_h5 reads all.
struct KerasH5WriteOptions {
  /// Variable-length string attributes instead of the fixed-length ones
  /// h5py writes for Keras' numpy byte arrays.
  bool variable_length_strings = false;
  /// Put the layers under `/model_weights`, as a full-model `model.save`.
  bool model_weights_group = false;
};

/// Writes `layers` (layers without weights included, with an empty
/// `weight_names`) in the `save_weights` layout with float32 datasets,
/// atomically (temp file + rename). Attributes over HDF5's 64 KiB header
/// limit are split into `layer_names0`, `layer_names1`, ... as Keras does.
/// Used to export weights and by tests. Throws IoError naming the path.
void write_keras_h5(const std::string& path,
                    const std::vector<KerasLayerWeights>& layers,
                    const KerasH5WriteOptions& options = {});

/// What kind of Keras layer a torch module stands for; fixes the weight names
/// and the layout conversion.
enum class KerasKind {
  kConv2D,           ///< kernel [kh,kw,in,out] (+ bias [out]) -> Conv2d
  kDepthwiseConv2D,  ///< depthwise_kernel [kh,kw,C,1] (+ bias) -> Conv2d
                     ///< with groups = C, weight [C,1,kh,kw]
  kBatchNorm,        ///< gamma, beta, moving_mean, moving_variance ->
                     ///< weight, bias, running_mean, running_var
  kDense,            ///< kernel [in,out] (+ bias [out]) -> Linear
};

/// A torch module holding the weights of the Keras layer `name`.
struct KerasLayerRef {
  std::string name;
  KerasKind kind;
  /// Conv2d, BatchNorm2d or Linear, matching `kind`.
  std::shared_ptr<torch::nn::Module> module;
};

/// Converts the modules' current weights to Keras layout and names.
std::vector<KerasLayerWeights> to_keras_weights(
    const std::vector<KerasLayerRef>& refs);

/// Copies `file_layers` (read from `file`, used in messages) into `refs`.
/// Every ref must find its layer; every file layer must be a ref unless
/// listed in `ignored` (e.g. the ImageNet classifier when loading a
/// backbone). Weight names and shapes must match exactly. Validates
/// everything before touching the model, so a failed load leaves it
/// unchanged. Throws one ModelError naming the file, the layer and, for a
/// shape mismatch, both shapes.
void assign_keras_weights(const std::vector<KerasLayerRef>& refs,
                          const std::vector<KerasLayerWeights>& file_layers,
                          const std::string& file,
                          const std::vector<std::string>& ignored = {});

/// read_keras_h5 + assign_keras_weights.
void load_keras_h5(const std::vector<KerasLayerRef>& refs,
                   const std::string& path,
                   const std::vector<std::string>& ignored = {});

/// The size Keras reports in `model.summary()`: parameters plus the batch
/// norm moving statistics (which torch keeps as buffers), excluding
/// `num_batches_tracked`.
int64_t count_keras_parameters(torch::nn::Module& module);

}  // namespace cxr::models
