#include "server/engine/nn/ops.h"

#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace yolohook::nn {
namespace {

torch::Tensor T(std::vector<float> values, std::vector<int64_t> shape) {
  return torch::tensor(values, torch::kFloat).view(shape);
}

TEST(MakeAnchorsTest, CellCentresRowMajorPerLevel) {
  std::vector<torch::Tensor> feats = {torch::zeros({1, 5, 2, 3}),
                                      torch::zeros({1, 5, 1, 2}),
                                      torch::zeros({1, 5, 1, 1})};
  auto [points, strides] = MakeAnchors(feats, {8, 16, 32}, 0.5);
  ASSERT_EQ(points.sizes(), torch::IntArrayRef({9, 2}));
  ASSERT_EQ(strides.sizes(), torch::IntArrayRef({9, 1}));
  const torch::Tensor expected =
      T({0.5, 0.5, 1.5, 0.5, 2.5, 0.5, 0.5, 1.5, 1.5, 1.5, 2.5, 1.5,  // level 0
         0.5, 0.5, 1.5, 0.5,                                          // level 1
         0.5, 0.5},                                                   // level 2
        {9, 2});
  EXPECT_TRUE(torch::equal(points, expected));
  EXPECT_TRUE(
      torch::equal(strides.flatten(), T({8, 8, 8, 8, 8, 8, 16, 16, 32}, {9})));
  auto [zero_offset, unused] = MakeAnchors(feats, {8, 16, 32}, 0.0);
  EXPECT_FLOAT_EQ(zero_offset[4][0].item<float>(), 1.0);
}

TEST(BoxFormatTest, XywhXyxyByHand) {
  const torch::Tensor xywh = T({10, 20, 4, 6}, {1, 4});
  const torch::Tensor xyxy = XywhToXyxy(xywh);
  EXPECT_TRUE(torch::equal(xyxy, T({8, 17, 12, 23}, {1, 4})));
  EXPECT_TRUE(torch::equal(XyxyToXywh(xyxy), xywh));
  // Works on any leading shape.
  EXPECT_EQ(XywhToXyxy(torch::zeros({2, 3, 4})).sizes(),
            torch::IntArrayRef({2, 3, 4}));
}

TEST(BoxIouTest, PairwiseByHand) {
  const torch::Tensor a = T({0, 0, 2, 2, 0, 0, 1, 1}, {2, 4});
  const torch::Tensor b = T({1, 1, 3, 3, 0, 0, 2, 2, 5, 5, 6, 6}, {3, 4});
  const torch::Tensor iou = BoxIou(a, b);
  ASSERT_EQ(iou.sizes(), torch::IntArrayRef({2, 3}));
  EXPECT_NEAR(iou[0][0].item<float>(), 1.0 / 7.0, 1e-6);
  EXPECT_NEAR(iou[0][1].item<float>(), 1.0, 1e-6);
  EXPECT_NEAR(iou[0][2].item<float>(), 0.0, 1e-6);
  EXPECT_NEAR(iou[1][0].item<float>(), 0.0, 1e-6);
  EXPECT_NEAR(iou[1][1].item<float>(), 0.25, 1e-6);
}

TEST(BboxCiouTest, IdenticalBoxesGiveOne) {
  const torch::Tensor a = T({3, 4, 10, 20}, {1, 4});
  const torch::Tensor ciou = BboxCiou(a, a);
  ASSERT_EQ(ciou.sizes(), torch::IntArrayRef({1, 1}));
  EXPECT_NEAR(ciou.item<float>(), 1.0, 1e-6);
}

TEST(BboxCiouTest, ShiftedBoxByHand) {
  // Same shape (v = 0): IoU 2/6, enclosing diagonal^2 = 3^2 + 2^2 = 13,
  // centre distance^2 = 1 -> 1/3 - 1/13.
  const torch::Tensor a = T({0, 0, 2, 2}, {4});
  const torch::Tensor b = T({1, 0, 3, 2}, {4});
  EXPECT_NEAR(BboxCiou(a, b).item<float>(), 1.0 / 3.0 - 1.0 / 13.0, 1e-6);
}

TEST(BboxCiouTest, AspectRatioTermByHand) {
  // IoU 0.5, rho^2/c^2 = 1/20, v = 4/pi^2 (atan 2 - atan 1)^2,
  // alpha = v / (v + 0.5).
  const torch::Tensor a = T({0, 0, 2, 2, 0, 0, 2, 2}, {2, 4});
  const torch::Tensor b = T({0, 0, 4, 2, 0, 0, 2, 2}, {2, 4});
  const double v =
      4.0 / (M_PI * M_PI) * std::pow(std::atan(2.0) - std::atan(1.0), 2.0);
  const double expected = 0.5 - (0.05 + v * v / (v + 0.5));
  const torch::Tensor ciou = BboxCiou(a, b);
  ASSERT_EQ(ciou.sizes(), torch::IntArrayRef({2, 1}));
  EXPECT_NEAR(ciou[0][0].item<float>(), expected, 1e-6);
  EXPECT_NEAR(ciou[1][0].item<float>(), 1.0, 1e-6);
  // Symmetric.
  EXPECT_NEAR(BboxCiou(b, a)[0][0].item<float>(), expected, 1e-6);
}

TEST(BboxCiouTest, GradientFlowsToFirstArgument) {
  torch::Tensor a = T({0, 0, 2, 2}, {1, 4}).requires_grad_(true);
  const torch::Tensor b = T({1, 0, 3, 2}, {1, 4});
  (1 - BboxCiou(a, b)).sum().backward();
  ASSERT_TRUE(a.grad().defined());
  // Moving a to the right improves the overlap: the loss decreases.
  EXPECT_LT(a.grad()[0][0].item<float>(), 0);
  EXPECT_LT(a.grad()[0][2].item<float>(), 0);
}

TEST(DistanceBoxTest, RoundTripAndClamp) {
  const torch::Tensor anchors = T({5, 5, 2.5, 7.5}, {2, 2});
  const torch::Tensor dist = T({1, 2, 3, 4, 0.5, 1.5, 2.5, 3.5}, {2, 4});
  const torch::Tensor xyxy = Dist2Bbox(dist, anchors, /*xywh=*/false);
  EXPECT_TRUE(torch::allclose(xyxy, T({4, 3, 8, 9, 2, 6, 5, 11}, {2, 4})));
  const torch::Tensor xywh = Dist2Bbox(dist, anchors, /*xywh=*/true);
  EXPECT_TRUE(torch::allclose(xywh, T({6, 6, 4, 6, 3.5, 8.5, 3, 5}, {2, 4})));
  EXPECT_TRUE(torch::allclose(Bbox2Dist(anchors, xyxy, 15), dist));
  // Distances beyond max_dist and negative ones (anchor outside) clamp.
  const torch::Tensor far = T({-20, 6, 4, 30}, {1, 4});
  const torch::Tensor clamped = Bbox2Dist(T({5, 5}, {1, 2}), far, 14.99);
  EXPECT_TRUE(torch::allclose(clamped, T({14.99, 0, 0, 14.99}, {1, 4})));
}

TEST(NmsTest, GreedyByScore) {
  // Box 0 overlaps the best box 1 (IoU 90/110 > 0.5) and is dropped; box 2
  // overlaps box 1 by 40/160 only and is kept, after the far box 3.
  const torch::Tensor boxes =
      T({0, 1, 10, 11, 0, 0, 10, 10, 0, 6, 10, 16, 50, 50, 60, 60}, {4, 4});
  const torch::Tensor scores = T({0.8, 0.9, 0.7, 0.75}, {4});
  const torch::Tensor keep = Nms(boxes, scores, 0.5);
  ASSERT_EQ(keep.scalar_type(), torch::kLong);
  EXPECT_TRUE(torch::equal(keep, torch::tensor({1, 3, 2}, torch::kLong)));
  // At threshold 0.95 nothing overlaps enough.
  EXPECT_EQ(Nms(boxes, scores, 0.95).size(0), 4);
  EXPECT_EQ(Nms(torch::zeros({0, 4}), torch::zeros({0}), 0.5).size(0), 0);
}

// A box overlapping a kept one by exactly the threshold stays, as in
// torchvision's nms (suppression needs IoU above the threshold).
TEST(NmsTest, IouEqualToTheThresholdIsKept) {
  // Intersection 2, union 4: IoU exactly 0.5 (representable in binary).
  const torch::Tensor boxes = T({0, 0, 3, 1, 1, 0, 4, 1}, {2, 4});
  const torch::Tensor scores = T({0.9, 0.8}, {2});
  ASSERT_FLOAT_EQ(BoxIou(boxes, boxes)[0][1].item<float>(), 0.5f);
  EXPECT_TRUE(torch::equal(Nms(boxes, scores, 0.5),
                           torch::tensor({0, 1}, torch::kLong)));
  EXPECT_TRUE(torch::equal(Nms(boxes, scores, 0.4999),
                           torch::tensor({0}, torch::kLong)));
}

TEST(NmsTest, MatchesBruteForceOnRandomBoxes) {
  torch::manual_seed(3);
  const int64_t n = 400;
  const torch::Tensor xy = torch::rand({n, 2}) * 200;
  const torch::Tensor wh = torch::rand({n, 2}) * 60 + 1;
  const torch::Tensor boxes = torch::cat({xy, xy + wh}, 1);
  const torch::Tensor scores = torch::rand({n});
  const torch::Tensor keep = Nms(boxes, scores, 0.45);
  // Reference: the plain quadratic greedy loop.
  const torch::Tensor order = std::get<1>(scores.sort(0, true));
  const torch::Tensor iou = BoxIou(boxes, boxes);
  std::vector<bool> dropped(n, false);
  std::vector<int64_t> expected;
  for (int64_t r = 0; r < n; ++r) {
    const int64_t i = order[r].item<int64_t>();
    if (dropped[i]) continue;
    expected.push_back(i);
    for (int64_t s = r + 1; s < n; ++s) {
      const int64_t j = order[s].item<int64_t>();
      if (iou[i][j].item<float>() > 0.45) dropped[j] = true;
    }
  }
  EXPECT_TRUE(torch::equal(keep, torch::tensor(expected, torch::kLong)));
  // A kept-count limit returns a prefix of the full result.
  const torch::Tensor first = Nms(boxes, scores, 0.45, 7);
  ASSERT_EQ(first.size(0), 7);
  EXPECT_TRUE(torch::equal(first, keep.narrow(0, 0, 7)));
  EXPECT_TRUE(torch::equal(Nms(boxes, scores, 0.45, -1), keep));
}

// Builds a (1, 4+nc, A) prediction from rows [xc, yc, w, h, p0, p1, ...].
torch::Tensor Prediction(const std::vector<std::vector<float>>& rows) {
  std::vector<torch::Tensor> cols;
  for (const auto& r : rows) cols.push_back(torch::tensor(r, torch::kFloat));
  return torch::stack(cols, 1).unsqueeze(0);
}

TEST(NonMaxSuppressionTest, ClassAwareAndAgnostic) {
  // Two heavily overlapping boxes of different classes and one duplicate of
  // the first with a lower score.
  const torch::Tensor pred = Prediction({
      {50, 50, 20, 20, 0.9, 0.1},
      {51, 50, 20, 20, 0.2, 0.8},
      {50, 51, 20, 20, 0.7, 0.0},
  });
  NmsOptions options;
  auto out = NonMaxSuppression(pred, options);
  ASSERT_EQ(out.size(), 1u);
  ASSERT_EQ(out[0].sizes(), torch::IntArrayRef({2, 6}));
  // Sorted by confidence; corners from xywh; class as float.
  EXPECT_TRUE(torch::allclose(out[0][0], T({40, 40, 60, 60, 0.9, 0}, {6})));
  EXPECT_TRUE(torch::allclose(out[0][1], T({41, 40, 61, 60, 0.8, 1}, {6})));

  options.agnostic = true;
  out = NonMaxSuppression(pred, options);
  ASSERT_EQ(out[0].size(0), 1);
  EXPECT_FLOAT_EQ(out[0][0][4].item<float>(), 0.9f);
}

TEST(NonMaxSuppressionTest, ConfidenceThresholdAndBestClassOnly) {
  const torch::Tensor pred = Prediction({
      {10, 10, 4, 4, 0.3, 0.6},   // best class 1 at 0.6
      {30, 30, 4, 4, 0.25, 0.1},  // best 0.25: not strictly above 0.25
      {50, 50, 4, 4, 0.1, 0.26},  // kept
  });
  NmsOptions options;
  auto out = NonMaxSuppression(pred, options)[0];
  ASSERT_EQ(out.size(0), 2);
  EXPECT_FLOAT_EQ(out[0][5].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(out[0][4].item<float>(), 0.6f);
  EXPECT_FLOAT_EQ(out[1][4].item<float>(), 0.26f);
  options.conf = 0.5;
  EXPECT_EQ(NonMaxSuppression(pred, options)[0].size(0), 1);
}

TEST(NonMaxSuppressionTest, MaxDetClassesFilterAndSorting) {
  std::vector<std::vector<float>> rows;
  for (int i = 0; i < 6; ++i) {
    const float conf = 0.3f + 0.1f * static_cast<float>((i * 4) % 6);
    rows.push_back({20.0f * static_cast<float>(i) + 5, 5, 4, 4,
                    i % 2 == 0 ? conf : 0.0f, i % 2 == 1 ? conf : 0.0f});
  }
  const torch::Tensor pred = Prediction(rows);
  NmsOptions options;
  auto out = NonMaxSuppression(pred, options)[0];
  ASSERT_EQ(out.size(0), 6);
  const torch::Tensor conf = out.select(1, 4);
  EXPECT_TRUE(torch::equal(conf, std::get<0>(conf.sort(0, true))));

  options.max_det = 2;
  out = NonMaxSuppression(pred, options)[0];
  ASSERT_EQ(out.size(0), 2);
  EXPECT_NEAR(out[0][4].item<float>(), 0.7, 1e-6);

  options.max_det = 0;
  EXPECT_EQ(NonMaxSuppression(pred, options)[0].size(0), 0);

  options.max_det = 300;
  options.classes = {1};
  out = NonMaxSuppression(pred, options)[0];
  ASSERT_EQ(out.size(0), 3);
  EXPECT_TRUE((out.select(1, 5) == 1).all().item<bool>());

  options.classes = {};
  options.max_nms = 1;  // only the most confident candidate is considered
  out = NonMaxSuppression(pred, options)[0];
  ASSERT_EQ(out.size(0), 1);
  EXPECT_NEAR(out[0][4].item<float>(), 0.7, 1e-6);
}

TEST(NonMaxSuppressionTest, EmptyInputsGiveEmptyOutputs) {
  NmsOptions options;
  auto out = NonMaxSuppression(torch::zeros({2, 6, 0}), options);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].sizes(), torch::IntArrayRef({0, 6}));
  EXPECT_EQ(out[1].sizes(), torch::IntArrayRef({0, 6}));
  // Nothing above the threshold.
  out = NonMaxSuppression(torch::zeros({1, 7, 10}), options);
  EXPECT_EQ(out[0].sizes(), torch::IntArrayRef({0, 6}));
  EXPECT_EQ(out[0].scalar_type(), torch::kFloat);
  EXPECT_TRUE(NonMaxSuppression(torch::zeros({0, 6, 4}), options).empty());
}

TEST(NonMaxSuppressionTest, BatchImagesAreIndependent) {
  torch::Tensor pred =
      torch::cat({Prediction({{10, 10, 4, 4, 0.9}, {10, 10, 4, 4, 0.8}}),
                  Prediction({{10, 10, 4, 4, 0.1}, {10, 10, 4, 4, 0.8}})});
  auto out = NonMaxSuppression(pred, NmsOptions());
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].size(0), 1);
  EXPECT_FLOAT_EQ(out[0][0][4].item<float>(), 0.9f);
  EXPECT_EQ(out[1].size(0), 1);
  EXPECT_FLOAT_EQ(out[1][0][4].item<float>(), 0.8f);
}

}  // namespace
}  // namespace yolohook::nn
