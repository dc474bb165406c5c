// Yolo: the engine's front door, in the spirit of Ultralytics' YOLO object.
//
//   yolohook::engine::Yolo model("yolov8n");
//   model.AddCallback("on_train_epoch_end", [](yolohook::EventContext& ctx) {
//     if (ctx.trainer->tloss[0] < 0.5) ctx.trainer->stop = true;
//   });
//   auto train = model.Train({{"data", "shapes"}, {"epochs", "3"}});
//   auto results = model.Predict({{"source", "images/"}});
#ifndef YOLOHOOK_SERVER_ENGINE_YOLO_H_
#define YOLOHOOK_SERVER_ENGINE_YOLO_H_

#include <atomic>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/callbacks/callbacks.h"
#include "server/engine/config.h"
#include "server/engine/run.h"

namespace yolohook::engine {

// Holds a model argument and the callbacks shared by every run it starts.
// Thread-compatible: one run at a time.
class Yolo {
 public:
  using Args = std::map<std::string, std::string>;

  // `model`: yolov8n / yolov8s / yolov8m (untrained), a .pt checkpoint or an
  // .onnx file (val and predict only).
  explicit Yolo(std::string model = "yolov8n") : model_(std::move(model)) {}

  // Registers `fn` for an Ultralytics event name. Errors: INVALID_ARGUMENT for
  // an unknown name (listing the valid ones) or an empty function.
  absl::Status AddCallback(absl::string_view event, Callback fn) {
    return callbacks_.Add(event, std::move(fn));
  }
  absl::Status ClearCallback(absl::string_view event) {
    return callbacks_.Clear(event);
  }
  void ClearCallbacks() { callbacks_.ClearAll(); }
  Callbacks& callbacks() { return callbacks_; }

  // Where progress lines go (default: stdout when verbose).
  void SetLog(std::function<void(absl::string_view)> log) {
    log_ = std::move(log);
  }
  // Cancels the current run from another thread.
  void Cancel() { cancel_ = true; }

  // The runs take the CLI's key=value arguments; model= defaults to this
  // object's model. After Train, the object's model is the run's best.pt.
  // Errors: see run.h.
  absl::StatusOr<TrainSummary> Train(const Args& args);
  absl::StatusOr<ValSummary> Val(const Args& args);
  absl::StatusOr<PredictSummary> Predict(const Args& args,
                                         std::vector<InputImage> images = {});
  absl::StatusOr<ExportSummary> Export(const Args& args);

  const std::string& model() const { return model_; }

 private:
  absl::StatusOr<Config> ConfigFor(Mode mode, const Args& args);
  RunOptions Options();

  std::string model_;
  Callbacks callbacks_;
  std::function<void(absl::string_view)> log_;
  std::atomic<bool> cancel_{false};
};

}  // namespace yolohook::engine

#endif  // YOLOHOOK_SERVER_ENGINE_YOLO_H_
