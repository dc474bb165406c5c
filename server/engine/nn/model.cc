#include "server/engine/nn/model.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/engine/nn/ops.h"

namespace yolohook::nn {
namespace {

namespace tnn = torch::nn;

// Conv2d (no bias) + BatchNorm2d + SiLU, "same" padding for odd kernels.
class ConvImpl : public tnn::Module {
 public:
  ConvImpl(int64_t c1, int64_t c2, int64_t k = 1, int64_t s = 1)
      : conv_(register_module(
            "conv",
            tnn::Conv2d(
                tnn::Conv2dOptions(c1, c2, k).stride(s).padding(k / 2).bias(
                    false)))),
        bn_(register_module(
            "bn", tnn::BatchNorm2d(
                      tnn::BatchNorm2dOptions(c2).eps(1e-3).momentum(0.03)))) {}

  torch::Tensor forward(const torch::Tensor& x) {
    return torch::silu(bn_(conv_(x)));
  }

 private:
  tnn::Conv2d conv_;
  tnn::BatchNorm2d bn_;
};
TORCH_MODULE(Conv);

// Two 3x3 Convs with an optional residual connection.
class BottleneckImpl : public tnn::Module {
 public:
  BottleneckImpl(int64_t c1, int64_t c2, bool shortcut)
      : cv1_(register_module("cv1", Conv(c1, c2, 3))),
        cv2_(register_module("cv2", Conv(c2, c2, 3))),
        add_(shortcut && c1 == c2) {}

  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor y = cv2_(cv1_(x));
    return add_ ? x + y : y;
  }

 private:
  Conv cv1_, cv2_;
  bool add_;
};
TORCH_MODULE(Bottleneck);

// CSP bottleneck with two convolutions: every Bottleneck's output is kept and
// concatenated before the final 1x1 Conv.
class C2fImpl : public tnn::Module {
 public:
  C2fImpl(int64_t c1, int64_t c2, int64_t n, bool shortcut)
      : c_(static_cast<int64_t>(static_cast<double>(c2) * 0.5)),
        cv1_(register_module("cv1", Conv(c1, 2 * c_, 1))),
        cv2_(register_module("cv2", Conv((2 + n) * c_, c2, 1))),
        m_(register_module("m", tnn::ModuleList())) {
    for (int64_t i = 0; i < n; ++i) {
      m_->push_back(Bottleneck(c_, c_, shortcut));
    }
  }

  torch::Tensor forward(const torch::Tensor& x) {
    std::vector<torch::Tensor> y = cv1_(x).chunk(2, 1);
    y.reserve(2 + m_->size());
    for (const auto& block : *m_) {
      y.push_back(block->as<BottleneckImpl>()->forward(y.back()));
    }
    return cv2_(torch::cat(y, 1));
  }

 private:
  int64_t c_;
  Conv cv1_, cv2_;
  tnn::ModuleList m_;
};
TORCH_MODULE(C2f);

// Spatial pyramid pooling, fast: three chained k x k max pools.
class SPPFImpl : public tnn::Module {
 public:
  SPPFImpl(int64_t c1, int64_t c2, int64_t k)
      : cv1_(register_module("cv1", Conv(c1, c1 / 2, 1))),
        cv2_(register_module("cv2", Conv(c1 / 2 * 4, c2, 1))),
        m_(register_module(
            "m", tnn::MaxPool2d(
                     tnn::MaxPool2dOptions(k).stride(1).padding(k / 2)))) {}

  torch::Tensor forward(const torch::Tensor& x) {
    std::vector<torch::Tensor> y = {cv1_(x)};
    for (int i = 0; i < 3; ++i) y.push_back(m_(y.back()));
    return cv2_(torch::cat(y, 1));
  }

 private:
  Conv cv1_, cv2_;
  tnn::MaxPool2d m_;
};
TORCH_MODULE(SPPF);

// Channel concatenation (parameterless; the inputs are chosen by the model).
class ConcatImpl : public tnn::Module {
 public:
  torch::Tensor forward(const std::vector<torch::Tensor>& xs) {
    return torch::cat(xs, 1);
  }
};
TORCH_MODULE(Concat);

// Distribution focal loss integral: expectation of a reg_max-bin softmax, as a
// frozen 1x1 convolution with weights 0..reg_max-1.
class DFLImpl : public tnn::Module {
 public:
  explicit DFLImpl(int64_t reg_max)
      : reg_max_(reg_max),
        conv_(register_module(
            "conv",
            tnn::Conv2d(tnn::Conv2dOptions(reg_max, 1, 1).bias(false)))) {
    torch::NoGradGuard no_grad;
    conv_->weight.copy_(
        torch::arange(reg_max, torch::kFloat).view({1, reg_max, 1, 1}));
    conv_->weight.set_requires_grad(false);
  }

  // x (B, 4*reg_max, A) logits -> (B, 4, A) expected distances in bins.
  torch::Tensor forward(const torch::Tensor& x) {
    const int64_t b = x.size(0);
    const int64_t a = x.size(2);
    torch::Tensor p = x.view({b, 4, reg_max_, a}).transpose(2, 1).softmax(1);
    return conv_(p).view({b, 4, a});
  }

  const torch::Tensor& weight() const { return conv_->weight; }

 private:
  int64_t reg_max_;
  tnn::Conv2d conv_;
};
TORCH_MODULE(DFL);

tnn::Sequential HeadBranch(int64_t c_in, int64_t c_mid, int64_t c_out) {
  return tnn::Sequential(
      Conv(c_in, c_mid, 3), Conv(c_mid, c_mid, 3),
      tnn::Conv2d(tnn::Conv2dOptions(c_mid, c_out, 1).bias(true)));
}

// The decoupled detection head: per level a box branch (cv2) and a class
// branch (cv3), plus the DFL integral.
class DetectImpl : public tnn::Module {
 public:
  DetectImpl(int64_t nc, int64_t reg_max, const std::vector<int64_t>& ch)
      : nc_(nc), reg_max_(reg_max) {
    const int64_t c2 = std::max({int64_t{16}, ch[0] / 4, reg_max * 4});
    const int64_t c3 = std::max(ch[0], std::min(nc, int64_t{100}));
    cv2_ = register_module("cv2", tnn::ModuleList());
    cv3_ = register_module("cv3", tnn::ModuleList());
    for (int64_t c : ch) {
      cv2_->push_back(HeadBranch(c, c2, 4 * reg_max));
      cv3_->push_back(HeadBranch(c, c3, nc));
    }
    dfl_ = register_module("dfl", DFL(reg_max));
    InitBiases();
  }

  std::vector<torch::Tensor> forward(const std::vector<torch::Tensor>& xs) {
    std::vector<torch::Tensor> out;
    out.reserve(xs.size());
    for (size_t i = 0; i < xs.size(); ++i) {
      out.push_back(
          torch::cat({cv2_->ptr(i)->as<tnn::SequentialImpl>()->forward(xs[i]),
                      cv3_->ptr(i)->as<tnn::SequentialImpl>()->forward(xs[i])},
                     1));
    }
    return out;
  }

  DFLImpl& dfl() const { return *dfl_.ptr(); }

 private:
  // Box logits start at 1.0; class logits at a prior of 5 objects per 640x640
  // image spread over nc classes and the level's cells.
  void InitBiases() {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < cv2_->size(); ++i) {
      auto* box =
          (*cv2_->ptr(i)->as<tnn::SequentialImpl>())[2]->as<tnn::Conv2dImpl>();
      box->bias.fill_(1.0);
      auto* cls =
          (*cv3_->ptr(i)->as<tnn::SequentialImpl>())[2]->as<tnn::Conv2dImpl>();
      const double cells = std::pow(
          640.0 / static_cast<double>(DetectionModelImpl::kStrides[i]), 2.0);
      cls->bias.fill_(std::log(5.0 / static_cast<double>(nc_) / cells));
    }
  }

  int64_t nc_;
  int64_t reg_max_;
  tnn::ModuleList cv2_{nullptr};
  tnn::ModuleList cv3_{nullptr};
  DFL dfl_{nullptr};
};
TORCH_MODULE(Detect);

tnn::Upsample Upsample2x() {
  return tnn::Upsample(tnn::UpsampleOptions()
                           .scale_factor(std::vector<double>{2.0, 2.0})
                           .mode(torch::kNearest));
}

}  // namespace

int64_t ScaledChannels(int64_t channels, const ModelOptions& options) {
  const double c =
      static_cast<double>(std::min<int64_t>(channels, options.max_channels)) *
      options.width_multiple;
  return static_cast<int64_t>(std::ceil(c / 8.0)) * 8;
}

int64_t ScaledRepeats(int64_t repeats, const ModelOptions& options) {
  if (repeats <= 1) return repeats;
  // Python's round() rounds half to even; std::nearbyint does the same under
  // the default rounding mode.
  const auto n = static_cast<int64_t>(
      std::nearbyint(static_cast<double>(repeats) * options.depth_multiple));
  return std::max<int64_t>(n, 1);
}

absl::StatusOr<ModelOptions> ScaleOptions(absl::string_view scale, int nc) {
  if (nc < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("nc must be at least 1, got ", nc));
  }
  ModelOptions options;
  options.nc = nc;
  options.scale = std::string(scale);
  if (scale == "n") {
    options.depth_multiple = 0.33;
    options.width_multiple = 0.25;
    options.max_channels = 1024;
  } else if (scale == "s") {
    options.depth_multiple = 0.33;
    options.width_multiple = 0.50;
    options.max_channels = 1024;
  } else if (scale == "m") {
    options.depth_multiple = 0.67;
    options.width_multiple = 0.75;
    options.max_channels = 768;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown model scale '", scale, "': valid scales are n, s and m"));
  }
  return options;
}

absl::Status ValidateModelOptions(const ModelOptions& options) {
  if (!(options.depth_multiple > 0) || !std::isfinite(options.depth_multiple)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "depth_multiple must be positive, got ", options.depth_multiple));
  }
  if (!(options.width_multiple > 0) || !std::isfinite(options.width_multiple)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "width_multiple must be positive, got ", options.width_multiple));
  }
  if (options.max_channels < 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_channels must be at least 8, got ", options.max_channels));
  }
  if (options.nc < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("nc must be at least 1, got ", options.nc));
  }
  if (options.reg_max < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("reg_max must be at least 1, got ", options.reg_max));
  }
  return absl::OkStatus();
}

absl::StatusOr<DetectionModel> MakeDetectionModel(const ModelOptions& options) {
  absl::Status status = ValidateModelOptions(options);
  if (!status.ok()) return status;
  try {
    return DetectionModel(options);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot build the model: ", e.what_without_backtrace()));
  }
}

DetectionModelImpl::DetectionModelImpl(const ModelOptions& options)
    : options_(options), model_(register_module("model", tnn::ModuleList())) {
  const auto ch = [&](int64_t c) { return ScaledChannels(c, options_); };
  const auto n = [&](int64_t r) { return ScaledRepeats(r, options_); };
  const int64_t c64 = ch(64), c128 = ch(128), c256 = ch(256), c512 = ch(512),
                c1024 = ch(1024);
  // Backbone.
  model_->push_back(Conv(3, c64, 3, 2));             // 0  P1/2
  model_->push_back(Conv(c64, c128, 3, 2));          // 1  P2/4
  model_->push_back(C2f(c128, c128, n(3), true));    // 2
  model_->push_back(Conv(c128, c256, 3, 2));         // 3  P3/8
  model_->push_back(C2f(c256, c256, n(6), true));    // 4
  model_->push_back(Conv(c256, c512, 3, 2));         // 5  P4/16
  model_->push_back(C2f(c512, c512, n(6), true));    // 6
  model_->push_back(Conv(c512, c1024, 3, 2));        // 7  P5/32
  model_->push_back(C2f(c1024, c1024, n(3), true));  // 8
  model_->push_back(SPPF(c1024, c1024, 5));          // 9
  // Neck.
  model_->push_back(Upsample2x());                           // 10
  model_->push_back(Concat());                               // 11 cat 6
  model_->push_back(C2f(c1024 + c512, c512, n(3), false));   // 12
  model_->push_back(Upsample2x());                           // 13
  model_->push_back(Concat());                               // 14 cat 4
  model_->push_back(C2f(c512 + c256, c256, n(3), false));    // 15 P3 out
  model_->push_back(Conv(c256, c256, 3, 2));                 // 16
  model_->push_back(Concat());                               // 17 cat 12
  model_->push_back(C2f(c256 + c512, c512, n(3), false));    // 18 P4 out
  model_->push_back(Conv(c512, c512, 3, 2));                 // 19
  model_->push_back(Concat());                               // 20 cat 9
  model_->push_back(C2f(c512 + c1024, c1024, n(3), false));  // 21 P5 out
  model_->push_back(Detect(options_.nc, options_.reg_max,
                           std::vector<int64_t>{c256, c512, c1024}));  // 22
}

std::vector<torch::Tensor> DetectionModelImpl::ForwardRaw(
    const torch::Tensor& images) {
  auto conv = [&](size_t i, const torch::Tensor& x) {
    return model_->ptr(i)->as<ConvImpl>()->forward(x);
  };
  auto c2f = [&](size_t i, const torch::Tensor& x) {
    return model_->ptr(i)->as<C2fImpl>()->forward(x);
  };
  auto up = [&](size_t i, const torch::Tensor& x) {
    return model_->ptr(i)->as<tnn::UpsampleImpl>()->forward(x);
  };
  auto cat = [&](size_t i, const torch::Tensor& a, const torch::Tensor& b) {
    return model_->ptr(i)->as<ConcatImpl>()->forward({a, b});
  };
  torch::Tensor x = conv(1, conv(0, images));
  x = c2f(2, x);
  const torch::Tensor p3 = c2f(4, conv(3, x));
  const torch::Tensor p4 = c2f(6, conv(5, p3));
  x = c2f(8, conv(7, p4));
  const torch::Tensor p5 = model_->ptr(9)->as<SPPFImpl>()->forward(x);
  const torch::Tensor h12 = c2f(12, cat(11, up(10, p5), p4));
  const torch::Tensor h15 = c2f(15, cat(14, up(13, h12), p3));
  const torch::Tensor h18 = c2f(18, cat(17, conv(16, h15), h12));
  const torch::Tensor h21 = c2f(21, cat(20, conv(19, h18), p5));
  return model_->ptr(22)->as<DetectImpl>()->forward({h15, h18, h21});
}

torch::Tensor DetectionModelImpl::Decode(
    const std::vector<torch::Tensor>& raw) const {
  TORCH_CHECK(raw.size() == kStrides.size(),
              "Decode: expected 3 head maps, got ", raw.size());
  const int64_t b = raw[0].size(0);
  const int64_t no = 4 * options_.reg_max + options_.nc;
  std::vector<torch::Tensor> flat;
  flat.reserve(raw.size());
  for (const torch::Tensor& r : raw) flat.push_back(r.reshape({b, no, -1}));
  const torch::Tensor x = torch::cat(flat, 2);
  std::vector<torch::Tensor> parts =
      x.split_with_sizes({4 * options_.reg_max, options_.nc}, 1);
  auto [anchors, strides] = MakeAnchors(raw, kStrides, 0.5);
  // (B,4,A) distances in cells -> (B,A,4) so Dist2Bbox works on the last dim.
  const torch::Tensor dist =
      model_->ptr(22)->as<DetectImpl>()->dfl().forward(parts[0]).transpose(1,
                                                                           2);
  const torch::Tensor boxes =
      Dist2Bbox(dist, anchors.unsqueeze(0), /*xywh=*/true) *
      strides.unsqueeze(0);
  return torch::cat({boxes.transpose(1, 2), parts[1].sigmoid()}, 1);
}

int64_t DetectionModelImpl::NumParameters() const {
  int64_t total = 0;
  for (const torch::Tensor& p : parameters(/*recurse=*/true)) {
    total += p.numel();
  }
  return total;
}

DetectionModelImpl::ParamGroups DetectionModelImpl::GroupParameters() {
  ParamGroups groups;
  for (const auto& item : named_modules()) {
    const std::shared_ptr<tnn::Module>& module = item.value();
    const bool is_norm = module->as<tnn::BatchNorm2dImpl>() != nullptr;
    for (const auto& param : module->named_parameters(/*recurse=*/false)) {
      const torch::Tensor& t = param.value();
      if (!t.requires_grad()) continue;  // the frozen DFL weight
      if (param.key() == "bias") {
        groups.bias.push_back(t);
      } else if (is_norm) {
        groups.norm.push_back(t);
      } else {
        groups.decay.push_back(t);
      }
    }
  }
  return groups;
}

void DetectionModelImpl::CopyFrom(const DetectionModelImpl& other) {
  torch::NoGradGuard no_grad;
  const auto src_params = other.named_parameters(/*recurse=*/true);
  for (auto& dst : named_parameters(/*recurse=*/true)) {
    dst.value().copy_(src_params[dst.key()]);
  }
  const auto src_buffers = other.named_buffers(/*recurse=*/true);
  for (auto& dst : named_buffers(/*recurse=*/true)) {
    dst.value().copy_(src_buffers[dst.key()]);
  }
}

absl::Status DetectionModelImpl::CheckImages(const torch::Tensor& images) {
  if (!images.defined()) {
    return absl::InvalidArgumentError("images tensor is undefined");
  }
  if (images.dim() != 4 || images.size(1) != 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "images must be (B,3,H,W), got ", c10::str(images.sizes())));
  }
  if (!images.is_floating_point()) {
    return absl::InvalidArgumentError(
        absl::StrCat("images must be floating point, got ",
                     std::string(c10::toString(images.scalar_type()))));
  }
  const int64_t h = images.size(2), w = images.size(3);
  if (images.size(0) < 1 || h < 32 || w < 32 || h % 32 != 0 || w % 32 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("images must have B >= 1 and H, W positive multiples of "
                     "32, got ",
                     c10::str(images.sizes())));
  }
  return absl::OkStatus();
}

absl::Status DetectionModelImpl::CheckRaw(
    const std::vector<torch::Tensor>& raw) const {
  if (raw.size() != kStrides.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected 3 head maps, got ", raw.size()));
  }
  const int64_t no = 4 * options_.reg_max + options_.nc;
  for (size_t i = 0; i < raw.size(); ++i) {
    const torch::Tensor& r = raw[i];
    if (!r.defined() || r.dim() != 4 || r.size(1) != no ||
        r.size(0) != raw[0].size(0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "head map ", i, " must be (B,", no, ",h,w), got ",
          r.defined() ? c10::str(r.sizes()) : std::string("undefined")));
    }
  }
  return absl::OkStatus();
}

}  // namespace yolohook::nn
