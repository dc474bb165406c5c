#include "server/engine/nn/ops.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace yolohook::nn {

std::pair<torch::Tensor, torch::Tensor> MakeAnchors(
    const std::vector<torch::Tensor>& feats,
    const std::array<int64_t, 3>& strides, double offset) {
  TORCH_CHECK(!feats.empty() && feats.size() <= strides.size(),
              "MakeAnchors: expected 1 to ", strides.size(), " maps, got ",
              feats.size());
  const auto opts = torch::TensorOptions()
                        .dtype(feats[0].scalar_type())
                        .device(feats[0].device());
  std::vector<torch::Tensor> points, stride_list;
  points.reserve(feats.size());
  stride_list.reserve(feats.size());
  for (size_t i = 0; i < feats.size(); ++i) {
    const int64_t h = feats[i].size(-2);
    const int64_t w = feats[i].size(-1);
    const torch::Tensor sx = torch::arange(w, opts) + offset;
    const torch::Tensor sy = torch::arange(h, opts) + offset;
    std::vector<torch::Tensor> grid = torch::meshgrid({sy, sx}, "ij");
    points.push_back(torch::stack({grid[1], grid[0]}, -1).view({-1, 2}));
    stride_list.push_back(
        torch::full({h * w, 1}, static_cast<double>(strides[i]), opts));
  }
  return {torch::cat(points), torch::cat(stride_list)};
}

torch::Tensor XywhToXyxy(const torch::Tensor& boxes) {
  const torch::Tensor xy = boxes.narrow(-1, 0, 2);
  const torch::Tensor half = boxes.narrow(-1, 2, 2) / 2;
  return torch::cat({xy - half, xy + half}, -1);
}

torch::Tensor XyxyToXywh(const torch::Tensor& boxes) {
  const torch::Tensor p1 = boxes.narrow(-1, 0, 2);
  const torch::Tensor p2 = boxes.narrow(-1, 2, 2);
  return torch::cat({(p1 + p2) / 2, p2 - p1}, -1);
}

torch::Tensor BoxIou(const torch::Tensor& a, const torch::Tensor& b) {
  const double eps = 1e-7;
  const torch::Tensor a1 = a.narrow(-1, 0, 2).unsqueeze(1);  // (N,1,2)
  const torch::Tensor a2 = a.narrow(-1, 2, 2).unsqueeze(1);
  const torch::Tensor b1 = b.narrow(-1, 0, 2).unsqueeze(0);  // (1,M,2)
  const torch::Tensor b2 = b.narrow(-1, 2, 2).unsqueeze(0);
  const torch::Tensor inter =
      (torch::min(a2, b2) - torch::max(a1, b1)).clamp_min(0).prod(2);
  const torch::Tensor area_a = (a2 - a1).prod(2);  // (N,1)
  const torch::Tensor area_b = (b2 - b1).prod(2);  // (1,M)
  return inter / (area_a + area_b - inter + eps);
}

torch::Tensor BboxCiou(const torch::Tensor& a, const torch::Tensor& b,
                       double eps) {
  const auto ac = a.chunk(4, -1);
  const auto bc = b.chunk(4, -1);
  const torch::Tensor &ax1 = ac[0], &ay1 = ac[1], &ax2 = ac[2], &ay2 = ac[3];
  const torch::Tensor &bx1 = bc[0], &by1 = bc[1], &bx2 = bc[2], &by2 = bc[3];
  const torch::Tensor w1 = ax2 - ax1;
  const torch::Tensor h1 = (ay2 - ay1).clamp_min(eps);
  const torch::Tensor w2 = bx2 - bx1;
  const torch::Tensor h2 = (by2 - by1).clamp_min(eps);
  const torch::Tensor inter =
      (torch::min(ax2, bx2) - torch::max(ax1, bx1)).clamp_min(0) *
      (torch::min(ay2, by2) - torch::max(ay1, by1)).clamp_min(0);
  const torch::Tensor uni = w1 * h1 + w2 * h2 - inter + eps;
  const torch::Tensor iou = inter / uni;
  // Smallest enclosing box diagonal, squared.
  const torch::Tensor cw = torch::max(ax2, bx2) - torch::min(ax1, bx1);
  const torch::Tensor ch = torch::max(ay2, by2) - torch::min(ay1, by1);
  const torch::Tensor c2 = cw.pow(2) + ch.pow(2) + eps;
  // Centre distance, squared.
  const torch::Tensor rho2 =
      ((bx1 + bx2 - ax1 - ax2).pow(2) + (by1 + by2 - ay1 - ay2).pow(2)) / 4;
  const double k = 4.0 / (M_PI * M_PI);
  const torch::Tensor v =
      k * (torch::atan(w2 / h2) - torch::atan(w1 / h1)).pow(2);
  torch::Tensor alpha;
  {
    // The trade-off weight is a constant for the gradient (as in the CIoU
    // paper).
    torch::NoGradGuard no_grad;
    alpha = v / (v - iou + (1.0 + eps));
  }
  return iou - (rho2 / c2 + v * alpha);
}

torch::Tensor Dist2Bbox(const torch::Tensor& distance,
                        const torch::Tensor& anchor_points, bool xywh) {
  const auto lt_rb = distance.chunk(2, -1);
  const torch::Tensor x1y1 = anchor_points - lt_rb[0];
  const torch::Tensor x2y2 = anchor_points + lt_rb[1];
  if (xywh) return torch::cat({(x1y1 + x2y2) / 2, x2y2 - x1y1}, -1);
  return torch::cat({x1y1, x2y2}, -1);
}

torch::Tensor Bbox2Dist(const torch::Tensor& anchor_points,
                        const torch::Tensor& bbox, double max_dist) {
  const auto corners = bbox.chunk(2, -1);
  return torch::cat({anchor_points - corners[0], corners[1] - anchor_points},
                    -1)
      .clamp(0, max_dist);
}

torch::Tensor Nms(const torch::Tensor& boxes, const torch::Tensor& scores,
                  double iou_threshold) {
  return Nms(boxes, scores, iou_threshold, /*max_keep=*/-1);
}

torch::Tensor Nms(const torch::Tensor& boxes, const torch::Tensor& scores,
                  double iou_threshold, int64_t max_keep) {
  const int64_t n = boxes.size(0);
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4,
              "Nms: boxes must be (N,4), got ", boxes.sizes());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == n,
              "Nms: scores must be (N), got ", scores.sizes());
  if (n == 0 || max_keep == 0) return torch::empty({0}, torch::kLong);

  // Non-finite values (from a diverged model) must not break the orderings
  // below: NaN coordinates become 0 and NaN scores rank last.
  const torch::Tensor b =
      torch::nan_to_num(boxes.to(torch::kCPU, torch::kDouble), 0.0, 1e12, -1e12)
          .contiguous();
  const torch::Tensor s =
      torch::nan_to_num(scores.to(torch::kCPU, torch::kDouble), -1e300, 1e300,
                        -1e300)
          .contiguous();
  const double* bp = b.data_ptr<double>();
  const double* sp = s.data_ptr<double>();

  // Rank boxes by score (ties by index, for determinism).
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [sp](int64_t i, int64_t j) { return sp[i] > sp[j]; });
  std::vector<int64_t> rank(n);
  for (int64_t r = 0; r < n; ++r) rank[order[r]] = r;

  // Only boxes overlapping in x can suppress each other. Sorting by x1 and
  // knowing the widest box bounds the candidates of a kept box to a window,
  // which is small when boxes are spread out or offset per class.
  std::vector<int64_t> by_x1(n);
  std::iota(by_x1.begin(), by_x1.end(), 0);
  std::sort(by_x1.begin(), by_x1.end(),
            [bp](int64_t i, int64_t j) { return bp[4 * i] < bp[4 * j]; });
  std::vector<double> sorted_x1(n);
  std::vector<double> area(n);
  double max_w = 0;
  for (int64_t i = 0; i < n; ++i) {
    sorted_x1[i] = bp[4 * by_x1[i]];
    const double w = bp[4 * i + 2] - bp[4 * i];
    const double h = bp[4 * i + 3] - bp[4 * i + 1];
    area[i] = std::max(w, 0.0) * std::max(h, 0.0);
    max_w = std::max(max_w, w);
  }

  std::vector<char> suppressed(n, 0);
  std::vector<int64_t> keep;
  for (int64_t r = 0; r < n; ++r) {
    const int64_t i = order[r];
    if (suppressed[i]) continue;
    keep.push_back(i);
    if (max_keep > 0 && static_cast<int64_t>(keep.size()) >= max_keep) break;
    const double ix1 = bp[4 * i], iy1 = bp[4 * i + 1];
    const double ix2 = bp[4 * i + 2], iy2 = bp[4 * i + 3];
    // Candidates j need x1_j < ix2 and x2_j > ix1, hence x1_j > ix1 - max_w.
    const auto lo =
        std::upper_bound(sorted_x1.begin(), sorted_x1.end(), ix1 - max_w) -
        sorted_x1.begin();
    const auto hi = std::lower_bound(sorted_x1.begin(), sorted_x1.end(), ix2) -
                    sorted_x1.begin();
    for (int64_t p = lo; p < hi; ++p) {
      const int64_t j = by_x1[p];
      if (suppressed[j] || rank[j] <= r) continue;
      const double w = std::min(ix2, bp[4 * j + 2]) - std::max(ix1, bp[4 * j]);
      if (w <= 0) continue;
      const double h =
          std::min(iy2, bp[4 * j + 3]) - std::max(iy1, bp[4 * j + 1]);
      if (h <= 0) continue;
      const double inter = w * h;
      const double uni = area[i] + area[j] - inter;
      if (uni > 0 && inter / uni > iou_threshold) suppressed[j] = 1;
    }
  }
  return torch::tensor(keep, torch::kLong);
}

std::vector<torch::Tensor> NonMaxSuppression(const torch::Tensor& prediction,
                                             const NmsOptions& options) {
  TORCH_CHECK(prediction.dim() == 3 && prediction.size(1) > 4,
              "NonMaxSuppression: prediction must be (B, 4+nc, A), got ",
              prediction.sizes());
  torch::NoGradGuard no_grad;
  const torch::Tensor pred = prediction.to(torch::kCPU).transpose(1, 2);
  const int64_t batch = pred.size(0);
  const int64_t nc = pred.size(2) - 4;
  torch::Tensor allowed;
  if (!options.classes.empty()) {
    allowed = torch::zeros({nc}, torch::kBool);
    for (int c : options.classes) {
      if (c >= 0 && c < nc) allowed[c] = true;
    }
  }
  std::vector<torch::Tensor> output;
  output.reserve(batch);
  for (int64_t bi = 0; bi < batch; ++bi) {
    const torch::Tensor x = pred[bi];  // (A, 4+nc)
    auto [conf, cls] = x.narrow(1, 4, nc).max(1);
    torch::Tensor mask = conf > options.conf;
    if (allowed.defined()) mask = mask & allowed.index_select(0, cls);
    torch::Tensor idx = mask.nonzero().squeeze(1);
    if (idx.size(0) > options.max_nms) {
      const torch::Tensor top =
          std::get<1>(conf.index_select(0, idx).topk(options.max_nms));
      idx = idx.index_select(0, top);
    }
    const torch::Tensor boxes =
        XywhToXyxy(x.index_select(0, idx).narrow(1, 0, 4));
    const torch::Tensor det =
        torch::cat({boxes, conf.index_select(0, idx).unsqueeze(1),
                    cls.index_select(0, idx).unsqueeze(1).to(x.dtype())},
                   1)
            .to(torch::kFloat);
    if (det.size(0) == 0) {
      output.push_back(torch::zeros({0, 6}, torch::kFloat));
      continue;
    }
    torch::Tensor nms_boxes = det.narrow(1, 0, 4).to(torch::kDouble);
    if (!options.agnostic) {
      nms_boxes =
          nms_boxes + det.narrow(1, 5, 1).to(torch::kDouble) * options.max_wh;
    }
    const torch::Tensor keep = Nms(nms_boxes, det.select(1, 4), options.iou,
                                   std::max<int64_t>(options.max_det, 0));
    output.push_back(det.index_select(0, keep));
  }
  return output;
}

}  // namespace yolohook::nn
