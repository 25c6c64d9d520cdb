#include "sharded.h"

#include <cmath>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace cxr::evaluate::detail {
namespace {

// NaN has no JSON number: null stands for it (a detector-less run's
// ood_score). Finite doubles round-trip exactly (nlohmann writes 17
// significant digits).
nlohmann::json num(double v) {
  return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v);
}
double num_of(const nlohmann::json& j) {
  return j.is_null() ? static_cast<double>(NAN) : j.get<double>();
}

}  // namespace

std::pair<int64_t, int64_t> batch_shard(int64_t n,
                                        int64_t batch,
                                        int rank,
                                        int world) {
  const int64_t b = std::max<int64_t>(1, batch);
  const int64_t batches = (n + b - 1) / b;
  const auto [first, last] = dist::contiguous_shard(batches, rank, world);
  return {std::min(n, first * b), std::min(n, last * b)};
}

void say_shard(const char* command,
               const char* what,
               const dist::Context& ctx,
               int64_t begin,
               int64_t end,
               int64_t n) {
  if (!ctx.distributed()) return;
  // One string, one write: the ranks share the terminal (rank 0 directly,
  // the others through the launcher), and a line written in pieces came
  // out interleaved with another rank's.
  std::ostringstream line;
  line << "cxr " << command << ": rank " << ctx.rank() << " of "
       << ctx.world_size() << " scores ";
  if (begin < end) {
    line << what << " " << begin + 1 << "-" << end;
  } else {
    line << "no " << what << " (fewer whole batches than ranks)";
  }
  line << " of " << n << "\n";
  std::cerr << line.str() << std::flush;
}

std::vector<infer::Prediction> gather_predictions(
    dist::Context& ctx, const std::vector<infer::Prediction>& local) {
  if (!ctx.distributed()) return local;
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& r : local) {
    rows.push_back({r.file, num(r.logit), num(r.p_raw), num(r.p), r.positive,
                    r.decision, num(r.ood_score), r.in_distribution, r.reasons,
                    r.error});
  }
  std::vector<infer::Prediction> all;
  for (const auto& blob : ctx.all_gather(rows.dump())) {
    for (const auto& row : nlohmann::json::parse(blob)) {
      infer::Prediction r;
      r.file = row.at(0).get<std::string>();
      r.logit = num_of(row.at(1));
      r.p_raw = num_of(row.at(2));
      r.p = num_of(row.at(3));
      r.positive = row.at(4).get<bool>();
      r.decision = row.at(5).get<std::string>();
      r.ood_score = num_of(row.at(6));
      r.in_distribution = row.at(7).get<bool>();
      r.reasons = row.at(8).get<std::vector<std::string>>();
      r.error = row.at(9).get<std::string>();
      all.push_back(std::move(r));
    }
  }
  return all;
}

}  // namespace cxr::evaluate::detail
