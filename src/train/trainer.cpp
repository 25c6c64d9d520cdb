#include "cxr/train/trainer.h"

#include <cmath>
#include <iomanip>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/common/precision.h"
#include "cxr/common/progress.h"
#include "cxr/common/text.h"
#include "cxr/dist/dist.h"
#include "cxr/metrics/metrics.h"

namespace cxr::train {
namespace {

struct Counts {
  double loss_sum = 0;
  int64_t n = 0, tp = 0, fp = 0, tn = 0, fn = 0;
  void add(const torch::Tensor& logits,
           const torch::Tensor& labels,
           double loss_mean) {
    auto pred = (logits.detach() > 0).to(torch::kCPU);
    auto y = (labels.detach() > 0.5).to(torch::kCPU);
    const int64_t b = labels.size(0);
    const int64_t tp_b = (pred & y).sum().item<int64_t>();
    const int64_t p_b = pred.sum().item<int64_t>();
    const int64_t y_b = y.sum().item<int64_t>();
    tp += tp_b;
    fp += p_b - tp_b;
    fn += y_b - tp_b;
    tn += b - p_b - y_b + tp_b;
    loss_sum += loss_mean * static_cast<double>(b);
    n += b;
  }
  double loss() const { return n ? loss_sum / static_cast<double>(n) : NAN; }
  double accuracy() const {
    return n ? static_cast<double>(tp + tn) / static_cast<double>(n) : NAN;
  }
  double precision() const {
    return tp + fp ? static_cast<double>(tp) / static_cast<double>(tp + fp)
                   : NAN;
  }
  double recall() const {
    return tp + fn ? static_cast<double>(tp) / static_cast<double>(tp + fn)
                   : NAN;
  }
};

std::unique_ptr<torch::optim::Optimizer> make_optimizer(
    const TrainOptions& o, std::vector<torch::Tensor> params, double lr) {
  if (o.optimizer == "adam") {
    return std::make_unique<torch::optim::Adam>(
        params, torch::optim::AdamOptions(lr).weight_decay(o.weight_decay));
  }
  if (o.optimizer == "sgd") {
    return std::make_unique<torch::optim::SGD>(
        params, torch::optim::SGDOptions(lr)
                    .momentum(o.momentum)
                    .weight_decay(o.weight_decay));
  }
  if (o.optimizer == "rmsprop") {
    return std::make_unique<torch::optim::RMSprop>(
        params, torch::optim::RMSpropOptions(lr).weight_decay(o.weight_decay));
  }
  throw ConfigError("--optimizer " + o.optimizer +
                    ": use adam, sgd or rmsprop");
}

/// Fixed-point text for the progress lines ("nan" where a metric is
/// undefined, as the epoch lines have always shown it).
std::string fmt(double v, int p = 4) {
  return fixed(v, p, "nan");
}

/// Probabilities of `images` in input order. Distributed: each rank scores
/// its contiguous shard and all gather every score, so that validation
/// (and the early-stopping and learning-rate decisions made from it) is
/// identical on every rank.
torch::Tensor sharded_proba(models::ClassifierImpl& model,
                            const torch::Tensor& images,
                            const torch::Device& device,
                            int batch_size) {
  auto& ctx = dist::world();
  if (!ctx.distributed()) {
    return predict_proba(model, images, device, batch_size);
  }
  const auto [b, e] =
      dist::contiguous_shard(images.size(0), ctx.rank(), ctx.world_size());
  torch::Tensor mine =
      e > b ? predict_proba(model, images.slice(0, b, e), device, batch_size)
                  .to(torch::kCPU, torch::kFloat32)
            : torch::empty({0}, torch::kFloat32);
  return ctx.all_gather_cat(mine.contiguous());
}

/// Validation pass: loss and probabilities.
std::pair<double, torch::Tensor> evaluate_loss(models::ClassifierImpl& model,
                                               const data::ImageSet& set,
                                               const torch::Device& device,
                                               int batch_size) {
  torch::Tensor probs = sharded_proba(model, set.images, device, batch_size);
  auto p = probs.to(torch::kFloat64).clamp(1e-7, 1 - 1e-7);
  auto y = set.labels.to(torch::kFloat64);
  double loss = -(y * p.log() + (1 - y) * (1 - p).log()).mean().item<double>();
  return {loss, probs};
}

/// Cosine annealing from `base` to base/100 over `epochs` epochs, as the
/// learning rate of 0-based epoch `e`.
double cosine_lr(double base, int e, int epochs) {
  if (epochs <= 1) return base;
  const double lo = base / 100.0;
  const double t = static_cast<double>(e) / static_cast<double>(epochs - 1);
  return lo + 0.5 * (base - lo) * (1.0 + std::cos(std::acos(-1.0) * t));
}

struct Phase {
  std::string name;
  int epochs;
  double lr;
  bool backbone_trainable;
};

/// A pretrained transfer model trains its head with the backbone frozen,
/// then (with fine-tune epochs) everything; the baseline has one phase. A
/// transfer model from random initialisation has no features worth
/// protecting: freezing its backbone would train a head on random features,
/// so its first phase trains the whole network too.
std::vector<Phase> phases_of(const models::ClassifierImpl& model,
                             const TrainOptions& o) {
  std::vector<Phase> phases;
  if (models::is_transfer(model.config().arch)) {
    if (model.config().pretrained.empty()) {
      phases.push_back({"train", o.epochs, o.lr, true});
    } else {
      phases.push_back({"frozen", o.epochs, o.lr, false});
    }
    if (o.fine_tune_epochs > 0) {
      phases.push_back({"fine-tune", o.fine_tune_epochs, o.fine_tune_lr, true});
    }
  } else {
    phases.push_back({"train", o.epochs, o.lr, true});
  }
  return phases;
}

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& g : opt.param_groups()) g.options().set_lr(lr);
}

/// Where the loop is: what a checkpoint saves and a resume restores.
struct LoopState {
  FitResult result;
  std::vector<torch::Tensor> best_state;
  int start_phase = 0, start_epoch = 0, bad_epochs = 0;
  double resume_lr = 0;
};

LoopState initial_state(const ResumeState* resume) {
  LoopState s;
  if (resume) {
    s.result = resume->result;
    s.best_state = resume->best_state;
    s.start_phase = resume->phase_index;
    s.start_epoch = resume->epoch_in_phase;
    s.bad_epochs = resume->bad_epochs;
    s.resume_lr = resume->lr;
  }
  return s;
}

/// The phase's optimizer over the parameters it trains; in the phase a
/// resume starts in, with the saved optimizer state and learning rate.
std::unique_ptr<torch::optim::Optimizer> phase_optimizer(
    models::ClassifierImpl& model,
    const TrainOptions& o,
    const Phase& ph,
    bool transfer,
    const ResumeState* resume_here,
    double resume_lr,
    const torch::Device& device,
    double* lr) {
  if (transfer) {
    model.set_backbone_trainable(ph.backbone_trainable);
    if (ph.backbone_trainable && !o.unfreeze_from.empty()) {
      model.set_trainable_from(o.unfreeze_from);
    }
  }
  *lr = resume_here && resume_lr > 0 ? resume_lr : ph.lr;
  auto opt = make_optimizer(o, model.trainable_parameters(), *lr);
  if (resume_here && !resume_here->optimizer_archive.empty()) {
    torch::serialize::InputArchive ar;
    std::istringstream ss(resume_here->optimizer_archive);
    ar.load_from(ss, device);
    opt->load(ar);
    set_lr(*opt, *lr);
  }
  return opt;
}

/// The epoch's train counts summed over ranks (sums, not averages of
/// averages), and batch norm's running statistics averaged: each rank
/// normalised its own share of the batches, and validation, checkpoints and
/// the saved model need one set of statistics (docs/distributed.md).
void sum_over_ranks(dist::Context& ctx,
                    Counts& counts,
                    int64_t& seen,
                    models::ClassifierImpl& model) {
  auto t = torch::tensor(
      {counts.loss_sum, static_cast<double>(counts.n),
       static_cast<double>(counts.tp), static_cast<double>(counts.fp),
       static_cast<double>(counts.tn), static_cast<double>(counts.fn),
       static_cast<double>(seen)},
      torch::kFloat64);
  std::vector<torch::Tensor> stats = {t};
  for (const auto& nb : model.named_buffers()) {
    const std::string& k = nb.key();
    auto ends = [&](const std::string& tail) {
      return k.size() >= tail.size() &&
             k.compare(k.size() - tail.size(), tail.size(), tail) == 0;
    };
    if (ends("running_mean") || ends("running_var"))
      stats.push_back(nb.value());
  }
  // One collective: the sums, then the statistics divided by the world.
  ctx.all_reduce(stats);
  torch::NoGradGuard no_grad;
  for (size_t i = 1; i < stats.size(); ++i) {
    stats[i].div_(static_cast<double>(ctx.world_size()));
  }
  auto v = t.accessor<double, 1>();
  counts.loss_sum = v[0];
  counts.n = static_cast<int64_t>(v[1]);
  counts.tp = static_cast<int64_t>(v[2]);
  counts.fp = static_cast<int64_t>(v[3]);
  counts.tn = static_cast<int64_t>(v[4]);
  counts.fn = static_cast<int64_t>(v[5]);
  seen = static_cast<int64_t>(v[6]);
}

/// One pass over the shuffled training set (seeded per epoch, so that a
/// resumed run repeats an uninterrupted one); fills the train columns of
/// `rec`. The caller finishes `bar` once validation is known.
void train_epoch(models::ClassifierImpl& model,
                 const data::ImageSet& train,
                 const TrainOptions& o,
                 const torch::Device& device,
                 torch::optim::Optimizer& opt,
                 Progress& bar,
                 uint64_t epoch_seed,
                 double lr,
                 EpochRecord& rec,
                 int64_t& images_seen) {
  const int64_t n = train.size();
  // Distributed (docs/distributed.md): every rank draws the same
  // permutation and takes its equal slice of each global batch; dropout and
  // augmentation get a stream per rank (rank 0's is the single process's).
  auto& ctx = dist::world();
  const uint64_t rank_mix =
      static_cast<uint64_t>(ctx.rank()) * 0x9E3779B97F4A7C15ULL;
  torch::manual_seed(epoch_seed + rank_mix);
  auto perm = dist::permutation(n, epoch_seed);
  model.train();
  Counts counts;
  int64_t seen = 0;
  for (int64_t s = 0, b = 0; s < n; s += o.batch_size, ++b) {
    auto idx = perm.slice(0, s, std::min(n, s + o.batch_size));
    if (ctx.distributed()) {
      const auto [lo, hi] =
          dist::batch_slice(idx.size(0), ctx.rank(), ctx.world_size());
      idx = idx.slice(0, lo, hi);
      if (idx.size(0) == 0) continue;  // a last batch smaller than the world
    }
    auto x = train.images.index_select(0, idx)
                 .to(device)
                 .to(torch::kFloat32)
                 .div_(255.0f);
    auto y = train.labels.index_select(0, idx).to(device);
    if (o.augment) {
      x = augment::random_affine(
          x, o.augmentation,
          epoch_seed * 7919ULL + static_cast<uint64_t>(b) + rank_mix);
    }
    x = device_layout(x, device);
    opt.zero_grad();
    torch::Tensor logits;
    {
      // --precision bf16: the forward pass under autocast (bfloat16
      // convolutions, float32 master weights); the loss and the backward's
      // weight gradients stay float32 (to() is a no-op in float32).
      AutocastGuard autocast(device);
      logits = model.forward(x);
    }
    logits = logits.to(torch::kFloat32);
    auto loss = torch::binary_cross_entropy_with_logits(logits, y);
    const double lv = loss.item<double>();
    if (!std::isfinite(lv)) {
      throw Error("training diverged: loss is " +
                      (std::isnan(lv) ? std::string("nan") : shortest(lv)) +
                      " at epoch " + std::to_string(rec.epoch) + ", batch " +
                      std::to_string(b + 1) + "; lower --lr (now " +
                      fmt(lr, 6) + ")",
                  ExitCode::kInternal);
    }
    loss.backward();
    if (ctx.distributed()) {
      for (auto& g : opt.param_groups()) ctx.average_gradients(g.params());
    }
    opt.step();
    counts.add(logits, y, lv);
    seen += idx.size(0);
    bar.step(
        1, "loss " + fmt(counts.loss()) + " acc " + fmt(counts.accuracy(), 3));
  }
  if (ctx.distributed()) sum_over_ranks(ctx, counts, seen, model);
  images_seen += seen;
  rec.train_loss = counts.loss();
  rec.train_accuracy = counts.accuracy();
  rec.train_precision = counts.precision();
  rec.train_recall = counts.recall();
}

/// The validation columns of `rec` (at threshold 0.5).
void validate_epoch(models::ClassifierImpl& model,
                    const data::ImageSet& val,
                    const torch::Device& device,
                    EpochRecord& rec) {
  auto [vloss, probs] = evaluate_loss(model, val, device, 64);
  std::vector<double> sc(probs.data_ptr<float>(),
                         probs.data_ptr<float>() + probs.numel());
  auto lab_t = val.labels.to(torch::kInt32).contiguous();
  std::vector<int> lab(lab_t.data_ptr<int>(),
                       lab_t.data_ptr<int>() + lab_t.numel());
  auto r = metrics::rates(metrics::confusion(sc, lab, 0.5));
  rec.val_loss = vloss;
  rec.val_accuracy = r.accuracy;
  rec.val_precision = r.precision;
  rec.val_recall = r.recall;
  rec.val_auc = metrics::roc_auc(sc, lab);
}

/// The epoch's closing progress line: train, and validation when there is
/// one ("*" marks an improvement).
std::string epoch_status(const EpochRecord& rec, bool use_val, bool improved) {
  std::string status =
      "loss " + fmt(rec.train_loss) + " acc " + fmt(rec.train_accuracy, 3);
  if (use_val) {
    status += " | val loss " + fmt(rec.val_loss) + " acc " +
              fmt(rec.val_accuracy, 3) + " rec " + fmt(rec.val_recall, 3) +
              " auc " + fmt(rec.val_auc, 3) + (improved ? " *" : "");
  }
  return status;
}

/// What the epoch callback gets after epoch `e` of phase `pi`. A stop ends
/// the phase: the next resume starts the next phase.
TrainState epoch_state(const FitResult& result,
                       torch::optim::Optimizer* opt,
                       int pi,
                       int e,
                       int bad_epochs,
                       double lr,
                       bool stop) {
  TrainState st;
  st.result = &result;
  st.optimizer = opt;
  st.phase_index = stop ? pi + 1 : pi;
  st.epoch_in_phase = stop ? 0 : e + 1;
  st.bad_epochs = stop ? 0 : bad_epochs;
  st.lr = stop ? 0 : lr;
  return st;
}

/// Refuses a fit that cannot run, moves the model to `device` and, in a
/// distributed job, gives every rank rank 0's starting weights.
void prepare_fit(models::ClassifierImpl& model,
                 const data::ImageSet& train,
                 const data::ImageSet* val,
                 const TrainOptions& o,
                 const torch::Device& device) {
  o.validate();
  if (o.train_on == "train" && (val == nullptr || val->size() == 0)) {
    throw ConfigError(
        "training with early stopping needs a validation split; use "
        "--train-on train+val --epochs N for a refit");
  }
  if (train.size() == 0) throw DataError("the training split is empty");
  model.to(device);
  use_device_layout(model, device);
  auto& ctx = dist::world();
  if (ctx.distributed()) {
    if (o.batch_size % ctx.world_size() != 0) {
      throw ConfigError("--batch-size " + std::to_string(o.batch_size) +
                        " must be a multiple of the " +
                        std::to_string(ctx.world_size()) +
                        " ranks: each rank takes an equal share of a batch");
    }
    // The same starting weights on every rank: rank 0's.
    std::vector<torch::Tensor> state = model.parameters();
    for (const auto& b : model.buffers()) state.push_back(b);
    ctx.broadcast(state);
  }
}

/// What every epoch of one fit reads.
struct FitInputs {
  models::ClassifierImpl& model;
  const data::ImageSet& train;
  const data::ImageSet* val;  // null when training on train+val
  const TrainOptions& o;
  const torch::Device& device;
};

/// Trains epoch `e` of phase `ph` at `lr`, validates it (when there is
/// validation) and appends it to ls.result.history; an improvement becomes
/// the best epoch, with its weights in ls.best_state. Returns whether the
/// epoch improved (always, without validation).
bool run_epoch(const FitInputs& in,
               const Phase& ph,
               int e,
               double lr,
               torch::optim::Optimizer& opt,
               LoopState& ls) {
  const TrainOptions& o = in.o;
  FitResult& result = ls.result;
  EpochRecord rec;
  rec.epoch = static_cast<int>(result.history.size()) + 1;
  rec.phase = ph.name;
  rec.lr = lr;
  const auto te = std::chrono::steady_clock::now();
  // "train epoch 7/30" (or "frozen"/"fine-tune"): in a log, each epoch is
  // one line that says how far the phase is.
  const int64_t steps = (in.train.size() + o.batch_size - 1) / o.batch_size;
  Progress bar(ph.name + " epoch " + std::to_string(e + 1) + "/" +
                   std::to_string(ph.epochs),
               steps, o.progress && dist::world().is_main());
  // Per-epoch seeds make a resumed run identical to an uninterrupted one.
  const uint64_t epoch_seed =
      o.seed * 1000003ULL + static_cast<uint64_t>(rec.epoch);
  train_epoch(in.model, in.train, o, in.device, opt, bar, epoch_seed, lr, rec,
              result.images_seen);
  bool improved = true;
  const bool use_val = in.val != nullptr;
  if (use_val) {
    validate_epoch(in.model, *in.val, in.device, rec);
    improved = std::isnan(result.best_val_loss) ||
               rec.val_loss < result.best_val_loss - 1e-6;
  }
  rec.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - te)
          .count();
  result.history.push_back(rec);
  if (improved) {
    result.best_val_loss = rec.val_loss;
    result.best_epoch = rec.epoch;
    ls.best_state = snapshot(in.model);
    ls.bad_epochs = 0;
  } else {
    ++ls.bad_epochs;
  }
  bar.finish(epoch_status(rec, use_val, improved));
  return improved;
}

}  // namespace

FitResult fit(models::ClassifierImpl& model,
              const data::ImageSet& train,
              const data::ImageSet* val,
              const TrainOptions& o,
              const torch::Device& device,
              const EpochCallback& on_epoch,
              const ResumeState* resume) {
  prepare_fit(model, train, val, o, device);
  const bool use_val = o.train_on == "train";
  const bool keep_best = use_val && o.keep == "best";
  const FitInputs in{model, train, use_val ? val : nullptr, o, device};
  const bool transfer = models::is_transfer(model.config().arch);
  const std::vector<Phase> phases = phases_of(model, o);
  LoopState ls = initial_state(resume);
  FitResult& result = ls.result;
  const double prior_seconds = result.seconds;
  const auto t0 = std::chrono::steady_clock::now();
  auto seconds_now = [&] {
    return prior_seconds +
           std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
               .count();
  };
  const bool cosine = o.schedule == "cosine";

  for (int pi = ls.start_phase; pi < static_cast<int>(phases.size()); ++pi) {
    const Phase& ph = phases[static_cast<size_t>(pi)];
    const bool resuming_here = resume && pi == ls.start_phase;
    double lr = 0;
    auto opt = phase_optimizer(model, o, ph, transfer,
                               resuming_here ? resume : nullptr, ls.resume_lr,
                               device, &lr);
    if (!resuming_here) ls.bad_epochs = 0;
    for (int e = resuming_here ? ls.start_epoch : 0; e < ph.epochs; ++e) {
      if (cosine) {
        lr = cosine_lr(ph.lr, e, ph.epochs);
        set_lr(*opt, lr);
      }
      const bool improved = run_epoch(in, ph, e, lr, *opt, ls);
      const bool stop =
          use_val && o.patience > 0 && ls.bad_epochs >= o.patience;
      if (!cosine && use_val && !improved && o.lr_patience > 0 && !stop &&
          ls.bad_epochs % o.lr_patience == 0) {
        lr *= 0.5;
        set_lr(*opt, lr);
      }
      result.seconds = seconds_now();
      if (on_epoch) {
        on_epoch(
            epoch_state(result, opt.get(), pi, e, ls.bad_epochs, lr, stop));
      }
      if (stop) {
        result.stopped_early = true;
        break;
      }
    }
    // Continue the next phase from the best weights of this one.
    if (keep_best && !ls.best_state.empty()) restore(model, ls.best_state);
  }
  if (keep_best && !ls.best_state.empty()) restore(model, ls.best_state);
  // best_epoch names the epoch whose weights the model now holds.
  if (!keep_best && !result.history.empty()) {
    result.best_epoch = static_cast<int>(result.history.size());
    result.best_val_loss = result.history.back().val_loss;
  }
  result.seconds = seconds_now();
  model.eval();
  return result;
}

}  // namespace cxr::train
