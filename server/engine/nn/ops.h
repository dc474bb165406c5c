// Box operations shared by the model, the loss, the validator and the
// predictor: anchors, box format conversions, IoU / CIoU, distance <-> box
// encoding, and non-maximum suppression.
//
// All functions are pure (thread-safe), work on CPU tensors of any floating
// type, and expect well-formed shapes as documented (they throw c10::Error on
// shape mismatches, like LibTorch itself).
#ifndef YOLOHOOK_SERVER_ENGINE_NN_OPS_H_
#define YOLOHOOK_SERVER_ENGINE_NN_OPS_H_

#include <torch/torch.h>

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

namespace yolohook::nn {

// Anchor centres (A,2) in grid units (index + offset, x then y) and strides
// (A,1), from the raw maps' spatial shapes (feats[i] is (B,C,h,w)). Level order
// as in `feats`, row-major (y then x) within a level. dtype and device follow
// feats[0].
std::pair<torch::Tensor, torch::Tensor> MakeAnchors(
    const std::vector<torch::Tensor>& feats,
    const std::array<int64_t, 3>& strides, double offset = 0.5);

// (..., 4) centre x, centre y, width, height <-> x1, y1, x2, y2.
torch::Tensor XywhToXyxy(const torch::Tensor& boxes);
torch::Tensor XyxyToXywh(const torch::Tensor& boxes);

// Pairwise IoU of (N,4) and (M,4) xyxy boxes -> (N,M).
torch::Tensor BoxIou(const torch::Tensor& a, const torch::Tensor& b);

// Complete IoU of matching xyxy boxes: (...,4), (...,4) -> (...,1). IoU minus
// the normalised centre distance and the aspect-ratio consistency term; 1 for
// identical boxes, in (-1, 1].
torch::Tensor BboxCiou(const torch::Tensor& a, const torch::Tensor& b,
                       double eps = 1e-7);

// Distances (left, top, right, bottom) from anchor points (..., 4) -> boxes
// (..., 4): xyxy, or xywh when `xywh`. anchor_points (..., 2) broadcasts.
torch::Tensor Dist2Bbox(const torch::Tensor& distance,
                        const torch::Tensor& anchor_points, bool xywh);

// xyxy boxes (..., 4) -> distances (left, top, right, bottom) from
// anchor_points (..., 2), clamped to [0, max_dist].
torch::Tensor Bbox2Dist(const torch::Tensor& anchor_points,
                        const torch::Tensor& bbox, double max_dist);

struct NmsOptions {
  // minimum class confidence
  double conf = 0.25;
  // IoU threshold
  double iou = 0.7;
  // boxes kept per image
  int max_det = 300;
  // class-agnostic
  bool agnostic = false;
  // keep only these classes (empty = all)
  std::vector<int> classes;
  // candidates considered, by confidence
  int max_nms = 30000;
  // class offset for batched NMS
  double max_wh = 7680;
};

// prediction (B, 4+nc, A) as from Decode -> per image (N,6) float
// [x1,y1,x2,y2,conf,cls], sorted by conf desc. Single best class per box
// (Ultralytics multi_label=False); a box is a candidate when its best class
// confidence is strictly above options.conf. Class-aware unless agnostic.
std::vector<torch::Tensor> NonMaxSuppression(const torch::Tensor& prediction,
                                             const NmsOptions& options);

// Greedy NMS of (N,4) xyxy boxes with (N) scores: kept indices (int64),
// highest score first. A box is dropped when its IoU with a kept,
// higher-scoring box is strictly above iou_threshold.
torch::Tensor Nms(const torch::Tensor& boxes, const torch::Tensor& scores,
                  double iou_threshold);

// As above, but stops once `max_keep` boxes are kept: the result is the first
// max_keep indices of the full result (later boxes cannot change them), at a
// fraction of the cost when most candidates would be kept. max_keep < 0 means
// no limit.
torch::Tensor Nms(const torch::Tensor& boxes, const torch::Tensor& scores,
                  double iou_threshold, int64_t max_keep);

}  // namespace yolohook::nn

#endif  // YOLOHOOK_SERVER_ENGINE_NN_OPS_H_
