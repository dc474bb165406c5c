// Inference of an exported detector through OpenCV DNN, without LibTorch.
#ifndef YOLOHOOK_SERVER_ENGINE_EXPORT_ONNX_RUNNER_H_
#define YOLOHOOK_SERVER_ENGINE_EXPORT_ONNX_RUNNER_H_

#include <map>
#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace yolohook::exporter {

// Runs an ONNX detector (written by ExportOnnx() or by Ultralytics' ONNX
// export) with OpenCV DNN on the CPU (DNN_BACKEND_OPENCV, DNN_TARGET_CPU), and
// exposes the metadata stored in the file. Owns its network; copies share it
// (cv::dnn::Net is reference-counted), so give each thread its own Load().
//
// OpenCV's thread count is process-wide: the caller sets it with
// cv::setNumThreads() (this class never changes it).
//
// Thread-compatible: Run() mutates the network's buffers.
class OnnxDetector {
 public:
  // Loads `path`. Errors: NOT_FOUND (missing file), INVALID_ARGUMENT (not an
  // ONNX model OpenCV can load, or inconsistent metadata), each naming the
  // path.
  static absl::StatusOr<OnnxDetector> Load(const std::string& path);

  // `blob` (1,3,imgsz,imgsz) CV_32F NCHW, RGB in [0,1] (see
  // cv::dnn::blobFromImage) -> (1, 4 + nc, A) CV_32F: rows 0-3 box centre x,
  // centre y, width, height in input pixels, rows 4.. class probabilities, as
  // DetectionModelImpl::forward. Errors: INVALID_ARGUMENT for a blob of
  // another shape or type; INTERNAL if OpenCV fails, naming the path.
  absl::StatusOr<cv::Mat> Run(const cv::Mat& blob);

  // The file's metadata_props.
  const std::map<std::string, std::string>& metadata() const {
    return metadata_;
  }
  // Square input size: metadata "imgsz", else the graph's input shape.
  int imgsz() const { return imgsz_; }
  // Classes: the graph's output rows minus 4, else the number of names.
  int num_classes() const { return static_cast<int>(names_.size()); }
  // Metadata "names", else "class0", "class1", ...
  std::vector<std::string> names() const { return names_; }
  // Metadata "stride" (the largest stride), 32 if absent.
  int stride() const { return stride_; }
  const std::string& path() const { return path_; }

 private:
  OnnxDetector() = default;

  std::string path_;
  cv::dnn::Net net_;
  std::map<std::string, std::string> metadata_;
  std::vector<std::string> names_;
  int imgsz_ = 0;
  int stride_ = 32;
};

}  // namespace yolohook::exporter

#endif  // YOLOHOOK_SERVER_ENGINE_EXPORT_ONNX_RUNNER_H_
