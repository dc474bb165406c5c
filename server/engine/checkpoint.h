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
  nn::ModelOptions options;        // architecture (scale multiples, nc)
  std::vector<std::string> names;  // class names
  Config args;                     // the training arguments
  int epoch = -1;  // last finished epoch, 0-based (-1: training finished)
  double best_fitness = 0;            // best fitness so far
  int64_t ema_updates = 0;            // EMA update count
  nn::DetectionModel model{nullptr};  // training weights
  nn::DetectionModel ema{
      nullptr};                // EMA weights (used for inference); may be null
  std::string optimizer_name;  // "SGD" or "AdamW" ("" when not saved)
  std::string
      optimizer_state;  // serialized optimizer archive ("" when not saved)
  std::map<std::string, double> train_metrics;  // last validation's metrics
  std::string date;                             // ISO 8601 save time
  std::string version;  // yolohook version that wrote it

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
