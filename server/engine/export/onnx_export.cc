#include "server/engine/export/onnx_export.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/engine/export/onnx_graph.h"
#include "server/engine/export/onnx_metadata.h"

namespace yolohook::exporter {
namespace {

// Ultralytics' BatchNorm2d eps, used if a BatchNorm module cannot be found.
constexpr double kDefaultBatchNormEps = 1e-3;
// Larger inputs would only make absurdly large anchor constants.
constexpr int kMaxImgsz = 8192;

FloatTensor ToFloatTensor(const torch::Tensor& tensor) {
  const torch::Tensor t =
      tensor.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  FloatTensor out;
  out.shape.assign(t.sizes().begin(), t.sizes().end());
  out.data.assign(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
  return out;
}

// Writes the graph of one detection model: the layers of yolov8.yaml read by
// their Ultralytics parameter names, with each BatchNorm folded into its
// convolution. Thread-compatible.
class DetectorGraphWriter {
 public:
  explicit DetectorGraphWriter(nn::DetectionModel& model)
      : builder_("yolohook_detect") {
    for (const auto& item : model->named_parameters(/*recurse=*/true)) {
      state_.emplace(item.key(), item.value().detach());
    }
    for (const auto& item : model->named_buffers(/*recurse=*/true)) {
      state_.emplace(item.key(), item.value().detach());
    }
    for (const auto& item : model->named_modules("", /*include_self=*/false)) {
      auto bn =
          std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(item.value());
      if (bn != nullptr) bn_eps_[item.key()] = bn->options.eps();
    }
  }

  // Writes layers 0-22 for (1,3,imgsz,imgsz) input; returns the class count.
  absl::StatusOr<int> Write(int imgsz) {
    const std::string images = builder_.Input("images", {1, 3, imgsz, imgsz});
    YH_ASSIGN_OR_RETURN(std::string l0, ConvBlock("model.0", images, 2));
    YH_ASSIGN_OR_RETURN(std::string l1, ConvBlock("model.1", l0, 2));
    YH_ASSIGN_OR_RETURN(std::string l2, C2f("model.2", l1, true));
    YH_ASSIGN_OR_RETURN(std::string l3, ConvBlock("model.3", l2, 2));
    YH_ASSIGN_OR_RETURN(std::string l4, C2f("model.4", l3, true));
    YH_ASSIGN_OR_RETURN(std::string l5, ConvBlock("model.5", l4, 2));
    YH_ASSIGN_OR_RETURN(std::string l6, C2f("model.6", l5, true));
    YH_ASSIGN_OR_RETURN(std::string l7, ConvBlock("model.7", l6, 2));
    YH_ASSIGN_OR_RETURN(std::string l8, C2f("model.8", l7, true));
    YH_ASSIGN_OR_RETURN(std::string l9, Sppf("model.9", l8));
    const std::string l10 = builder_.UpsampleNearest("/model.10/Resize", l9, 2);
    const std::string l11 = builder_.Concat("/model.11/Concat", {l10, l6}, 1);
    YH_ASSIGN_OR_RETURN(std::string l12, C2f("model.12", l11, false));
    const std::string l13 =
        builder_.UpsampleNearest("/model.13/Resize", l12, 2);
    const std::string l14 = builder_.Concat("/model.14/Concat", {l13, l4}, 1);
    YH_ASSIGN_OR_RETURN(std::string l15, C2f("model.15", l14, false));
    YH_ASSIGN_OR_RETURN(std::string l16, ConvBlock("model.16", l15, 2));
    const std::string l17 = builder_.Concat("/model.17/Concat", {l16, l12}, 1);
    YH_ASSIGN_OR_RETURN(std::string l18, C2f("model.18", l17, false));
    YH_ASSIGN_OR_RETURN(std::string l19, ConvBlock("model.19", l18, 2));
    const std::string l20 = builder_.Concat("/model.20/Concat", {l19, l9}, 1);
    YH_ASSIGN_OR_RETURN(std::string l21, C2f("model.21", l20, false));
    return Detect("model.22", {l15, l18, l21}, imgsz);
  }

  OnnxGraphBuilder& builder() { return builder_; }

 private:
  absl::StatusOr<torch::Tensor> Get(const std::string& name,
                                    int64_t dims) const {
    auto it = state_.find(name);
    if (it == state_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the model has no parameter or buffer ", name,
                       ": it does not follow the YOLOv8 detection layout"));
    }
    if (it->second.dim() != dims) {
      return absl::InvalidArgumentError(
          absl::StrCat("model parameter ", name, " has ", it->second.dim(),
                       " dimensions, expected ", dims));
    }
    return it->second.to(torch::kCPU, torch::kFloat64);
  }

  // The weight and bias of the convolution `prefix`.conv with the BatchNorm
  // `prefix`.bn folded in: w * g / sqrt(v + eps), b - m * g / sqrt(v + eps).
  absl::StatusOr<std::pair<torch::Tensor, torch::Tensor>> FoldedConv(
      const std::string& prefix) const {
    YH_ASSIGN_OR_RETURN(torch::Tensor w, Get(prefix + ".conv.weight", 4));
    YH_ASSIGN_OR_RETURN(torch::Tensor gamma, Get(prefix + ".bn.weight", 1));
    YH_ASSIGN_OR_RETURN(torch::Tensor beta, Get(prefix + ".bn.bias", 1));
    YH_ASSIGN_OR_RETURN(torch::Tensor mean,
                        Get(prefix + ".bn.running_mean", 1));
    YH_ASSIGN_OR_RETURN(torch::Tensor var, Get(prefix + ".bn.running_var", 1));
    const int64_t out = w.size(0);
    if (gamma.size(0) != out || beta.size(0) != out || mean.size(0) != out ||
        var.size(0) != out) {
      return absl::InvalidArgumentError(
          absl::StrCat("BatchNorm ", prefix, ".bn does not have the ", out,
                       " channels of ", prefix, ".conv"));
    }
    auto eps_it = bn_eps_.find(prefix + ".bn");
    const double eps =
        eps_it == bn_eps_.end() ? kDefaultBatchNormEps : eps_it->second;
    const torch::Tensor scale = gamma / torch::sqrt(var + eps);
    return std::make_pair(w * scale.view({-1, 1, 1, 1}), beta - mean * scale);
  }

  // Ultralytics' Conv: convolution (padding k/2) + folded BatchNorm + SiLU.
  absl::StatusOr<std::string> ConvBlock(const std::string& prefix,
                                        const std::string& x, int stride) {
    YH_ASSIGN_OR_RETURN(auto folded, FoldedConv(prefix));
    return EmitConvSilu(prefix, x, folded.first, folded.second, stride);
  }

  absl::StatusOr<std::string> EmitConvSilu(const std::string& prefix,
                                           const std::string& x,
                                           const torch::Tensor& weight,
                                           const torch::Tensor& bias,
                                           int stride) {
    const int64_t k = weight.size(2);
    const std::string name = absl::StrCat("/", prefix);
    FloatTensor b = ToFloatTensor(bias);
    const std::string conv = builder_.Conv(
        absl::StrCat(name, "/conv/Conv"), x, ToFloatTensor(weight),
        std::move(b.data), stride, static_cast<int>(k / 2));
    const std::string out = builder_.Silu(absl::StrCat(name, "/act"), conv);
    YH_RETURN_IF_ERROR(builder_.status());
    return out;
  }

  // C2f: cv1 (1x1 to 2c channels) split in halves, n Bottlenecks chained on the
  // second half, all pieces concatenated, cv2. The split is written as two
  // 1x1 convolutions over the halves of cv1's filters, which computes the same
  // and needs no Split operator (whose form changed in opset 13).
  absl::StatusOr<std::string> C2f(const std::string& prefix,
                                  const std::string& x, bool shortcut) {
    YH_ASSIGN_OR_RETURN(auto cv1, FoldedConv(prefix + ".cv1"));
    const int64_t c2 = cv1.first.size(0);
    if (c2 % 2 != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          prefix, ".cv1 has an odd number of output channels (", c2, ")"));
    }
    const int64_t c = c2 / 2;
    std::vector<std::string> pieces;
    for (int64_t half = 0; half < 2; ++half) {
      YH_ASSIGN_OR_RETURN(std::string piece,
                          EmitConvSilu(absl::StrCat(prefix, ".cv1.", half), x,
                                       cv1.first.narrow(0, half * c, c),
                                       cv1.second.narrow(0, half * c, c), 1));
      pieces.push_back(std::move(piece));
    }
    for (int j = 0;
         state_.count(absl::StrCat(prefix, ".m.", j, ".cv1.conv.weight")) > 0;
         ++j) {
      const std::string m = absl::StrCat(prefix, ".m.", j);
      YH_ASSIGN_OR_RETURN(std::string a,
                          ConvBlock(m + ".cv1", pieces.back(), 1));
      YH_ASSIGN_OR_RETURN(std::string b, ConvBlock(m + ".cv2", a, 1));
      // Bottleneck adds its input when shortcut is set and the channels match
      // (always within C2f, where it keeps c channels).
      if (shortcut && builder_.ShapeOf(b) == builder_.ShapeOf(pieces.back())) {
        b = builder_.Add(absl::StrCat("/", m, "/Add"), pieces.back(), b);
      }
      pieces.push_back(std::move(b));
    }
    if (pieces.size() == 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("the model has no bottleneck ", prefix, ".m.0"));
    }
    const std::string cat =
        builder_.Concat(absl::StrCat("/", prefix, "/Concat"), pieces, 1);
    return ConvBlock(prefix + ".cv2", cat, 1);
  }

  // SPPF: cv1, three chained 5x5 max pools (stride 1, padding 2), the four
  // maps concatenated, cv2.
  absl::StatusOr<std::string> Sppf(const std::string& prefix,
                                   const std::string& x) {
    YH_ASSIGN_OR_RETURN(std::string a, ConvBlock(prefix + ".cv1", x, 1));
    std::vector<std::string> pieces = {a};
    for (int i = 0; i < 3; ++i) {
      pieces.push_back(builder_.MaxPool(absl::StrCat("/", prefix, "/m/MaxPool"),
                                        pieces.back(), 5, 1, 2));
    }
    const std::string cat =
        builder_.Concat(absl::StrCat("/", prefix, "/Concat"), pieces, 1);
    return ConvBlock(prefix + ".cv2", cat, 1);
  }

  // A plain convolution with bias (the last layer of each head branch).
  absl::StatusOr<std::string> BiasConv(const std::string& prefix,
                                       const std::string& x) {
    YH_ASSIGN_OR_RETURN(torch::Tensor w, Get(prefix + ".weight", 4));
    YH_ASSIGN_OR_RETURN(torch::Tensor b, Get(prefix + ".bias", 1));
    const std::string out = builder_.Conv(
        absl::StrCat("/", prefix, "/Conv"), x, ToFloatTensor(w),
        ToFloatTensor(b).data, 1, static_cast<int>(w.size(2) / 2));
    YH_RETURN_IF_ERROR(builder_.status());
    return out;
  }

  // Detect: per level, the box branch cv2 (4*reg_max distribution logits) and
  // the class branch cv3 (nc logits), decoded into (1, 4+nc, h*w) and
  // concatenated over the levels into "output0".
  //
  // Box decoding per level: softmax over the reg_max bins of each side, then
  // the DFL expectation and dist2bbox, both linear, fused into one 1x1
  // convolution: for side k in (l, t, r, b) with expectation d_k,
  //   cx = s * (ax + (d_r - d_l) / 2),  cy = s * (ay + (d_b - d_t) / 2),
  //   w = s * (d_l + d_r),              h = s * (d_t + d_b),
  // where the anchor terms s * (ax, ay) = s * (cell + 0.5) are added as a
  // constant of the map's full shape (OpenCV 4.6 cannot broadcast here).
  absl::StatusOr<int> Detect(const std::string& prefix,
                             const std::vector<std::string>& features,
                             int imgsz) {
    YH_ASSIGN_OR_RETURN(torch::Tensor dfl, Get(prefix + ".dfl.conv.weight", 4));
    const int64_t reg_max = dfl.size(1);
    if (dfl.size(0) != 1 || reg_max < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(prefix, ".dfl.conv.weight is not (1, reg_max, 1, 1)"));
    }
    const torch::Tensor bins = dfl.reshape({reg_max});
    // Rows: cx, cy, w, h; columns: l, t, r, b.
    const torch::Tensor sides = torch::tensor({{-0.5, 0.0, 0.5, 0.0},
                                               {0.0, -0.5, 0.0, 0.5},
                                               {1.0, 0.0, 1.0, 0.0},
                                               {0.0, 1.0, 0.0, 1.0}},
                                              torch::kFloat64);

    std::vector<std::string> levels;
    int64_t nc = -1;
    for (size_t level = 0; level < features.size(); ++level) {
      const std::string box_prefix = absl::StrCat(prefix, ".cv2.", level);
      const std::string cls_prefix = absl::StrCat(prefix, ".cv3.", level);
      const std::string name = absl::StrCat("/", prefix, "/level", level);
      YH_ASSIGN_OR_RETURN(std::string b0,
                          ConvBlock(box_prefix + ".0", features[level], 1));
      YH_ASSIGN_OR_RETURN(std::string b1, ConvBlock(box_prefix + ".1", b0, 1));
      YH_ASSIGN_OR_RETURN(std::string box, BiasConv(box_prefix + ".2", b1));
      YH_ASSIGN_OR_RETURN(std::string c0,
                          ConvBlock(cls_prefix + ".0", features[level], 1));
      YH_ASSIGN_OR_RETURN(std::string c1, ConvBlock(cls_prefix + ".1", c0, 1));
      YH_ASSIGN_OR_RETURN(std::string cls, BiasConv(cls_prefix + ".2", c1));

      const Shape box_shape = builder_.ShapeOf(box);
      const Shape cls_shape = builder_.ShapeOf(cls);
      const int64_t h = box_shape[2];
      const int64_t w = box_shape[3];
      if (box_shape[1] != 4 * reg_max) {
        return absl::InvalidArgumentError(absl::StrCat(
            box_prefix, ".2 has ", box_shape[1],
            " output channels, expected 4 * reg_max = ", 4 * reg_max));
      }
      if (nc != -1 && cls_shape[1] != nc) {
        return absl::InvalidArgumentError(absl::StrCat(
            cls_prefix, ".2 has ", cls_shape[1], " classes, level 0 has ", nc));
      }
      nc = cls_shape[1];
      if (imgsz % h != 0 || imgsz / h != imgsz / w) {
        return absl::InvalidArgumentError(absl::StrCat(
            "level ", level, " map ", h, "x", w, " does not divide ", imgsz));
      }
      const double stride = static_cast<double>(imgsz / h);

      // (1, 4R, h, w) -> (1, 4, h*w, R): the bins last, for the softmax.
      std::string dist =
          builder_.Reshape(name + "/dfl/Reshape", box, {1, 4, reg_max, h * w});
      dist = builder_.Transpose(name + "/dfl/Transpose", dist, {0, 1, 3, 2});
      dist = builder_.SoftmaxLastAxis(name + "/dfl/Softmax", dist);
      dist = builder_.Transpose(name + "/dfl/Transpose", dist, {0, 1, 3, 2});
      dist =
          builder_.Reshape(name + "/dfl/Reshape", dist, {1, 4 * reg_max, h, w});
      // weight[j, k * R + i] = stride * sides[j, k] * bins[i].
      const torch::Tensor fused =
          (stride * sides.view({4, 4, 1}) * bins.view({1, 1, reg_max}))
              .reshape({4, 4 * reg_max, 1, 1});
      std::string xywh =
          builder_.Conv(name + "/decode/Conv", dist, ToFloatTensor(fused),
                        /*bias=*/{}, 1, 0);
      FloatTensor anchors{{1, 4, h, w}, std::vector<float>(4 * h * w, 0.0f)};
      for (int64_t y = 0; y < h; ++y) {
        for (int64_t x = 0; x < w; ++x) {
          anchors.data[y * w + x] = static_cast<float>((x + 0.5) * stride);
          anchors.data[h * w + y * w + x] =
              static_cast<float>((y + 0.5) * stride);
        }
      }
      const std::string anchor_values =
          builder_.Constant(name + "/anchors", std::move(anchors));
      xywh = builder_.Add(name + "/decode/Add", xywh, anchor_values);

      const std::string probs = builder_.Sigmoid(name + "/Sigmoid", cls);
      const std::string cat =
          builder_.Concat(name + "/Concat", {xywh, probs}, 1);
      levels.push_back(
          builder_.Reshape(name + "/Reshape", cat, {1, 4 + nc, h * w}));
      YH_RETURN_IF_ERROR(builder_.status());
    }
    builder_.Output(builder_.Concat("output0", levels, 2));
    YH_RETURN_IF_ERROR(builder_.status());
    return static_cast<int>(nc);
  }

  OnnxGraphBuilder builder_;
  std::map<std::string, torch::Tensor> state_;
  std::map<std::string, double> bn_eps_;
};

// The metadata to write: the caller's, with defaults for missing keys and the
// exported size. Errors: INVALID_ARGUMENT for names that do not fit nc.
absl::StatusOr<std::map<std::string, std::string>> CompleteMetadata(
    const OnnxExportOptions& options, int nc) {
  std::map<std::string, std::string> metadata = options.metadata;
  metadata.emplace(kMetadataTask, "detect");
  metadata.emplace(kMetadataStride, "32");
  metadata.emplace(kMetadataBatch, "1");
  metadata.emplace(kMetadataNames, FormatNames(DefaultNames(nc)));
  metadata[kMetadataImgsz] = FormatImgsz(options.imgsz);
  absl::StatusOr<std::vector<std::string>> names =
      ParseNames(metadata[kMetadataNames]);
  if (!names.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("metadata names: ", names.status().message()));
  }
  if (static_cast<int>(names->size()) != nc) {
    return absl::InvalidArgumentError(
        absl::StrCat("metadata names has ", names->size(),
                     " classes but the model has ", nc));
  }
  return metadata;
}

absl::Status WriteError(const std::string& path, int error) {
  const std::string message =
      absl::StrCat("cannot write ", path, ": ", std::strerror(error));
  if (error == EACCES || error == EPERM || error == EROFS) {
    return absl::PermissionDeniedError(message);
  }
  return absl::InternalError(message);
}

absl::Status WriteModel(const onnx::ModelProto& model,
                        const std::string& path) {
  const std::string partial = path + ".partial";
  {
    errno = 0;
    std::ofstream out(partial, std::ios::binary | std::ios::trunc);
    if (!out) return WriteError(path, errno != 0 ? errno : EIO);
    if (!model.SerializeToOstream(&out)) {
      const int error = errno != 0 ? errno : EIO;
      std::remove(partial.c_str());
      return WriteError(path, error);
    }
    out.close();
    if (!out) {
      const int error = errno != 0 ? errno : EIO;
      std::remove(partial.c_str());
      return WriteError(path, error);
    }
  }
  if (std::rename(partial.c_str(), path.c_str()) != 0) {
    const int error = errno;
    std::remove(partial.c_str());
    return WriteError(path, error);
  }
  return absl::OkStatus();
}

absl::Status ExportOnnxOrThrow(nn::DetectionModel& model,
                               const OnnxExportOptions& options,
                               const std::string& path) {
  torch::NoGradGuard no_grad;
  DetectorGraphWriter writer(model);
  YH_ASSIGN_OR_RETURN(const int nc, writer.Write(options.imgsz));

  OnnxModelInfo info;
  info.opset = options.opset;
  YH_ASSIGN_OR_RETURN(info.metadata, CompleteMetadata(options, nc));
  info.producer_name = "yolohook";
  if (auto it = info.metadata.find("version"); it != info.metadata.end()) {
    info.producer_version = it->second;
  }
  if (auto it = info.metadata.find("description"); it != info.metadata.end()) {
    info.doc_string = it->second;
  }
  YH_ASSIGN_OR_RETURN(onnx::ModelProto proto,
                      std::move(writer.builder()).Finish(info));
  return WriteModel(proto, path);
}

}  // namespace

absl::Status ExportOnnx(nn::DetectionModel& model,
                        const OnnxExportOptions& options,
                        const std::string& path) {
  if (options.imgsz < 32 || options.imgsz > kMaxImgsz ||
      options.imgsz % 32 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("imgsz=", options.imgsz,
                     " is not a multiple of 32 between 32 and ", kMaxImgsz));
  }
  if (options.opset < 11 || options.opset > 13) {
    return absl::InvalidArgumentError(absl::StrCat(
        "opset=", options.opset, " is not supported: use 11, 12 or 13"));
  }
  if (path.empty()) {
    return absl::InvalidArgumentError("the ONNX output path is empty");
  }
  try {
    absl::Status status = ExportOnnxOrThrow(model, options, path);
    if (!status.ok()) {
      return absl::Status(status.code(), absl::StrCat("exporting ", path, ": ",
                                                      status.message()));
    }
    return status;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(
        "exporting ", path, ": LibTorch error: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("exporting ", path, ": ", e.what()));
  }
}

}  // namespace yolohook::exporter
