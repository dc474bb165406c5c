#include "server/engine/nn/loss.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "server/engine/nn/model.h"
#include "server/engine/nn/ops.h"

namespace yolohook::nn {
namespace {

using torch::indexing::Slice;

// (B,M,A) bool: anchor centres strictly inside each gt box (by more than eps).
torch::Tensor CandidatesInGts(const torch::Tensor& anc_points,
                              const torch::Tensor& gt_bboxes, double eps) {
  const torch::Tensor points = anc_points.view({1, 1, -1, 2});
  const torch::Tensor lt = gt_bboxes.narrow(-1, 0, 2).unsqueeze(2);
  const torch::Tensor rb = gt_bboxes.narrow(-1, 2, 2).unsqueeze(2);
  return torch::cat({points - lt, rb - points}, -1).amin(-1) > eps;
}

// Distribution focal loss of (K*4, R) bin logits against (K,4) fractional
// targets in [0, R-1): cross-entropy on the two neighbouring bins, weighted by
// proximity, averaged over the four sides -> (K,1).
torch::Tensor DistributionFocalLoss(const torch::Tensor& pred_dist,
                                    const torch::Tensor& target) {
  namespace F = torch::nn::functional;
  const torch::Tensor tl = target.to(torch::kLong);
  const torch::Tensor tr = tl + 1;
  const torch::Tensor wl = tr.to(target.dtype()) - target;
  const torch::Tensor wr = 1 - wl;
  const auto none = F::CrossEntropyFuncOptions().reduction(torch::kNone);
  const torch::Tensor left =
      F::cross_entropy(pred_dist, tl.view(-1), none).view(tl.sizes());
  const torch::Tensor right =
      F::cross_entropy(pred_dist, tr.view(-1), none).view(tl.sizes());
  return (left * wl + right * wr).mean(-1, /*keepdim=*/true);
}

}  // namespace

TaskAlignedAssigner::TaskAlignedAssigner(int num_classes,
                                         AssignerOptions options)
    : num_classes_(num_classes), options_(options) {}

AssignResult TaskAlignedAssigner::Assign(const torch::Tensor& pd_scores,
                                         const torch::Tensor& pd_bboxes,
                                         const torch::Tensor& anc_points,
                                         const torch::Tensor& gt_labels,
                                         const torch::Tensor& gt_bboxes,
                                         const torch::Tensor& mask_gt) const {
  torch::NoGradGuard no_grad;
  const int64_t b = pd_scores.size(0);
  const int64_t a = pd_scores.size(1);
  const int64_t m = gt_bboxes.size(1);
  const auto long_opts =
      torch::TensorOptions().dtype(torch::kLong).device(pd_scores.device());
  AssignResult result;
  if (m == 0 || a == 0) {
    result.target_labels = torch::full({b, a}, num_classes_, long_opts);
    result.target_bboxes = torch::zeros_like(pd_bboxes);
    result.target_scores = torch::zeros_like(pd_scores);
    result.fg_mask = torch::zeros({b, a}, long_opts.dtype(torch::kBool));
    result.target_gt_idx = torch::zeros({b, a}, long_opts);
    return result;
  }
  const auto dtype = pd_scores.scalar_type();
  const torch::Tensor gt_valid = mask_gt.to(torch::kBool);  // (B,M,1)
  const torch::Tensor labels =
      gt_labels.to(torch::kLong).view({b, m}).clamp(0, num_classes_ - 1);

  // Candidates: anchors inside a real gt.
  const torch::Tensor in_gts =
      CandidatesInGts(anc_points.to(gt_bboxes.dtype()), gt_bboxes,
                      options_.eps) &
      gt_valid;  // (B,M,A)

  // Class score of each anchor for each gt's class, and CIoU with the gt, on
  // candidates only (the rest stays 0).
  const torch::Tensor scores_for_gt = pd_scores.transpose(1, 2).gather(
      1, labels.unsqueeze(-1).expand({b, m, a}));  // (B,M,A)
  const torch::Tensor cand = in_gts.nonzero();     // (K,3): b, m, a
  torch::Tensor overlaps = torch::zeros({b, m, a}, pd_scores.options());
  if (cand.size(0) > 0) {
    const torch::Tensor bi = cand.select(1, 0);
    const torch::Tensor mi = cand.select(1, 1);
    const torch::Tensor ai = cand.select(1, 2);
    const torch::Tensor gt_boxes =
        gt_bboxes.index({bi, mi}).to(dtype);  // (K,4)
    const torch::Tensor pd_boxes = pd_bboxes.index({bi, ai}).to(dtype);
    const torch::Tensor ciou = BboxCiou(gt_boxes, pd_boxes).squeeze(-1);
    overlaps.index_put_({bi, mi, ai}, ciou.clamp_min(0));
  }
  const torch::Tensor bbox_scores =
      torch::where(in_gts, scores_for_gt, torch::zeros_like(scores_for_gt));
  torch::Tensor align_metric =
      bbox_scores.pow(options_.alpha) * overlaps.pow(options_.beta);

  // Top-k candidates per gt by align metric.
  const int64_t k = std::min<int64_t>(options_.topk, a);
  const torch::Tensor topk_idx =
      std::get<1>(align_metric.topk(k, -1, /*largest=*/true));
  const torch::Tensor in_topk =
      torch::zeros({b, m, a}, pd_scores.options()).scatter_(-1, topk_idx, 1.0);
  torch::Tensor mask_pos = in_topk * in_gts.to(dtype);  // (B,M,A)

  // An anchor claimed by several gts goes to the gt it overlaps most.
  torch::Tensor fg = mask_pos.sum(1);  // (B,A)
  if (fg.max().item<double>() > 1) {
    const torch::Tensor multi = (fg.unsqueeze(1) > 1).expand({b, m, a});
    const torch::Tensor best = overlaps.argmax(1, /*keepdim=*/true);  // (B,1,A)
    const torch::Tensor is_best =
        torch::zeros_like(mask_pos).scatter_(1, best, 1.0);
    mask_pos = torch::where(multi, is_best, mask_pos);
    fg = mask_pos.sum(1);
  }
  const torch::Tensor fg_mask = fg > 0;                    // (B,A)
  const torch::Tensor target_gt_idx = mask_pos.argmax(1);  // (B,A)

  // Targets of the assigned gts.
  const torch::Tensor flat_idx =
      target_gt_idx + torch::arange(b, long_opts).unsqueeze(1) * m;
  const torch::Tensor target_labels =
      labels.reshape({-1}).index_select(0, flat_idx.view(-1)).view({b, a});
  const torch::Tensor target_bboxes = gt_bboxes.reshape({-1, 4})
                                          .index_select(0, flat_idx.view(-1))
                                          .view({b, a, 4});
  torch::Tensor target_scores =
      torch::one_hot(target_labels, num_classes_).to(dtype) *
      fg_mask.unsqueeze(-1).to(dtype);

  // Normalise: each positive's metric scaled so the gt's best positive gets
  // the gt's best IoU.
  align_metric = align_metric * mask_pos;
  const torch::Tensor pos_align = align_metric.amax(-1, /*keepdim=*/true);
  const torch::Tensor pos_overlaps =
      (overlaps * mask_pos).amax(-1, /*keepdim=*/true);
  const torch::Tensor norm =
      (align_metric * pos_overlaps / (pos_align + options_.eps))
          .amax(-2)
          .unsqueeze(-1);  // (B,A,1)
  target_scores = target_scores * norm;

  result.target_labels = target_labels;
  result.target_bboxes = target_bboxes;
  result.target_scores = target_scores;
  result.fg_mask = fg_mask;
  result.target_gt_idx = target_gt_idx;
  return result;
}

DetectionLoss::DetectionLoss(int nc, int reg_max, AssignerOptions assigner)
    : nc_(nc), reg_max_(reg_max), assigner_(nc, assigner) {}

LossOutput DetectionLoss::Compute(const std::vector<torch::Tensor>& raw,
                                  const torch::Tensor& targets,
                                  const LossGains& gains) const {
  TORCH_CHECK(raw.size() == DetectionModelImpl::kStrides.size(),
              "DetectionLoss: expected 3 head maps, got ", raw.size());
  const int64_t b = raw[0].size(0);
  const int64_t no = 4 * reg_max_ + nc_;
  std::vector<torch::Tensor> flat;
  flat.reserve(raw.size());
  for (const torch::Tensor& r : raw) flat.push_back(r.reshape({b, no, -1}));
  const std::vector<torch::Tensor> parts =
      torch::cat(flat, 2).split_with_sizes({4 * reg_max_, nc_}, 1);
  const torch::Tensor pred_distri = parts[0].permute({0, 2, 1}).contiguous();
  const torch::Tensor pred_scores = parts[1].permute({0, 2, 1}).contiguous();
  const auto dtype = pred_scores.scalar_type();
  const int64_t a = pred_scores.size(1);

  const double img_h = static_cast<double>(raw[0].size(2) * 8);
  const double img_w = static_cast<double>(raw[0].size(3) * 8);
  auto [anchor_points, stride_tensor] =
      MakeAnchors(raw, DetectionModelImpl::kStrides, 0.5);

  // Targets -> (B, M, 5) [cls, x1, y1, x2, y2] in pixels, zero-padded.
  torch::Tensor gt;
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor t =
        targets.to(pred_scores.device(), dtype).view({-1, 6});
    if (t.size(0) == 0) {
      gt = torch::zeros({b, 0, 5}, pred_scores.options());
    } else {
      const torch::Tensor batch_idx = t.select(1, 0).to(torch::kLong);
      const torch::Tensor counts = torch::bincount(batch_idx, {}, b);
      const int64_t m = counts.max().item<int64_t>();
      gt = torch::zeros({b, m, 5}, pred_scores.options());
      for (int64_t j = 0; j < b; ++j) {
        const torch::Tensor rows = t.index({batch_idx == j}).narrow(1, 1, 5);
        if (rows.size(0) > 0) {
          gt[j].narrow(0, 0, rows.size(0)).copy_(rows);
        }
      }
      const torch::Tensor scale =
          torch::tensor({img_w, img_h, img_w, img_h}, pred_scores.options());
      gt.narrow(2, 1, 4).copy_(XywhToXyxy(gt.narrow(2, 1, 4) * scale));
    }
  }
  const torch::Tensor gt_labels = gt.narrow(2, 0, 1);
  const torch::Tensor gt_bboxes = gt.narrow(2, 1, 4);
  const torch::Tensor mask_gt = gt_bboxes.sum(2, /*keepdim=*/true) > 0;

  // Predicted boxes in grid units: DFL expectation, then distances -> xyxy.
  const torch::Tensor proj = torch::arange(reg_max_, pred_scores.options());
  const torch::Tensor pred_dist =
      pred_distri.view({b, a, 4, reg_max_}).softmax(3).matmul(proj);
  const torch::Tensor pred_bboxes =
      Dist2Bbox(pred_dist, anchor_points, /*xywh=*/false);  // (B,A,4)

  const AssignResult assigned = assigner_.Assign(
      pred_scores.detach().sigmoid(),
      (pred_bboxes.detach() * stride_tensor).to(gt_bboxes.dtype()),
      anchor_points * stride_tensor, gt_labels, gt_bboxes, mask_gt);
  const torch::Tensor& target_scores = assigned.target_scores;
  const torch::Tensor& fg_mask = assigned.fg_mask;
  const torch::Tensor target_scores_sum = target_scores.sum().clamp_min(1.0);

  namespace F = torch::nn::functional;
  const torch::Tensor loss_cls =
      F::binary_cross_entropy_with_logits(
          pred_scores, target_scores.to(dtype),
          F::BinaryCrossEntropyWithLogitsFuncOptions().reduction(torch::kNone))
          .sum() /
      target_scores_sum;

  torch::Tensor loss_box = torch::zeros({}, pred_scores.options());
  torch::Tensor loss_dfl = torch::zeros({}, pred_scores.options());
  if (fg_mask.any().item<bool>()) {
    const torch::Tensor target_bboxes =
        assigned.target_bboxes / stride_tensor;  // grid units
    const torch::Tensor weight =
        target_scores.sum(-1).index({fg_mask}).unsqueeze(-1);  // (K,1)
    const torch::Tensor iou =
        BboxCiou(pred_bboxes.index({fg_mask}), target_bboxes.index({fg_mask}));
    loss_box = ((1.0 - iou) * weight).sum() / target_scores_sum;
    const torch::Tensor target_ltrb = Bbox2Dist(
        anchor_points, target_bboxes, static_cast<double>(reg_max_) - 1 - 0.01);
    const torch::Tensor dfl =
        DistributionFocalLoss(pred_distri.index({fg_mask}).view({-1, reg_max_}),
                              target_ltrb.index({fg_mask}));
    loss_dfl = (dfl * weight).sum() / target_scores_sum;
  }

  const torch::Tensor box = loss_box * gains.box;
  const torch::Tensor cls = loss_cls * gains.cls;
  const torch::Tensor dfl = loss_dfl * gains.dfl;
  LossOutput out;
  out.total = (box + cls + dfl) * static_cast<double>(b);
  out.items = torch::stack({box, cls, dfl}).detach();
  return out;
}

absl::Status DetectionLoss::CheckInputs(const std::vector<torch::Tensor>& raw,
                                        const torch::Tensor& targets) const {
  if (raw.size() != DetectionModelImpl::kStrides.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("loss: expected 3 head maps, got ", raw.size()));
  }
  const int64_t no = 4 * reg_max_ + nc_;
  for (size_t i = 0; i < raw.size(); ++i) {
    const torch::Tensor& r = raw[i];
    if (!r.defined() || r.dim() != 4 || r.size(1) != no ||
        r.size(0) != raw[0].size(0) || !r.is_floating_point()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "loss: head map ", i, " must be floating (B,", no, ",h,w), got ",
          r.defined() ? c10::str(r.sizes()) : std::string("undefined")));
    }
  }
  if (raw[0].size(0) < 1) {
    return absl::InvalidArgumentError("loss: empty batch");
  }
  if (!targets.defined() || targets.dim() != 2 || targets.size(1) != 6 ||
      !targets.is_floating_point()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "loss: targets must be floating (N,6) [batch_idx, cls, xc, yc, w, h], "
        "got ",
        targets.defined() ? c10::str(targets.sizes())
                          : std::string("undefined")));
  }
  if (targets.size(0) == 0) return absl::OkStatus();
  const torch::Tensor t = targets.to(torch::kCPU, torch::kDouble).contiguous();
  const double* p = t.data_ptr<double>();
  const double batch = static_cast<double>(raw[0].size(0));
  for (int64_t row = 0; row < t.size(0); ++row) {
    const double* r = p + 6 * row;
    for (int c = 0; c < 6; ++c) {
      if (!std::isfinite(r[c])) {
        return absl::InvalidArgumentError(
            absl::StrCat("loss: target row ", row, " has a non-finite value"));
      }
    }
    if (r[0] < 0 || r[0] >= batch || r[0] != std::floor(r[0])) {
      return absl::InvalidArgumentError(
          absl::StrCat("loss: target row ", row, " has batch index ", r[0],
                       ", expected an integer in [0, ", batch, ")"));
    }
    if (r[1] < 0 || r[1] >= nc_ || r[1] != std::floor(r[1])) {
      return absl::InvalidArgumentError(
          absl::StrCat("loss: target row ", row, " has class ", r[1],
                       ", expected an integer in [0, ", nc_, ")"));
    }
    if (r[4] < 0 || r[5] < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "loss: target row ", row, " has a negative width or height"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<LossOutput> DetectionLoss::TryCompute(
    const std::vector<torch::Tensor>& raw, const torch::Tensor& targets,
    const LossGains& gains) const {
  absl::Status status = CheckInputs(raw, targets);
  if (!status.ok()) return status;
  try {
    return Compute(raw, targets, gains);
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("loss computation failed: ", e.what_without_backtrace()));
  }
}

}  // namespace yolohook::nn
