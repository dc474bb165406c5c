// Validation: mAP of a detector on a dataset split, firing the validator's
// callback events (on_val_start, on_val_batch_start, on_val_batch_end,
// on_val_end).
#ifndef YOLOHOOK_SERVER_ENGINE_VALIDATOR_H_
#define YOLOHOOK_SERVER_ENGINE_VALIDATOR_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/config.h"
#include "server/engine/data/dataset.h"
#include "server/engine/data/loader.h"
#include "server/engine/inference_model.h"
#include "server/engine/nn/loss.h"
#include "server/engine/nn/ops.h"
#include "server/engine/run.h"

namespace yolohook::engine {

// Validates models on one split; reusable across epochs. Thread-compatible.
class Validator {
 public:
  struct Options {
    // letterbox size
    int imgsz = 640;
    // images per batch
    int batch = 32;
    // loading threads
    int workers = 2;
    // conf 0.001, iou 0.7, max_det 300 for mAP
    nn::NmsOptions nms;
    // inside a train job: events say so, losses are computed
    bool training = false;
    // print one table row per class
    bool per_class = false;
    // print the table (and speed) at the end
    bool verbose = true;
  };

  Validator(std::vector<data::ImageRecord> records,
            std::vector<std::string> names, Options options);

  // Validates `model`. `base` carries the fields the caller knows (epoch,
  // save_dir, args). With `loss`, also computes val/box_loss, val/cls_loss and
  // val/dfl_loss into the summary's metrics (LibTorch models only).
  // Errors: see run.h.
  absl::StatusOr<ValSummary> Run(InferenceModel& model, const RunOptions& run,
                                 const ValidatorState& base,
                                 const nn::DetectionLoss* loss,
                                 const nn::LossGains& gains);

  size_t size() const { return dataset_.size(); }
  // Per-class rows in the printed table from now on (the final validation of
  // training).
  void set_per_class(bool per_class) { options_.per_class = per_class; }

 private:
  std::vector<std::string> names_;
  Options options_;
  data::DetectionDataset dataset_;
  data::DataLoader loader_;
};

// Standalone `val`: loads config.model and config.data and validates the split.
absl::StatusOr<ValSummary> Validate(const Config& config,
                                    const RunOptions& run);

}  // namespace yolohook::engine

#endif  // YOLOHOOK_SERVER_ENGINE_VALIDATOR_H_
