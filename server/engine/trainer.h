// Training: fits a detector on a dataset, firing the trainer's callback events
// (and the validator's, for each epoch's validation) at Ultralytics' points.
#ifndef YOLOHOOK_SERVER_ENGINE_TRAINER_H_
#define YOLOHOOK_SERVER_ENGINE_TRAINER_H_

#include "absl/status/statusor.h"
#include "server/engine/config.h"
#include "server/engine/run.h"

namespace yolohook::engine {

// Trains config.model (a scale such as yolov8n, or a .pt checkpoint to start
// from) on config.data and writes the run directory: args.yaml,
// weights/last.pt, weights/best.pt, results.csv, results.png.
//
// Callbacks may set TrainerState::stop (training ends after the epoch's
// validation and saving), add logged_metrics (extra results.csv columns) and
// change hyperparameters (validated, applied, then on_params_update fires).
// on_params_update also fires when the scheduler changes the learning rate at
// the end of an epoch, but not during warmup, whose per-batch changes would
// flood subscribers.
//
// Errors: see run.h.
absl::StatusOr<TrainSummary> Train(const Config& config, const RunOptions& run);

}  // namespace yolohook::engine

#endif  // YOLOHOOK_SERVER_ENGINE_TRAINER_H_
