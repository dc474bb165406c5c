// Export: writes a trained detector in another format, firing on_export_start
// and on_export_end.
#ifndef YOLOHOOK_SERVER_ENGINE_EXPORTER_H_
#define YOLOHOOK_SERVER_ENGINE_EXPORTER_H_

#include "absl/status/statusor.h"
#include "server/engine/config.h"
#include "server/engine/run.h"

namespace yolohook::engine {

// Exports config.model (a .pt checkpoint) as config.format (onnx) at
// config.imgsz, beside the checkpoint (best.pt -> best.onnx). The ONNX file
// runs in OpenCV DNN and is accepted as model= by val and predict.
// Errors: see run.h.
absl::StatusOr<ExportSummary> Export(const Config& config,
                                     const RunOptions& run);

}  // namespace yolohook::engine

#endif  // YOLOHOOK_SERVER_ENGINE_EXPORTER_H_
