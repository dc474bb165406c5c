// A detector ready for inference: LibTorch weights from a checkpoint, or an
// exported ONNX file run by OpenCV DNN.
#ifndef YOLOHOOK_SERVER_ENGINE_INFERENCE_MODEL_H_
#define YOLOHOOK_SERVER_ENGINE_INFERENCE_MODEL_H_

#include <torch/torch.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/checkpoint.h"
#include "server/engine/export/onnx_runner.h"
#include "server/engine/nn/model.h"

namespace yolohook::engine {

// Thread-compatible.
class InferenceModel {
 public:
  // `model` is a .pt checkpoint (its EMA weights) or an .onnx file. Errors:
  // NOT_FOUND (no such file), INVALID_ARGUMENT (an untrained scale such as
  // yolov8n, or a file that is neither), naming the argument.
  static absl::StatusOr<InferenceModel> Load(const std::string& model);
  // Wraps weights being trained (the validator inside training).
  static InferenceModel FromTorch(nn::DetectionModel model,
                                  std::vector<std::string> names);

  const std::vector<std::string>& names() const { return names_; }
  // The input size an ONNX file was exported with; 0 for LibTorch weights.
  int fixed_imgsz() const { return fixed_imgsz_; }
  // The input size to run at: config.imgsz, or the size a fixed-size model
  // takes. INVALID_ARGUMENT when the user gave an imgsz such a model cannot
  // take (naming both sizes), rather than silently using another.
  absl::StatusOr<int> InputSize(const Config& config) const;
  bool is_onnx() const { return onnx_ != nullptr; }
  // LibTorch weights, or null for ONNX.
  nn::DetectionModel torch_model() const { return torch_; }
  // The checkpoint it came from, if any.
  const std::optional<Checkpoint>& checkpoint() const { return checkpoint_; }
  const std::string& path() const { return path_; }

  // images (B,3,H,W) float RGB in [0,1] -> (B, 4+nc, A). Errors: INTERNAL
  // from the backend, INVALID_ARGUMENT when the size does not fit the ONNX
  // file.
  absl::StatusOr<torch::Tensor> Forward(const torch::Tensor& images);

 private:
  nn::DetectionModel torch_{nullptr};
  std::shared_ptr<exporter::OnnxDetector> onnx_;
  std::vector<std::string> names_;
  int fixed_imgsz_ = 0;
  std::optional<Checkpoint> checkpoint_;
  std::string path_;
};

}  // namespace yolohook::engine

#endif  // YOLOHOOK_SERVER_ENGINE_INFERENCE_MODEL_H_
