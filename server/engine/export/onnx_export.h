// Export of the YOLOv8 detector to ONNX, readable by OpenCV 4.6's DNN module
// (see onnx_runner.h) and by other ONNX runtimes.
#ifndef YOLOHOOK_SERVER_ENGINE_EXPORT_ONNX_EXPORT_H_
#define YOLOHOOK_SERVER_ENGINE_EXPORT_ONNX_EXPORT_H_

#include <map>
#include <string>

#include "absl/status/status.h"
#include "server/engine/nn/model.h"

namespace yolohook::exporter {

struct OnnxExportOptions {
  // square input size (a positive multiple of 32)
  int imgsz = 640;
  // ONNX opset: 11, 12 or 13 (what OpenCV 4.6 reads)
  int opset = 12;
  // Written to metadata_props (stride, names, imgsz, task, date, version...).
  // Keys left out get defaults: task "detect", stride "32", batch "1", names
  // "class0".. (see onnx_metadata.h); imgsz is always the exported size.
  std::map<std::string, std::string> metadata;
};

// Writes `model` as an ONNX graph with input "images" (1,3,imgsz,imgsz) float
// and output "output0" (1, 4+nc, A) with the semantics of
// DetectionModelImpl::forward in eval mode: BatchNorm uses its running
// statistics and is folded into the convolutions. The model is only read (its
// training mode is left as it is).
//
// The graph avoids what OpenCV 4.6 misreads: the box decoding is done per
// level with full-shape constants (no broadcasting), DFL's softmax runs on the
// last axis, and C2f's split is two convolutions.
//
// The file is written to "<path>.partial" and renamed, so a failed export
// leaves no truncated file at `path`.
//
// Errors: INVALID_ARGUMENT for a bad imgsz or opset, bad metadata names (not
// nc of them, or malformed), or a model whose parameters do not follow the
// YOLOv8 layout; PERMISSION_DENIED or INTERNAL when the file cannot be
// written, naming the path.
absl::Status ExportOnnx(nn::DetectionModel& model,
                        const OnnxExportOptions& options,
                        const std::string& path);

}  // namespace yolohook::exporter

#endif  // YOLOHOOK_SERVER_ENGINE_EXPORT_ONNX_EXPORT_H_
