// What every engine run (train, val, predict, export) takes besides its Config,
// and small helpers shared by the runs.
#ifndef YOLOHOOK_SERVER_ENGINE_RUN_H_
#define YOLOHOOK_SERVER_ENGINE_RUN_H_

#include <atomic>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/callbacks/callbacks.h"
#include "server/callbacks/state.h"
#include "server/engine/config.h"

namespace yolohook::engine {

// An image handed over in memory (the server's inline images).
struct InputImage {
  std::string name;  // reported as the result's path
  std::string data;  // encoded JPEG or PNG bytes
};

// A predict run fed frame by frame by its caller (a remote video stream):
// frames are predicted one at a time, as they come, and each result is handed
// back as soon as the frame's callbacks have run.
struct FrameStream {
  // Blocks until the next frame and fills it; returns false at the end of the
  // stream. Called on the run's thread.
  std::function<bool(InputImage* frame)> next;
  // Receives each frame's final result (after callbacks), in frame order.
  std::function<void(const Result& result)> on_result;
  // Makes a blocked `next` return false at once (the job was cancelled or
  // the server stops); called from any thread. May be null.
  std::function<void()> interrupt;

  explicit operator bool() const { return static_cast<bool>(next); }
};

// How a caller takes part in a run.
struct RunOptions {
  // Callbacks fired at every event; may be null. Must outlive the run.
  const Callbacks* callbacks = nullptr;
  // Cooperative cancellation: checked between batches and images; may be null.
  const std::atomic<bool>* cancel = nullptr;
  // Receives progress lines (no trailing newline) when the config is verbose.
  // Null: they are printed to stdout.
  std::function<void(absl::string_view line)> log;
  // predict: in-memory images, used instead of config.source when not empty.
  std::vector<InputImage> images;
  // predict: a frame stream, used instead of images and config.source when
  // set. Results go to stream.on_result only (PredictSummary::results stays
  // empty, so a long stream does not accumulate them).
  FrameStream stream;
  // Checks arguments the engine takes from somewhere other than its caller
  // (on resume, those a checkpoint saved) before it uses them; an error ends
  // the run with it. Null: nothing is checked.
  std::function<absl::Status(const std::map<std::string, std::string>& args)>
      check_args;
};

struct TrainSummary {
  std::string save_dir;  // run directory
  std::string last;      // weights/last.pt
  std::string best;      // weights/best.pt
  int epochs_completed =
      0;  // epochs run in this call (including resumed ones before)
  bool stopped_early = false;  // a callback or early stopping ended training
  std::map<std::string, double> metrics;  // final validation of best.pt
  double seconds = 0;                     // wall time
};

struct ValSummary {
  std::string save_dir;
  std::map<std::string, double> metrics;  // Ultralytics keys plus "fitness"
  std::vector<ClassMetrics> per_class;
  std::vector<std::vector<int64_t>> confusion_matrix;
  Speed speed;  // ms per image
  int images = 0;
  int instances = 0;
};

struct PredictSummary {
  std::string save_dir;         // "" when nothing was saved
  std::vector<Result> results;  // per image, after callbacks
};

struct ExportSummary {
  std::string file;  // exported file
  double seconds = 0;
};

// Errors a run returns:
// - INVALID_ARGUMENT: bad arguments or data (the message names them);
// - NOT_FOUND: a missing model, data.yaml, source or image;
// - CANCELLED: RunOptions::cancel was set;
// - ABORTED: a callback failed the job (EventContext::Fail), with its reason;
// - INTERNAL: an unexpected LibTorch or OpenCV error, with its message.

}  // namespace yolohook::engine

#endif  // YOLOHOOK_SERVER_ENGINE_RUN_H_
