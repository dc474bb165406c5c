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
  // reported as the result's path
  std::string name;
  // encoded JPEG or PNG bytes
  std::string data;
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
  // run directory
  std::string save_dir;
  // weights/last.pt
  std::string last;
  // weights/best.pt
  std::string best;
  // epochs run in this call (including resumed ones before)
  int epochs_completed = 0;
  // a callback or early stopping ended training
  bool stopped_early = false;
  // final validation of best.pt
  std::map<std::string, double> metrics;
  // wall time
  double seconds = 0;
};

struct ValSummary {
  std::string save_dir;
  // Ultralytics keys plus "fitness"
  std::map<std::string, double> metrics;
  std::vector<ClassMetrics> per_class;
  std::vector<std::vector<int64_t>> confusion_matrix;
  // ms per image
  Speed speed;
  int images = 0;
  int instances = 0;
};

struct PredictSummary {
  // "" when nothing was saved
  std::string save_dir;
  // per image, after callbacks
  std::vector<Result> results;
};

struct ExportSummary {
  // exported file
  std::string file;
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
