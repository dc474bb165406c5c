// The YOLOv8 training objective: the task-aligned assigner, which picks the
// anchors responsible for each ground-truth box, and the detection loss built
// on it (BCE class loss, CIoU box loss, distribution focal loss).
//
// Typical use in a training step:
//   DetectionLoss loss(nc);
//   auto raw = model->ForwardRaw(images);
//   LossOutput out = loss.Compute(raw, targets, gains);
//   out.total.backward();
#ifndef YOLOHOOK_SERVER_ENGINE_NN_LOSS_H_
#define YOLOHOOK_SERVER_ENGINE_NN_LOSS_H_

#include <torch/torch.h>

#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace yolohook::nn {

struct AssignerOptions {
  // candidate anchors per ground-truth box
  int topk = 10;
  // exponent of the class score in the align metric
  double alpha = 0.5;
  // exponent of the CIoU in the align metric
  double beta = 6.0;
  // guards divisions and the inside-box test
  double eps = 1e-9;
};

struct AssignResult {
  // (B,A) int64
  torch::Tensor target_labels;
  // (B,A,4) xyxy, pixels
  torch::Tensor target_bboxes;
  // (B,A,nc) float, normalised alignment metric on the assigned class
  torch::Tensor target_scores;
  // (B,A) bool
  torch::Tensor fg_mask;
  // (B,A) int64
  torch::Tensor target_gt_idx;
};

// TaskAlignedAssigner as in Ultralytics v8: anchors whose centres fall inside
// a gt box are candidates; align metric = score^alpha * CIoU^beta; the top-k
// candidates per gt become positives; an anchor claimed by several gts goes to
// the highest-IoU one; target scores = one-hot * normalised metric (metric *
// max IoU of the gt's positives / max metric of the gt's positives).
// target_labels, target_bboxes and target_gt_idx are meaningful only where
// fg_mask is set (elsewhere they point at the image's first gt, or hold nc as
// a background label when there are no gts at all).
//
// Immutable after construction. Thread-safe.
class TaskAlignedAssigner {
 public:
  explicit TaskAlignedAssigner(int num_classes, AssignerOptions options = {});

  // pd_scores (B,A,nc) probabilities; pd_bboxes (B,A,4) xyxy pixels;
  // anc_points (A,2) pixels; gt_labels (B,M,1) class ids in [0, nc);
  // gt_bboxes (B,M,4) xyxy pixels; mask_gt (B,M,1) (1 for real gts, 0 for
  // padding). M may be 0. Runs without gradient tracking. Throws c10::Error on
  // shape mismatches.
  AssignResult Assign(const torch::Tensor& pd_scores,
                      const torch::Tensor& pd_bboxes,
                      const torch::Tensor& anc_points,
                      const torch::Tensor& gt_labels,
                      const torch::Tensor& gt_bboxes,
                      const torch::Tensor& mask_gt) const;

 private:
  int num_classes_;
  AssignerOptions options_;
};

struct LossGains {
  // CIoU box loss gain
  double box = 7.5;
  // BCE class loss gain
  double cls = 0.5;
  // distribution focal loss gain
  double dfl = 1.5;
};

struct LossOutput {
  // scalar to backward: (box + cls + dfl, each times its gain) * batch size
  torch::Tensor total;
  // (3) detached: box, cls, dfl after gains
  torch::Tensor items;
};

// v8 detection loss: BCE-with-logits class loss over all anchors /
// target_scores_sum, CIoU box loss weighted by target scores, DFL on the two
// neighbouring bins (targets clamped to reg_max - 1 - 0.01).
//
// Immutable after construction. Thread-safe.
class DetectionLoss {
 public:
  explicit DetectionLoss(int nc, int reg_max = 16,
                         AssignerOptions assigner = {});

  // raw: ForwardRaw output; targets (N,6) float [batch_idx, cls, xc, yc, w, h]
  // normalised to the input image size (the image size is taken from raw[0] *
  // 8). Images without targets are fine; a batch with none too. Expects inputs
  // accepted by CheckInputs() and throws c10::Error otherwise.
  LossOutput Compute(const std::vector<torch::Tensor>& raw,
                     const torch::Tensor& targets,
                     const LossGains& gains) const;

  // Compute() for untrusted inputs. Errors: INVALID_ARGUMENT from
  // CheckInputs(); INTERNAL if LibTorch fails anyway.
  absl::StatusOr<LossOutput> TryCompute(const std::vector<torch::Tensor>& raw,
                                        const torch::Tensor& targets,
                                        const LossGains& gains) const;

  // Checks that raw holds three (B, 4*reg_max + nc, h, w) maps and targets is
  // (N,6) floating with finite values, integral batch indices in [0, B) and
  // class ids in [0, nc). Errors: INVALID_ARGUMENT naming the first bad row or
  // map.
  absl::Status CheckInputs(const std::vector<torch::Tensor>& raw,
                           const torch::Tensor& targets) const;

 private:
  int nc_;
  int reg_max_;
  TaskAlignedAssigner assigner_;
};

}  // namespace yolohook::nn

#endif  // YOLOHOOK_SERVER_ENGINE_NN_LOSS_H_
