// The results.csv of a training run and the results.png drawn from it.
#ifndef YOLOHOOK_SERVER_ENGINE_METRICS_RESULTS_H_
#define YOLOHOOK_SERVER_ENGINE_METRICS_RESULTS_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace yolohook::metrics {

// The standard columns of results.csv, in order (Ultralytics' columns):
// epoch,time,train/box_loss,train/cls_loss,train/dfl_loss,
// metrics/precision(B),metrics/recall(B),metrics/mAP50(B),metrics/mAP50-95(B),
// val/box_loss,val/cls_loss,val/dfl_loss,lr/pg0,lr/pg1,lr/pg2
const std::vector<std::string>& StandardResultColumns();

// The results.csv of a training run: the standard columns, then any extra
// keys (metrics logged by callbacks) in first-seen order. epoch is 1-based,
// time is cumulative seconds, values are printed with %.6g. A row bringing a
// new extra key rewrites the file with the new column (earlier rows empty
// there); other rows are appended.
//
// The object owns its copy of the rows; the file is written on every Append.
// Call Load() first to continue an existing file (resume): otherwise the first
// Append replaces it. Thread-compatible.
class ResultsCsv {
 public:
  explicit ResultsCsv(std::string path);

  // Loads existing rows (for resume) if the file exists; a missing file is
  // not an error (no rows). Errors: the file cannot be read (the errno's
  // code), or it is malformed: INVALID_ARGUMENT naming the file and line
  // (no epoch/time header, a row with the wrong number of fields, a value that
  // is not a number).
  absl::Status Load();

  // Appends one epoch. `values` are keyed by column name; missing standard
  // columns are written empty; keys "epoch" and "time" in `values` are ignored
  // in favour of the arguments. Errors: INVALID_ARGUMENT for epoch < 1 or a
  // key that is empty or holds a comma, quote or line break; the errno's code
  // when the file cannot be written (naming it). On error nothing is recorded.
  absl::Status Append(int epoch, double time_seconds,
                      const std::map<std::string, double>& values);

  const std::string& path() const { return path_; }
  // The header: the standard columns then the extras seen so far.
  const std::vector<std::string>& columns() const { return columns_; }
  // One map per epoch, including "epoch" and "time"; empty cells are absent.
  const std::vector<std::map<std::string, double>>& rows() const {
    return rows_;
  }

 private:
  std::string FormatRow(const std::map<std::string, double>& row) const;
  std::string FormatHeader() const;
  absl::Status WriteAll() const;
  absl::Status AppendLine(const std::string& line) const;

  std::string path_;
  std::vector<std::string> columns_;
  std::vector<std::map<std::string, double>> rows_;
  // the file holds exactly columns_ and rows_
  bool written_ = false;
};

// Draws results.png from a results.csv: one small panel per column after
// epoch and time (losses, metrics, lr, extras), value vs. epoch, with titles,
// axis ranges and a smoothed trend, five panels per row. Errors name the file:
// NOT_FOUND for a missing csv, INVALID_ARGUMENT for a malformed one or one
// with no rows, the errno's / INTERNAL code when the PNG cannot be written.
absl::Status PlotResults(const std::string& csv_path,
                         const std::string& png_path);

}  // namespace yolohook::metrics

#endif  // YOLOHOOK_SERVER_ENGINE_METRICS_RESULTS_H_
