#pragma once
// Helpers shared by the test suites: temp folders and tiny images.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <string>

#include "cxr/data/dataset.h"
#include "cxr/models/classifier.h"
#include "cxr/train/run.h"
#include "cxr/train/trainer.h"

namespace cxr::testing {

/// A fresh folder under the system temp dir, removed at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& p) const {
    return path_ / p;
  }

 private:
  std::filesystem::path path_;
};

/// Seeds torch before each test.
class SeededTest : public ::testing::Test {
 protected:
  void SetUp() override { torch::manual_seed(0); }
};

/// Writes bytes to a file (creating parent folders).
void write_bytes(const std::filesystem::path& p, const std::string& bytes);

/// Whether `part` occurs in `text`.
inline bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

/// The whole file as bytes ("" when it cannot be read).
std::string read_text(const std::filesystem::path& p);

/// How often `part` occurs in `text` (overlapping occurrences count).
int count_of(const std::string& text, const std::string& part);

/// Runs a shell command, returns its exit status; output goes to `out`.
int run_command(const std::string& cmd, std::string* out = nullptr);

/// Path of ../shared as configured at build time ("" in unit tests).
std::string shared_dir();

/// A tiny two-class task: n images [n,1,size,size] uint8 of noise in
/// [0, 0.4]; odd indices are positive and carry a bright square at
/// rows/cols 2..7. Seeded.
cxr::data::ImageSet synthetic(int64_t n, uint64_t seed, int size = 16);

/// A 2-block baseline config (4, 8 filters) for 16 px inputs.
cxr::models::ModelConfig tiny_config();

/// Training options that learn synthetic() with tiny_config() in a second:
/// 6 epochs, batch 8, lr 1e-2, no early stopping, no progress bar.
cxr::train::TrainOptions tiny_train_options();

/// A tiny split dataset (train/val/test x COVID/Normal, 6 PNGs each) of
/// 12x12 noise images; COVID ones carry a bright top-left square.
void make_tiny_dataset(const std::filesystem::path& root);

/// Run options for a 2-epoch 16 px baseline (4, 8 filters, batch 6) on
/// DIR/data (see make_tiny_dataset) into DIR/OUT, on the CPU, quiet.
cxr::train::RunOptions tiny_run_options(const std::filesystem::path& dir,
                                        const std::string& out);

/// The config of a hand-built test model: arch "hand", `size` px inputs.
cxr::models::ModelConfig hand_config(int size = 32);

/// Which quadrant a QuadrantModel reads, and how its logit is scaled.
struct QuadrantOptions {
  int size = 32;
  bool top_right = true;  ///< else top-left
  double scale = 1.0, offset = -0.1;
};

/// A hand-built model with known Grad-CAM answers (Grad-CAM and trust
/// tests). Two fixed 3x3 edge filters: channel 0 answers vertical stripes
/// (change along x), channel 1 horizontal stripes (change along y). The
/// tapped "features" layer (the default tap; "conv" is tapped too) is
/// relu(conv) average-pooled 2x2; the logit is scale * (the mean of channel
/// 0 over one quadrant of the features) + offset. So the logit depends only
/// on that quadrant of the image (top-right by default, so that a
/// transposed map would be caught).
class QuadrantModelImpl : public cxr::models::ClassifierImpl {
 public:
  explicit QuadrantModelImpl(QuadrantOptions options = {});
  torch::Tensor forward_tapped(const torch::Tensor& x,
                               cxr::models::Tap* tap) override;
  std::vector<std::string> tap_names() const override {
    return {"conv", "features"};
  }
  std::string default_tap() const override { return "features"; }

 private:
  QuadrantOptions options_;
  torch::nn::Conv2d conv_{nullptr};
};

/// The message of the E that `fn` throws, or "(no error)".
template <typename E>
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace cxr::testing
