// Helpers shared by the trainer, validator, predictor and exporter.
// Internal to the engine.
#ifndef YOLOHOOK_SERVER_ENGINE_RUN_UTIL_H_
#define YOLOHOOK_SERVER_ENGINE_RUN_UTIL_H_

#include <torch/torch.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/callbacks/state.h"
#include "server/engine/config.h"
#include "server/engine/data/dataset.h"
#include "server/engine/run.h"

namespace yolohook::engine {

// Sets LibTorch's and OpenCV's thread counts: `threads`, or all cores when 0.
// Returns the count in effect.
int ConfigureThreads(int threads);

// {project}/{name}, numbered name2, name3, ... when it exists and !exist_ok.
// project defaults to {data_dir}/runs/detect and name to the mode's name.
// Creates the directory. Errors: INTERNAL naming the path.
absl::StatusOr<std::string> MakeRunDir(const Config& config, Mode mode);

// Writes progress lines to RunOptions::log, or stdout when verbose.
class Logger {
 public:
  Logger(const RunOptions& run, bool verbose) : run_(run), verbose_(verbose) {}
  void operator()(absl::string_view line) const;

 private:
  const RunOptions& run_;
  bool verbose_;
};

// Runs the callbacks of `event` on `state`. Errors: ABORTED with the reason if
// a callback failed the job.
absl::Status Fire(const RunOptions& run, Event event, TrainerState* state);
absl::Status Fire(const RunOptions& run, Event event, ValidatorState* state);
absl::Status Fire(const RunOptions& run, Event event, PredictorState* state);
absl::Status Fire(const RunOptions& run, Event event, ExporterState* state);

// CANCELLED when the run's cancel flag is set.
absl::Status CheckCancelled(const RunOptions& run);

// The batch's images as a (B,3,H,W) float tensor in [0,1], RGB.
torch::Tensor ImagesToTensor(const std::vector<data::Sample>& samples);
// One letterboxed BGR image as (1,3,H,W) float in [0,1], RGB.
torch::Tensor ImageToTensor(const cv::Mat& bgr);
// The batch's labels as (N,6) [batch_idx, cls, xc, yc, w, h], normalised.
torch::Tensor TargetsToTensor(const std::vector<data::Sample>& samples);

// Maps boxes from letterboxed pixels back to the original image, clipped.
void UnLetterbox(std::vector<Box>& boxes, const data::LetterboxInfo& info,
                 int orig_width, int orig_height);
// NMS output (N,6) -> Boxes.
std::vector<Box> TensorToBoxes(const torch::Tensor& detections);

// Runs `fn`, turning LibTorch and OpenCV exceptions into INTERNAL errors that
// start with `what`.
absl::Status Guard(absl::string_view what,
                   const std::function<absl::Status()>& fn);

// "n", "s" or "m" for a model argument naming an architecture: yolov8n,
// yolov8s.yaml, yolov8m.pt (when no such file exists); nullopt otherwise.
std::optional<std::string> ScaleFromModelName(absl::string_view model);

// Current time, ISO 8601 UTC.
std::string NowIso8601();

// The config as the args map carried by events.
std::map<std::string, std::string> ArgsMap(const Config& config);

// Milliseconds elapsed since construction or the last Lap().
class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  double Lap() {
    auto now = std::chrono::steady_clock::now();
    double ms = std::chrono::duration<double, std::milli>(now - start_).count();
    start_ = now;
    return ms;
  }
  // Milliseconds since construction or the last Lap(), without resetting.
  double ElapsedMs() const {
    return std::chrono::duration<double, std::milli>(
               std::chrono::steady_clock::now() - start_)
        .count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

}  // namespace yolohook::engine

#endif  // YOLOHOOK_SERVER_ENGINE_RUN_UTIL_H_
