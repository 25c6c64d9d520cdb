#include "cxr/train/run_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/infer/run_config.h"
#include "cxr/models/weights_file.h"
#include "cxr/version.h"

namespace fs = std::filesystem;

namespace cxr::train {
namespace {

constexpr const char* kFormat = infer::kRunFormat;

nlohmann::json epoch_json(const EpochRecord& r) {
  return {{"epoch", r.epoch},
          {"phase", r.phase},
          {"lr", r.lr},
          {"v",
           {r.train_loss, r.train_accuracy, r.train_precision, r.train_recall,
            r.val_loss, r.val_accuracy, r.val_precision, r.val_recall,
            r.val_auc, r.seconds}}};
}

double num(const nlohmann::json& v) {
  return v.is_number() ? v.get<double>() : NAN;
}

EpochRecord epoch_from(const nlohmann::json& j) {
  EpochRecord r;
  r.epoch = j.at("epoch").get<int>();
  r.phase = j.at("phase").get<std::string>();
  r.lr = j.at("lr").get<double>();
  const auto& v = j.at("v");
  r.train_loss = num(v[0]);
  r.train_accuracy = num(v[1]);
  r.train_precision = num(v[2]);
  r.train_recall = num(v[3]);
  r.val_loss = num(v[4]);
  r.val_accuracy = num(v[5]);
  r.val_precision = num(v[6]);
  r.val_recall = num(v[7]);
  r.val_auc = num(v[8]);
  r.seconds = num(v[9]);
  return r;
}

}  // namespace

std::string utc_now() {
  return infer::utc_now();
}

DirLock::DirLock(const std::string& dir) {
  ensure_dir(dir);
  const fs::path p = fs::path(dir) / kLockFile;
  fd_ = ::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    throw IoError("cannot create the lock file '" + p.string() + "': " +
                  std::strerror(errno) + "; check that the folder is writable");
  }
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    // The holder wrote its pid into the file when it took the lock.
    char buf[32] = {};
    const ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
    std::string pid = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) {
      pid.pop_back();
    }
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK) {
      throw IoError("'" + dir + "' is in use by another cxr process (pid " +
                    (pid.empty() ? std::string("unknown") : pid) +
                    "); wait for it or choose another --out");
    }
    throw IoError("cannot lock '" + p.string() + "': " + std::strerror(err));
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) !=
                                      static_cast<ssize_t>(pid.size())) {
    // The pid is only for the message of a second writer; the lock holds.
  }
}

void remove_if_only_lock(const std::string& dir) {
  std::error_code ec;
  bool only_lock = true;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    only_lock = only_lock && e.path().filename() == kLockFile;
  }
  if (!ec && only_lock) fs::remove_all(dir, ec);
}

DirLock::~DirLock() {
  // Closing drops the lock. The file stays: unlinking it would let a
  // second process lock a fresh file while a third still waits on this one.
  if (fd_ >= 0) ::close(fd_);
}

nlohmann::json RunMeta::to_json() const {
  nlohmann::json j = {
      {"format", kFormat},
      {"model", model.to_json()},
      {"train", train.to_json()},
      {"classes", {{"positive", positive}, {"negative", negative}}},
      {"threshold", {{"value", threshold}, {"rule", threshold_rule}}},
      {"data", data},
      {"result", result},
      {"cxr_version", cxr_version},
      {"created", created}};
  if (threshold_calibrated) {
    j["threshold"]["calibrated"] = *threshold_calibrated;
  }
  if (!calibration.is_null()) j["calibration"] = calibration;
  if (!ood.is_null()) j["ood"] = ood;
  return j;
}

RunMeta RunMeta::from_json(const nlohmann::json& j, const std::string& where) {
  if (j.value("format", std::string()) != kFormat) {
    throw ModelError("'" + where + "' is not a cxr run config (format '" +
                     j.value("format", std::string("?")) + "', expected '" +
                     kFormat + "')");
  }
  RunMeta m;
  try {
    m.model = models::ModelConfig::from_json(j.at("model"));
    m.train = TrainOptions::from_json(j.at("train"));
    m.positive = j.at("classes").at("positive").get<std::string>();
    m.negative = j.at("classes").at("negative").get<std::string>();
    m.threshold = j.at("threshold").at("value").get<double>();
    m.threshold_rule = j.at("threshold").value("rule", std::string());
    m.data = j.value("data", nlohmann::json::object());
    m.result = j.value("result", nlohmann::json::object());
    m.cxr_version = j.value("cxr_version", std::string());
    m.created = j.value("created", std::string());
    m.calibration = j.value("calibration", nlohmann::json());
    m.ood = j.value("ood", nlohmann::json());
    if (j.at("threshold").contains("calibrated")) {
      m.threshold_calibrated = j.at("threshold").at("calibrated").get<double>();
    }
  } catch (const nlohmann::json::exception& e) {
    throw ModelError("'" + where + "' is incomplete (" + e.what() +
                     "); re-run cxr train to recreate it");
  }
  return m;
}

void save_run(const std::string& dir,
              models::ClassifierImpl& model,
              const RunMeta& meta) {
  ensure_dir(dir);
  // Data-only weights (safetensors layout, models/weights_file.h): run
  // folders can be exchanged without trusting LibTorch's archive reader.
  // The input size the weights were trained at goes with them: global
  // pooling makes the tensor shapes of a 48 px and a 32 px model the same,
  // so infer's loader checks it against config.json.
  models::save_module_weights(
      (fs::path(dir) / models::kWeightsFile).string(), model,
      {{infer::kInputSizeKey, std::to_string(meta.model.input_size)}});
  // A model.pt left by an older cxr in this folder would be stale: the
  // loaders prefer model.safetensors, but other tools would not know.
  std::error_code ec;
  fs::remove(fs::path(dir) / "model.pt", ec);
  RunMeta m = meta;
  if (m.cxr_version.empty()) m.cxr_version = kVersion;
  if (m.created.empty()) m.created = utc_now();
  write_json_atomic(fs::path(dir) / "config.json", m.to_json());
}

LoadedRun load_run(const std::string& dir, const torch::Device& device) {
  // One reader of run folders: infer's (weights checked against the config).
  const infer::RunConfig cfg = infer::read_run_config(dir);
  LoadedRun run;
  run.dir = dir;
  const fs::path path = fs::path(dir) / "config.json";
  run.meta = RunMeta::from_json(read_json(path), path.string());
  run.model = infer::load_model(dir, cfg.model, device);
  return run;
}

void save_resume_state(const std::string& dir,
                       models::ClassifierImpl& model,
                       const TrainState& st,
                       const std::vector<torch::Tensor>& best_state) {
  ensure_dir(dir);
  write_file_atomic(fs::path(dir) / "state.pt", [&](const fs::path& tmp) {
    torch::serialize::OutputArchive ar, model_ar, opt_ar;
    model.save(model_ar);
    ar.write("model", model_ar);
    st.optimizer->save(opt_ar);
    std::ostringstream opt_bytes;
    opt_ar.save_to(opt_bytes);
    ar.write("optimizer", c10::IValue(opt_bytes.str()));
    for (size_t i = 0; i < best_state.size(); ++i) {
      ar.write("best_" + std::to_string(i), best_state[i].to(torch::kCPU));
    }
    nlohmann::json h = nlohmann::json::array();
    for (const auto& r : st.result->history) h.push_back(epoch_json(r));
    nlohmann::json j = {
        {"phase_index", st.phase_index},
        {"epoch_in_phase", st.epoch_in_phase},
        {"bad_epochs", st.bad_epochs},
        {"lr", st.lr},
        {"best_count", best_state.size()},
        {"best_epoch", st.result->best_epoch},
        {"best_val_loss", std::isnan(st.result->best_val_loss)
                              ? nlohmann::json(nullptr)
                              : nlohmann::json(st.result->best_val_loss)},
        {"seconds", st.result->seconds},
        {"images_seen", st.result->images_seen},
        {"history", h}};
    ar.write("state", c10::IValue(j.dump()));
    ar.save_to(tmp.string());
  });
}

bool load_resume_state(const std::string& dir,
                       models::ClassifierImpl& model,
                       ResumeState* out) {
  const fs::path p = fs::path(dir) / "state.pt";
  if (!fs::exists(p)) return false;
  try {
    torch::serialize::InputArchive ar, model_ar;
    ar.load_from(p.string(), torch::kCPU);
    ar.read("model", model_ar);
    model.load(model_ar);
    c10::IValue opt_bytes, state;
    ar.read("optimizer", opt_bytes);
    out->optimizer_archive = opt_bytes.toStringRef();
    ar.read("state", state);
    auto j = nlohmann::json::parse(state.toStringRef());
    out->phase_index = j.at("phase_index").get<int>();
    out->epoch_in_phase = j.at("epoch_in_phase").get<int>();
    out->bad_epochs = j.at("bad_epochs").get<int>();
    out->lr = j.at("lr").get<double>();
    out->result.best_epoch = j.at("best_epoch").get<int>();
    out->result.best_val_loss = num(j.at("best_val_loss"));
    out->result.seconds = j.at("seconds").get<double>();
    out->result.images_seen = j.at("images_seen").get<int64_t>();
    for (const auto& r : j.at("history")) {
      out->result.history.push_back(epoch_from(r));
    }
    const auto nbest = j.at("best_count").get<size_t>();
    out->best_state.clear();
    for (size_t i = 0; i < nbest; ++i) {
      torch::Tensor t;
      ar.read("best_" + std::to_string(i), t);
      out->best_state.push_back(t);
    }
  } catch (const c10::Error& e) {
    std::string why = e.what_without_backtrace();
    throw ModelError("'" + p.string() + "' is corrupt (" +
                     why.substr(0, why.find('\n')) +
                     "); delete it to start the run afresh");
  } catch (const nlohmann::json::exception& e) {
    throw ModelError("'" + p.string() + "' is corrupt (" + e.what() +
                     "); delete it to start the run afresh");
  }
  return true;
}

void remove_resume_state(const std::string& dir) {
  std::error_code ec;
  fs::remove(fs::path(dir) / "state.pt", ec);
}

}  // namespace cxr::train
