#include "server/engine/inference_model.h"

#include <filesystem>
#include <opencv2/core.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/engine/run_util.h"

namespace yolohook::engine {

absl::StatusOr<InferenceModel> InferenceModel::Load(const std::string& model) {
  InferenceModel m;
  m.path_ = model;
  if (absl::EndsWith(model, ".onnx")) {
    if (!std::filesystem::exists(model)) {
      return absl::NotFoundError(
          absl::StrCat("model=", model, ": file not found"));
    }
    YH_ASSIGN_OR_RETURN(exporter::OnnxDetector det,
                        exporter::OnnxDetector::Load(model));
    m.onnx_ = std::make_shared<exporter::OnnxDetector>(std::move(det));
    m.names_ = m.onnx_->names();
    m.fixed_imgsz_ = m.onnx_->imgsz();
    return m;
  }
  if (!std::filesystem::exists(model)) {
    if (ScaleFromModelName(model).has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model=", model,
                       " names an untrained architecture; pass a .pt "
                       "checkpoint from a training run "
                       "(e.g. runs/detect/train/weights/best.pt) or an "
                       "exported .onnx file"));
    }
    return absl::NotFoundError(
        absl::StrCat("model=", model, ": file not found"));
  }
  YH_ASSIGN_OR_RETURN(Checkpoint ckpt, LoadCheckpoint(model));
  m.torch_ = ckpt.InferenceModel();
  m.torch_->eval();
  m.names_ = ckpt.names;
  m.checkpoint_ = std::move(ckpt);
  return m;
}

InferenceModel InferenceModel::FromTorch(nn::DetectionModel model,
                                         std::vector<std::string> names) {
  InferenceModel m;
  m.torch_ = std::move(model);
  m.names_ = std::move(names);
  return m;
}

absl::StatusOr<int> InferenceModel::InputSize(const Config& config) const {
  if (fixed_imgsz_ == 0) return config.imgsz;
  if (config.Given("imgsz") && config.imgsz != fixed_imgsz_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "imgsz=", config.imgsz, " but model=", path_, " was exported for ",
        fixed_imgsz_, "x", fixed_imgsz_,
        " inputs only: pass imgsz=", fixed_imgsz_,
        " (or leave it out), or export it again with imgsz=", config.imgsz));
  }
  return fixed_imgsz_;
}

absl::StatusOr<torch::Tensor> InferenceModel::Forward(
    const torch::Tensor& images) {
  if (torch_) {
    torch::NoGradGuard no_grad;
    return torch_->forward(images);
  }
  if (fixed_imgsz_ != 0 &&
      (images.size(2) != fixed_imgsz_ || images.size(3) != fixed_imgsz_)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the ONNX model ", path_, " takes ", fixed_imgsz_, "x",
                     fixed_imgsz_, " inputs; set imgsz=", fixed_imgsz_));
  }
  std::vector<torch::Tensor> outputs;
  for (int64_t i = 0; i < images.size(0); ++i) {
    torch::Tensor one = images[i].unsqueeze(0).contiguous();
    int sizes[] = {1, 3, static_cast<int>(one.size(2)),
                   static_cast<int>(one.size(3))};
    cv::Mat blob(4, sizes, CV_32F, one.data_ptr<float>());
    YH_ASSIGN_OR_RETURN(cv::Mat out, onnx_->Run(blob));
    std::vector<int64_t> shape(out.size.p, out.size.p + out.dims);
    outputs.push_back(
        torch::from_blob(out.ptr<float>(), shape, torch::kFloat32).clone());
  }
  return torch::cat(outputs, 0);
}

}  // namespace yolohook::engine
