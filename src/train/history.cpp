/// history.csv (one row per epoch, written after each so a resumed run and
/// the report read it) and curves.png (loss and accuracy, both phases).
#include <cmath>
#include <iomanip>
#include <sstream>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/train/trainer.h"
#include "cxr/viz/plot.h"

namespace cxr::train {

void write_history_csv(const std::string& path,
                       const std::vector<EpochRecord>& h) {
  std::ostringstream s;
  s << "epoch,phase,lr,train_loss,train_accuracy,train_precision,"
       "train_recall,val_loss,val_accuracy,val_precision,val_recall,val_auc,"
       "seconds\n";
  s << std::setprecision(8);
  for (const auto& r : h) {
    s << r.epoch << "," << r.phase << "," << r.lr << "," << r.train_loss << ","
      << r.train_accuracy << "," << r.train_precision << "," << r.train_recall
      << "," << r.val_loss << "," << r.val_accuracy << "," << r.val_precision
      << "," << r.val_recall << "," << r.val_auc << "," << r.seconds << "\n";
  }
  write_text_atomic(path, s.str());
}

std::vector<EpochRecord> read_history_csv(const std::string& path) {
  std::istringstream in(read_text(path));
  std::string line;
  std::vector<EpochRecord> out;
  std::getline(in, line);
  int row = 1;
  while (std::getline(in, line)) {
    ++row;
    if (line.empty()) continue;
    std::vector<std::string> f;
    std::stringstream ls(line);
    std::string cell;
    while (std::getline(ls, cell, ',')) f.push_back(cell);
    if (f.size() != 13) {
      throw DataError("'" + path + "' line " + std::to_string(row) +
                      ": expected 13 fields, found " +
                      std::to_string(f.size()));
    }
    auto num = [&](size_t i) {
      try {
        return std::stod(f[i]);
      } catch (...) {
        return static_cast<double>(NAN);
      }
    };
    EpochRecord r;
    r.epoch = static_cast<int>(num(0));
    r.phase = f[1];
    r.lr = num(2);
    r.train_loss = num(3);
    r.train_accuracy = num(4);
    r.train_precision = num(5);
    r.train_recall = num(6);
    r.val_loss = num(7);
    r.val_accuracy = num(8);
    r.val_precision = num(9);
    r.val_recall = num(10);
    r.val_auc = num(11);
    r.seconds = num(12);
    out.push_back(r);
  }
  return out;
}

void plot_history(const std::vector<EpochRecord>& h,
                  const std::string& title,
                  const std::string& png_path,
                  int best_epoch) {
  viz::LineChart loss, acc;
  loss.title = title + ": loss";
  acc.title = title + ": accuracy";
  loss.x_label = acc.x_label = "epoch";
  loss.y_label = "binary cross-entropy";
  acc.y_label = "accuracy";
  acc.y_max = 1.0;
  viz::Series tl{"train", {}, {}}, vl{"val", {}, {}, true};
  viz::Series ta{"train", {}, {}}, va{"val", {}, {}, true};
  for (const auto& r : h) {
    tl.x.push_back(r.epoch);
    tl.y.push_back(r.train_loss);
    ta.x.push_back(r.epoch);
    ta.y.push_back(r.train_accuracy);
    if (!std::isnan(r.val_loss)) {
      vl.x.push_back(r.epoch);
      vl.y.push_back(r.val_loss);
      va.x.push_back(r.epoch);
      va.y.push_back(r.val_accuracy);
    }
  }
  loss.series = {tl};
  acc.series = {ta};
  if (!vl.x.empty()) {
    loss.series.push_back(vl);
    acc.series.push_back(va);
  }
  // Mark where fine-tuning starts and which epoch's weights were kept.
  for (size_t i = 1; i < h.size(); ++i) {
    if (h[i].phase != h[i - 1].phase) {
      loss.x_markers.push_back(h[i].epoch - 0.5);
      acc.x_markers.push_back(h[i].epoch - 0.5);
    }
  }
  if (best_epoch > 0) {
    loss.x_markers.push_back(best_epoch);
    acc.x_markers.push_back(best_epoch);
  }
  viz::save_line_charts({loss, acc}, png_path);
}

}  // namespace cxr::train
