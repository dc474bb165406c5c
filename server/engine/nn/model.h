// The YOLOv8 detection network (layers 0-22 of Ultralytics' yolov8.yaml) as a
// LibTorch module whose state_dict keys match Ultralytics'
// ("model.0.conv.weight", "model.22.cv2.0.2.bias", "model.22.dfl.conv.weight",
// ...), so weights can be read and written by name.
//
// Use ScaleOptions() to get the options of a named scale (n, s, m), then
// MakeDetectionModel() to build a model with validated options. ForwardRaw()
// gives the head maps the loss needs; Decode() (or forward()) gives boxes and
// class probabilities for NMS.
#ifndef YOLOHOOK_SERVER_ENGINE_NN_MODEL_H_
#define YOLOHOOK_SERVER_ENGINE_NN_MODEL_H_

#include <torch/torch.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace yolohook::nn {

struct ModelOptions {
  // repeats multiplier
  double depth_multiple = 0.33;
  // channels multiplier
  double width_multiple = 0.25;
  // channel cap before width_multiple
  int max_channels = 1024;
  // classes
  int nc = 80;
  // DFL bins
  int reg_max = 16;
  // informative: n, s, m or custom
  std::string scale = "n";
};

// The options of a named scale: "n" (0.33, 0.25, 1024), "s" (0.33, 0.50,
// 1024), "m" (0.67, 0.75, 768), with `nc` classes. Errors: INVALID_ARGUMENT for
// another scale (naming the valid ones) or nc < 1.
absl::StatusOr<ModelOptions> ScaleOptions(absl::string_view scale, int nc);

// Checks that `options` build a model: positive multipliers, max_channels >= 8,
// 1 <= nc, 1 <= reg_max. Errors: INVALID_ARGUMENT naming the field.
absl::Status ValidateModelOptions(const ModelOptions& options);

// The YOLOv8 detection model. Owns its parameters. Thread-compatible: a const
// model may be shared for inference (under torch::NoGradGuard, in eval mode)
// only if nobody trains or copies into it at the same time.
//
// The constructor expects options accepted by ValidateModelOptions() (use
// MakeDetectionModel() for untrusted options); ForwardRaw() expects images
// accepted by CheckImages(). Both throw c10::Error otherwise.
class DetectionModelImpl : public torch::nn::Module {
 public:
  explicit DetectionModelImpl(const ModelOptions& options);

  // images (B,3,H,W) float in [0,1], H and W multiples of 32. Returns the raw
  // head maps for strides 8, 16, 32: each (B, 4*reg_max + nc, H/s, W/s): first
  // 4*reg_max channels box distribution logits (l,t,r,b x reg_max), then class
  // logits.
  std::vector<torch::Tensor> ForwardRaw(const torch::Tensor& images);

  // Decodes raw maps into (B, 4 + nc, A): rows 0-3 box centre x, centre y,
  // width, height in input pixels (DFL expectation, dist2bbox with anchor cell
  // centres +0.5, times stride); rows 4.. class probabilities (sigmoid).
  // A = sum over levels of h*w, level order 8,16,32, row-major (y then x)
  // within a level.
  torch::Tensor Decode(const std::vector<torch::Tensor>& raw) const;

  torch::Tensor forward(const torch::Tensor& images) {
    return Decode(ForwardRaw(images));
  }

  const ModelOptions& options() const { return options_; }

  static constexpr std::array<int64_t, 3> kStrides = {8, 16, 32};

  // Every parameter, including the frozen DFL conv (as Ultralytics counts).
  int64_t NumParameters() const;

  // Ultralytics' optimizer groups: decay (g0) = convolution weights, with
  // weight decay; norm (g1) = BatchNorm weights, no decay; bias (g2) = all
  // biases (including BatchNorm biases). The frozen DFL weight is in none.
  struct ParamGroups {
    std::vector<torch::Tensor> decay, norm, bias;
  };
  ParamGroups GroupParameters();

  // Copies every parameter and buffer from `other` (built with the same
  // options) without tracking gradients.
  void CopyFrom(const DetectionModelImpl& other);

  // Checks that `images` fit ForwardRaw(): a 4-D floating tensor with 3
  // channels and H, W positive multiples of 32. Errors: INVALID_ARGUMENT
  // describing the mismatch.
  static absl::Status CheckImages(const torch::Tensor& images);

  // Checks that `raw` fits Decode() for this model: three 4-D maps with
  // 4*reg_max + nc channels and the same batch size. Errors: INVALID_ARGUMENT.
  absl::Status CheckRaw(const std::vector<torch::Tensor>& raw) const;

 private:
  ModelOptions options_;
  torch::nn::ModuleList model_;
};
TORCH_MODULE(DetectionModel);

// Builds a model after ValidateModelOptions(). Errors: INVALID_ARGUMENT.
absl::StatusOr<DetectionModel> MakeDetectionModel(const ModelOptions& options);

// The output channels of a layer whose yaml asks for `channels`:
// make_divisible(min(channels, max_channels) * width_multiple, 8).
int64_t ScaledChannels(int64_t channels, const ModelOptions& options);

// The repeats of a layer whose yaml asks for `repeats`:
// max(round(repeats * depth_multiple), 1) when repeats > 1.
int64_t ScaledRepeats(int64_t repeats, const ModelOptions& options);

}  // namespace yolohook::nn

#endif  // YOLOHOOK_SERVER_ENGINE_NN_MODEL_H_
