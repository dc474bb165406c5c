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
  float x1 = 0;                     // left
  float y1 = 0;                     // top
  float x2 = 0;                     // right
  float y2 = 0;                     // bottom
  float conf = 0;                   // confidence in [0, 1]
  int cls = 0;                      // class id, an index into names
  std::optional<int64_t> track_id;  // set by trackers
};

// Milliseconds spent per image in each phase.
struct Speed {
  double preprocess_ms = 0;
  double inference_ms = 0;
  double postprocess_ms = 0;
};

// The result of predicting one image.
struct Result {
  std::string path;        // source path, or the name of an in-memory image
  int orig_height = 0;     // original image height in pixels
  int orig_width = 0;      // original image width in pixels
  std::vector<Box> boxes;  // detections
  std::vector<std::string> names;  // class names, indexed by class id
  Speed speed;                     // per-phase timing for this image
};

// A read-only view of a BGR image owned by the engine; valid only while the
// callback runs. Copy (or encode) what you need to keep.
struct FrameView {
  int height = 0;
  int width = 0;
  int64_t step = 0;              // bytes per row
  const uint8_t* bgr = nullptr;  // height * step bytes, 3 channels, 8 bits
};

struct TrainerState {
  // Progress (read-only).
  int epoch = 0;          // 0-based
  int epochs = 0;         // planned epochs
  int start_epoch = 0;    // first epoch of this run (> 0 when resumed)
  int batch_index = 0;    // batch within the epoch, 0-based
  int num_batches = 0;    // batches per epoch
  int64_t iteration = 0;  // batches since the start of training
  int batch_size = 0;     // images per batch
  int imgsz = 0;          // training image size
  double loss = 0;        // total loss of the last batch (sum of gains * items)
  std::vector<double> loss_items;  // last batch: box, cls, dfl
  std::vector<double> tloss;       // running mean over the epoch: box, cls, dfl
  std::vector<std::string> loss_names;    // "box_loss", "cls_loss", "dfl_loss"
  std::map<std::string, double> metrics;  // last validation, Ultralytics keys
  double fitness = 0;       // fitness of the last validation (mAP50-95)
  double best_fitness = 0;  // best fitness so far
  std::map<std::string, double> lr;  // "lr/pg0", "lr/pg1", "lr/pg2"
  double epoch_time = 0;             // seconds spent in the last finished epoch
  double elapsed = 0;                // seconds since on_train_start
  std::string save_dir;              // run directory
  std::string last;                  // weights/last.pt
  std::string best;                  // weights/best.pt
  std::map<std::string, std::string> args;  // the job's arguments
  std::vector<std::string> names;           // class names

  // Mutable by callbacks.
  bool stop = false;  // end training after this epoch's validation and saving
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
  int images = 0;     // images with at least one label of this class
  int instances = 0;  // labels of this class
  double precision = 0;
  double recall = 0;
  double map50 = 0;
  double map50_95 = 0;
};

struct ValidatorState {
  bool training = false;  // inside a train job (validating the EMA model)
  int epoch = -1;         // training epoch, 0-based (-1 when standalone)
  int batch_index = 0;    // 0-based
  int num_batches = 0;
  int64_t seen = 0;  // images validated so far
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
  double loss_ms = 0;  // per-image loss computation time (training only)
};

struct PredictorState {
  std::string source_type;  // image, folder, glob, list, video, memory
  std::string save_dir;     // run directory ("" when nothing is saved)
  std::map<std::string, std::string> args;
  int batch_index = 0;             // 0-based
  int64_t seen = 0;                // images predicted so far
  std::vector<std::string> paths;  // this batch's sources
  std::vector<FrameView> frames;   // this batch's original images
  std::vector<std::string>
      strings;  // per image: "image 1/3 a.jpg: 320x320 2 circles"
  std::vector<int64_t>
      frame_indices;  // video frame numbers (-1 for still images)
  // Mutable by callbacks: what is saved and returned. Replacements are
  // validated (class ids within names, finite, ordered corners).
  std::vector<Result> results;
};

struct ExporterState {
  std::string file;    // source weights
  std::string format;  // "onnx"
  int imgsz = 0;
  std::map<std::string, std::string>
      metadata;  // stride, names, task, batch, imgsz, date, version
  std::map<std::string, std::string> args;
  std::string output;  // exported file (set at on_export_end)
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
