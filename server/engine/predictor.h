// Prediction: detections on images, folders, globs, lists, videos and
// in-memory images, firing the predictor's callback events.
#ifndef YOLOHOOK_SERVER_ENGINE_PREDICTOR_H_
#define YOLOHOOK_SERVER_ENGINE_PREDICTOR_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/callbacks/state.h"
#include "server/engine/config.h"
#include "server/engine/run.h"

namespace yolohook::engine {

// Predicts with config.model (a .pt checkpoint or an .onnx file) on
// RunOptions::stream's frames when set (one at a time, results handed to
// stream.on_result; source_type "stream"), else on RunOptions::images when
// given, else on config.source: an image, a folder, a glob, a .txt list of
// paths, or a video file (every vid_stride-th frame).
//
// Events per batch: on_predict_batch_start, on_predict_postprocess_end (after
// NMS, before saving: callbacks may replace results), saving of annotated
// images / label files when save / save_txt, on_predict_batch_end (callbacks
// may replace results again: files are rewritten to match). What the summary
// returns and what is saved are the results after both events.
//
// Errors: see run.h; replaced results that are invalid (ValidateResults) are
// INVALID_ARGUMENT naming the event, image and box.
absl::StatusOr<PredictSummary> Predict(const Config& config,
                                       const RunOptions& run);

// Checks results a callback produced: one per image of the batch, finite
// coordinates with x1 <= x2 and y1 <= y2, conf in [0, 1], class ids within
// `num_classes`. Errors: INVALID_ARGUMENT naming the image and box.
absl::Status ValidateResults(const std::vector<Result>& results,
                             size_t expected_images, int num_classes);

// One "cls xc yc w h [conf]" line per box, normalised to the original image
// (Ultralytics' save_txt format).
std::string ResultToLabelText(const Result& result, bool with_conf);

}  // namespace yolohook::engine

#endif  // YOLOHOOK_SERVER_ENGINE_PREDICTOR_H_
