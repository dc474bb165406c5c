// The state each callback event carries: plain structs, no torch or OpenCV
// types, so that the event layer can turn them into wire messages.
//
// The engine keeps its live state in these structs. A callback may change the
// fields marked "mutable"; the engine reads them back after the callbacks of an
// event have run and applies them (see EventContext).
#ifndef YOLOHOOK_SERVER_CALLBACKS_STATE_H_
#define YOLOHOOK_SERVER_CALLBACKS_STATE_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "server/callbacks/events.h"

namespace yolohook {

// One detection, in pixels of the original image.
struct Box {
  // left
  float x1 = 0;
  // top
  float y1 = 0;
  // right
  float x2 = 0;
  // bottom
  float y2 = 0;
  // confidence in [0, 1]
  float conf = 0;
  // class id, an index into names
  int cls = 0;
  // set by trackers
  std::optional<int64_t> track_id;
};

// Milliseconds spent per image in each phase.
struct Speed {
  double preprocess_ms = 0;
  double inference_ms = 0;
  double postprocess_ms = 0;
};

// The result of predicting one image.
struct Result {
  // source path, or the name of an in-memory image
  std::string path;
  // original image height in pixels
  int orig_height = 0;
  // original image width in pixels
  int orig_width = 0;
  // detections
  std::vector<Box> boxes;
  // class names, indexed by class id
  std::vector<std::string> names;
  // per-phase timing for this image
  Speed speed;
};

// A read-only view of a BGR image owned by the engine; valid only while the
// callback runs. Copy (or encode) what you need to keep.
struct FrameView {
  int height = 0;
  int width = 0;
  // bytes per row
  int64_t step = 0;
  // height * step bytes, 3 channels, 8 bits
  const uint8_t* bgr = nullptr;
};

struct TrainerState {
  // Progress (read-only).
  // 0-based
  int epoch = 0;
  // planned epochs
  int epochs = 0;
  // first epoch of this run (> 0 when resumed)
  int start_epoch = 0;
  // batch within the epoch, 0-based
  int batch_index = 0;
  // batches per epoch
  int num_batches = 0;
  // batches since the start of training
  int64_t iteration = 0;
  // images per batch
  int batch_size = 0;
  // training image size
  int imgsz = 0;
  // total loss of the last batch (sum of gains * items)
  double loss = 0;
  // last batch: box, cls, dfl
  std::vector<double> loss_items;
  // running mean over the epoch: box, cls, dfl
  std::vector<double> tloss;
  // "box_loss", "cls_loss", "dfl_loss"
  std::vector<std::string> loss_names;
  // last validation, Ultralytics keys
  std::map<std::string, double> metrics;
  // fitness of the last validation (mAP50-95)
  double fitness = 0;
  // best fitness so far
  double best_fitness = 0;
  // "lr/pg0", "lr/pg1", "lr/pg2"
  std::map<std::string, double> lr;
  // seconds spent in the last finished epoch
  double epoch_time = 0;
  // seconds since on_train_start
  double elapsed = 0;
  // run directory
  std::string save_dir;
  // weights/last.pt
  std::string last;
  // weights/best.pt
  std::string best;
  // the job's arguments
  std::map<std::string, std::string> args;
  // class names
  std::vector<std::string> names;

  // Mutable by callbacks.
  // end training after this epoch's validation and saving
  bool stop = false;
  // Extra metrics, written to results.csv as extra columns (and kept in
  // metrics).
  std::map<std::string, double> logged_metrics;
  // The tunable hyperparameters (see HyperparameterNames()) with their current
  // values; a change is validated, applied and followed by on_params_update.
  std::map<std::string, double> hyperparameters;
};

// Per-class validation figures.
struct ClassMetrics {
  int cls = 0;
  std::string name;
  // images with at least one label of this class
  int images = 0;
  // labels of this class
  int instances = 0;
  double precision = 0;
  double recall = 0;
  double map50 = 0;
  double map50_95 = 0;
};

struct ValidatorState {
  // inside a train job (validating the EMA model)
  bool training = false;
  // training epoch, 0-based (-1 when standalone)
  int epoch = -1;
  // 0-based
  int batch_index = 0;
  int num_batches = 0;
  // images validated so far
  int64_t seen = 0;
  std::vector<std::string> names;
  std::string save_dir;
  std::map<std::string, std::string> args;
  // on_val_batch_end: the batch's predictions (after NMS) and its labels, in
  // original image pixels, one entry per image. Labels have conf 1.
  std::vector<Result> batch_predictions;
  std::vector<Result> batch_labels;
  // on_val_end: Ultralytics keys ("metrics/mAP50(B)", ...), per class, the
  // confusion matrix (nc + 1 rows and columns; the last is background;
  // rows are predictions, columns are labels) and per-image speed.
  std::map<std::string, double> metrics;
  std::vector<ClassMetrics> per_class;
  std::vector<std::vector<int64_t>> confusion_matrix;
  double fitness = 0;
  Speed speed;
  // per-image loss computation time (training only)
  double loss_ms = 0;
};

struct PredictorState {
  // image, folder, glob, list, video, memory
  std::string source_type;
  // run directory ("" when nothing is saved)
  std::string save_dir;
  std::map<std::string, std::string> args;
  // 0-based
  int batch_index = 0;
  // images predicted so far
  int64_t seen = 0;
  // this batch's sources
  std::vector<std::string> paths;
  // this batch's original images
  std::vector<FrameView> frames;
  // per image: "image 1/3 a.jpg: 320x320 2 circles"
  std::vector<std::string> strings;
  // video frame numbers (-1 for still images)
  std::vector<int64_t> frame_indices;
  // Mutable by callbacks: what is saved and returned. Replacements are
  // validated (class ids within names, finite, ordered corners).
  std::vector<Result> results;
};

struct ExporterState {
  // source weights
  std::string file;
  // "onnx"
  std::string format;
  int imgsz = 0;
  // stride, names, task, batch, imgsz, date, version
  std::map<std::string, std::string> metadata;
  std::map<std::string, std::string> args;
  // exported file (set at on_export_end)
  std::string output;
};

// What a callback receives: the event and the state of the object that fired
// it. Exactly one state pointer is set, matching StageOf(event).
struct EventContext {
  Event event = Event::kOnPretrainRoutineStart;
  TrainerState* trainer = nullptr;
  ValidatorState* validator = nullptr;
  PredictorState* predictor = nullptr;
  ExporterState* exporter = nullptr;
  // Set (via Fail) to end the job: the engine stops as soon as the callbacks of
  // this event have run and reports this reason.
  std::optional<std::string> fail_reason;

  void Fail(std::string reason) {
    if (!fail_reason) fail_reason = std::move(reason);
  }
};

}  // namespace yolohook

#endif  // YOLOHOOK_SERVER_CALLBACKS_STATE_H_
