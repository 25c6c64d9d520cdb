#include "test_util.h"

#include <unistd.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

#include "cxr/data/image_io.h"

namespace cxr::testing {

TempDir::TempDir() {
  std::random_device rd;
  path_ =
      std::filesystem::temp_directory_path() /
      ("cxr-test-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void write_bytes(const std::filesystem::path& p, const std::string& bytes) {
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary);
  out << bytes;
}

std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int count_of(const std::string& text, const std::string& part) {
  int n = 0;
  for (size_t p = text.find(part); p != std::string::npos;
       p = text.find(part, p + 1)) {
    ++n;
  }
  return n;
}

int run_command(const std::string& cmd, std::string* out) {
  std::string full = cmd + " 2>&1";
  FILE* pipe = ::popen(full.c_str(), "r");
  if (!pipe) return -1;
  std::array<char, 4096> buf{};
  std::string text;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) {
    text.append(buf.data(), n);
  }
  int status = ::pclose(pipe);
  if (out) *out = text;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

cxr::data::ImageSet synthetic(int64_t n, uint64_t seed, int size) {
  torch::manual_seed(seed);
  cxr::data::ImageSet s;
  auto imgs = torch::rand({n, 1, size, size}) * 0.4f;
  auto labels = (torch::arange(n) % 2).to(torch::kFloat32);
  for (int64_t i = 0; i < n; ++i) {
    if (labels[i].item<float>() > 0.5f) {
      imgs[i].slice(1, 2, 8).slice(2, 2, 8).add_(0.6f);
    }
  }
  s.images = (imgs.clamp(0, 1) * 255).round().to(torch::kUInt8);
  s.labels = labels;
  for (int64_t i = 0; i < n; ++i) s.paths.push_back("img" + std::to_string(i));
  return s;
}

cxr::train::RunOptions tiny_run_options(const std::filesystem::path& dir,
                                        const std::string& out) {
  cxr::train::RunOptions o;
  o.data.root = (dir / "data").string();
  o.data.size = 16;
  o.model.input_size = 16;
  o.model.filters = {4, 8};
  o.train.epochs = 2;
  o.train.batch_size = 6;
  o.train.patience = 0;
  o.train.progress = false;
  o.device = "cpu";
  o.out_dir = (dir / out).string();
  return o;
}

cxr::train::TrainOptions tiny_train_options() {
  cxr::train::TrainOptions o;
  o.epochs = 6;
  o.batch_size = 8;
  o.lr = 1e-2;
  o.patience = 0;
  o.progress = false;
  return o;
}

cxr::models::ModelConfig tiny_config() {
  cxr::models::ModelConfig c;
  c.input_size = 16;
  c.filters = {4, 8};
  c.dropout = 0.1;
  c.mean = 0.3;
  c.std = 0.2;
  return c;
}

std::string shared_dir() {
#ifdef CXR_SHARED_DIR
  return CXR_SHARED_DIR;
#else
  return "";
#endif
}

void make_tiny_dataset(const std::filesystem::path& root) {
  torch::manual_seed(1);
  int k = 0;
  for (const char* s : {"train", "val", "test"}) {
    for (const char* c : {"COVID", "Normal"}) {
      for (int i = 0; i < 6; ++i) {
        auto img = torch::rand({12, 12}) * 0.3f;
        if (c[0] == 'C') img.slice(0, 0, 6).slice(1, 0, 6).add_(0.6f);
        auto p = root / s / c / (std::to_string(k++) + ".png");
        std::filesystem::create_directories(p.parent_path());
        cxr::data::write_png(p.string(), img);
      }
    }
  }
}

cxr::models::ModelConfig hand_config(int size) {
  cxr::models::ModelConfig c;
  c.arch = "hand";
  c.input_size = size;
  return c;
}

QuadrantModelImpl::QuadrantModelImpl(QuadrantOptions options)
    : ClassifierImpl(hand_config(options.size)), options_(options) {
  namespace nn = torch::nn;
  conv_ =
      register_module("conv", nn::Conv2d(nn::Conv2dOptions(1, 2, 3)
                                             .padding(1)
                                             .padding_mode(torch::kReplicate)
                                             .bias(false)));
  torch::NoGradGuard no_grad;
  auto k = torch::zeros({2, 1, 3, 3});
  k[0][0][1] = torch::tensor({-1.0f, 2.0f, -1.0f});
  k[1][0].select(1, 1).copy_(torch::tensor({-1.0f, 2.0f, -1.0f}));
  conv_->weight.copy_(k);
}

torch::Tensor QuadrantModelImpl::forward_tapped(const torch::Tensor& x,
                                                cxr::models::Tap* tap) {
  check_tap(tap);
  auto c = conv_->forward(x);
  maybe_tap(tap, "conv", c);
  auto f = torch::avg_pool2d(torch::relu(c), 2);
  maybe_tap(tap, "features", f);
  const int64_t q = f.size(2) / 2;
  const int64_t x0 = options_.top_right ? q : 0;
  return options_.scale *
             f.select(1, 0).slice(1, 0, q).slice(2, x0, x0 + q).mean({1, 2}) +
         options_.offset;
}

}  // namespace cxr::testing
