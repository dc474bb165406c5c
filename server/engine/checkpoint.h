// Checkpoints (weights/last.pt, weights/best.pt): one LibTorch archive holding
// everything needed to predict, validate or resume.
#ifndef YOLOHOOK_SERVER_ENGINE_CHECKPOINT_H_
#define YOLOHOOK_SERVER_ENGINE_CHECKPOINT_H_

#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/engine/config.h"
#include "server/engine/nn/model.h"

namespace yolohook::engine {

inline constexpr char kCheckpointFormat[] = "yolohook-checkpoint-1";

struct Checkpoint {
  // architecture (scale multiples, nc)
  nn::ModelOptions options;
  // class names
  std::vector<std::string> names;
  // the training arguments
  Config args;
  // last finished epoch, 0-based (-1: training finished)
  int epoch = -1;
  // best fitness so far
  double best_fitness = 0;
  // EMA update count
  int64_t ema_updates = 0;
  // training weights
  nn::DetectionModel model{nullptr};
  // EMA weights (used for inference); may be null
  nn::DetectionModel ema{nullptr};
  // "SGD" or "AdamW" ("" when not saved)
  std::string optimizer_name;
  // serialized optimizer archive ("" when not saved)
  std::string optimizer_state;
  // last validation's metrics
  std::map<std::string, double> train_metrics;
  // ISO 8601 save time
  std::string date;
  // yolohook version that wrote it
  std::string version;

  // The weights to predict with: the EMA when present.
  nn::DetectionModel InferenceModel() const { return ema ? ema : model; }
};

// Writes `checkpoint` to `path` atomically (a temporary file renamed into
// place, so a crash never leaves half a checkpoint). Errors: INTERNAL naming
// the path.
absl::Status SaveCheckpoint(const Checkpoint& checkpoint,
                            const std::string& path);

// Reads a checkpoint written by SaveCheckpoint. Errors: NOT_FOUND (no file),
// INVALID_ARGUMENT (not a yolohook checkpoint or damaged), naming the path.
absl::StatusOr<Checkpoint> LoadCheckpoint(const std::string& path);

// Serializes / restores an optimizer's state (for Checkpoint::optimizer_state).
std::string SerializeOptimizer(torch::optim::Optimizer& optimizer);
absl::Status RestoreOptimizer(torch::optim::Optimizer& optimizer,
                              const std::string& state);

}  // namespace yolohook::engine

#endif  // YOLOHOOK_SERVER_ENGINE_CHECKPOINT_H_
