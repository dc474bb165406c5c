#include "server/engine/nn/loss.h"

#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "server/engine/nn/model.h"
#include "server/engine/nn/ops.h"

namespace yolohook::nn {
namespace {

torch::Tensor T(std::vector<float> values, std::vector<int64_t> shape) {
  return torch::tensor(values, torch::kFloat).view(shape);
}

double Ciou(std::vector<float> a, std::vector<float> b) {
  return BboxCiou(T(a, {4}), T(b, {4})).item<double>();
}

// Five anchors along a row, 8 px apart; the gt [0,0,24,8] contains the centres
// of anchors 0-2 only.
class AssignerTest : public ::testing::Test {
 protected:
  const torch::Tensor anchors_ = T({4, 4, 12, 4, 20, 4, 28, 4, 36, 4}, {5, 2});
  const std::vector<float> gt_ = {0, 0, 24, 8};
  // Anchor 3 predicts the gt perfectly but lies outside it.
  const torch::Tensor pd_bboxes_ = T({0,  0, 16, 8,  //
                                      0,  1, 24, 8,  //
                                      8,  0, 24, 8,  //
                                      0,  0, 24, 8,  //
                                      30, 0, 40, 8},
                                     {1, 5, 4});
  // Class 1 scores; anchor 2 is less confident than anchor 0.
  const torch::Tensor pd_scores_ =
      T({0.1, 0.5, 0.1, 0.5, 0.1, 0.3, 0.1, 0.9, 0.1, 0.9}, {1, 5, 2});

  AssignResult AssignOne(int topk) {
    AssignerOptions options;
    options.topk = topk;
    TaskAlignedAssigner assigner(2, options);
    return assigner.Assign(pd_scores_, pd_bboxes_, anchors_, T({1}, {1, 1, 1}),
                           T(gt_, {1, 1, 4}), T({1}, {1, 1, 1}));
  }
};

TEST_F(AssignerTest, PicksAnchorsInsideTheBox) {
  const AssignResult r = AssignOne(10);
  EXPECT_TRUE(torch::equal(
      r.fg_mask, torch::tensor({true, true, true, false, false}).view({1, 5})));
  ASSERT_EQ(r.target_labels.scalar_type(), torch::kLong);
  EXPECT_EQ(r.target_labels[0][0].item<int64_t>(), 1);
  EXPECT_EQ(r.target_labels[0][2].item<int64_t>(), 1);
  EXPECT_TRUE(torch::equal(r.target_bboxes[0][1], T(gt_, {4})));
  EXPECT_EQ(r.target_scores.sizes(), torch::IntArrayRef({1, 5, 2}));
  EXPECT_EQ(r.target_gt_idx.sizes(), torch::IntArrayRef({1, 5}));
  // Background anchors and the other class have zero target score.
  EXPECT_EQ(r.target_scores[0][3].abs().sum().item<float>(), 0.0f);
  EXPECT_EQ(r.target_scores[0][4].abs().sum().item<float>(), 0.0f);
  EXPECT_EQ(r.target_scores.select(2, 0).abs().sum().item<float>(), 0.0f);
}

TEST_F(AssignerTest, NormalisesTargetScoresByBestMetricAndIou) {
  const AssignResult r = AssignOne(10);
  const double iou0 = Ciou(gt_, {0, 0, 16, 8});
  const double iou1 = Ciou(gt_, {0, 1, 24, 8});
  const double iou2 = Ciou(gt_, {8, 0, 24, 8});
  const double m0 = std::sqrt(0.5) * std::pow(iou0, 6);
  const double m1 = std::sqrt(0.5) * std::pow(iou1, 6);
  const double m2 = std::sqrt(0.3) * std::pow(iou2, 6);
  ASSERT_GT(m1, m0);
  ASSERT_GT(m0, m2);
  // target = metric / max metric * max IoU over the gt's positives.
  const double max_iou = std::max({iou0, iou1, iou2});
  EXPECT_NEAR(r.target_scores[0][1][1].item<float>(), max_iou, 1e-5);
  EXPECT_NEAR(r.target_scores[0][0][1].item<float>(), m0 / m1 * max_iou, 1e-5);
  EXPECT_NEAR(r.target_scores[0][2][1].item<float>(), m2 / m1 * max_iou, 1e-5);
}

TEST_F(AssignerTest, TopkLimitsPositivesPerGt) {
  const AssignResult r = AssignOne(2);
  // The two best align metrics: anchors 1 and 0.
  EXPECT_TRUE(torch::equal(
      r.fg_mask,
      torch::tensor({true, true, false, false, false}).view({1, 5})));
  const AssignResult one = AssignOne(1);
  EXPECT_TRUE(torch::equal(
      one.fg_mask,
      torch::tensor({false, true, false, false, false}).view({1, 5})));
}

TEST_F(AssignerTest, AnchorInsideTwoGtsGoesToHigherIou) {
  // gt 1 = [8,0,40,8] also contains anchors 1-4; anchor 2's box equals gt 1.
  const torch::Tensor pd_bboxes =
      T({0, 0, 24, 8, 0, 0, 24, 8, 8, 0, 40, 8, 8, 0, 40, 8, 8, 0, 40, 8},
        {1, 5, 4});
  const torch::Tensor pd_scores = torch::full({1, 5, 2}, 0.5);
  TaskAlignedAssigner assigner(2);
  const AssignResult r = assigner.Assign(
      pd_scores, pd_bboxes, anchors_, T({0, 1}, {1, 2, 1}),
      T({0, 0, 24, 8, 8, 0, 40, 8}, {1, 2, 4}), T({1, 1}, {1, 2, 1}));
  EXPECT_TRUE(r.fg_mask.all().item<bool>());
  EXPECT_TRUE(torch::equal(r.target_gt_idx,
                           torch::tensor({0, 0, 1, 1, 1}).view({1, 5})));
  EXPECT_TRUE(torch::equal(r.target_labels,
                           torch::tensor({0, 0, 1, 1, 1}).view({1, 5})));
  EXPECT_TRUE(torch::equal(r.target_bboxes[0][2], T({8, 0, 40, 8}, {4})));
  // Each anchor's target is on one class only.
  EXPECT_TRUE(torch::equal((r.target_scores > 0).sum(-1),
                           torch::ones({1, 5}, torch::kLong)));
}

TEST_F(AssignerTest, PaddedGtsAreIgnored) {
  TaskAlignedAssigner assigner(2);
  const AssignResult r = assigner.Assign(
      pd_scores_, pd_bboxes_, anchors_, T({1, 0}, {1, 2, 1}),
      T({0, 0, 24, 8, 0, 0, 0, 0}, {1, 2, 4}), T({1, 0}, {1, 2, 1}));
  EXPECT_TRUE(torch::equal(
      r.fg_mask, torch::tensor({true, true, true, false, false}).view({1, 5})));
  EXPECT_TRUE(
      (r.target_gt_idx.masked_select(r.fg_mask) == 0).all().item<bool>());
}

TEST_F(AssignerTest, NoGtsMeansNoForeground) {
  TaskAlignedAssigner assigner(2);
  const AssignResult r =
      assigner.Assign(pd_scores_, pd_bboxes_, anchors_, torch::zeros({1, 0, 1}),
                      torch::zeros({1, 0, 4}), torch::zeros({1, 0, 1}));
  EXPECT_FALSE(r.fg_mask.any().item<bool>());
  EXPECT_EQ(r.target_scores.sizes(), torch::IntArrayRef({1, 5, 2}));
  EXPECT_EQ(r.target_scores.abs().sum().item<float>(), 0.0f);
  EXPECT_EQ(r.target_bboxes.sizes(), torch::IntArrayRef({1, 5, 4}));
}

// A tiny model and a fixed batch of two 64x64 images.
class DetectionLossTest : public ::testing::Test {
 protected:
  static constexpr int kNc = 2;

  void SetUp() override {
    torch::manual_seed(0);
    ModelOptions options;
    options.width_multiple = 0.0625;
    options.nc = kNc;
    options.scale = "custom";
    model_ = DetectionModel(options);
    images_ = torch::rand({2, 3, 64, 64});
    // Image 0: two objects; image 1: one.
    targets_ = T({0, 0, 0.30, 0.30, 0.40, 0.30,  //
                  0, 1, 0.70, 0.65, 0.25, 0.50,  //
                  1, 1, 0.50, 0.50, 0.60, 0.60},
                 {3, 6});
  }

  DetectionModel model_{nullptr};
  torch::Tensor images_;
  torch::Tensor targets_;
  DetectionLoss loss_{kNc};
};

TEST_F(DetectionLossTest, FinitePositiveAtInit) {
  const LossOutput out =
      loss_.Compute(model_->ForwardRaw(images_), targets_, LossGains());
  ASSERT_EQ(out.total.dim(), 0);
  ASSERT_EQ(out.items.sizes(), torch::IntArrayRef({3}));
  EXPECT_FALSE(out.items.requires_grad());
  EXPECT_TRUE(torch::isfinite(out.items).all().item<bool>());
  for (int i = 0; i < 3; ++i) EXPECT_GT(out.items[i].item<float>(), 0) << i;
  // total = sum of the items times the batch size.
  EXPECT_NEAR(out.total.item<float>(), out.items.sum().item<float>() * 2, 1e-4);
  out.total.backward();
  auto params = model_->named_parameters();
  EXPECT_TRUE(params["model.22.cv2.0.2.weight"].grad().defined());
  EXPECT_TRUE(params["model.0.conv.weight"].grad().defined());
}

TEST_F(DetectionLossTest, GainsScaleTheItems) {
  torch::NoGradGuard no_grad;
  model_->eval();
  const auto raw = model_->ForwardRaw(images_);
  const LossOutput unit = loss_.Compute(raw, targets_, LossGains{1, 1, 1});
  const LossOutput scaled = loss_.Compute(raw, targets_, LossGains{2, 3, 4});
  EXPECT_TRUE(torch::allclose(scaled.items, unit.items * T({2, 3, 4}, {3})));
}

TEST_F(DetectionLossTest, DecreasesWithSgdOnAFixedBatch) {
  torch::optim::SGD sgd(model_->parameters(),
                        torch::optim::SGDOptions(0.003).momentum(0.9));
  model_->train();
  LossOutput first, last;
  for (int step = 0; step < 15; ++step) {
    sgd.zero_grad();
    const LossOutput out =
        loss_.Compute(model_->ForwardRaw(images_), targets_, LossGains());
    out.total.backward();
    sgd.step();
    if (step == 0) first = out;
    last = out;
  }
  // All three terms learn, not just the class logits drifting down.
  EXPECT_LT(last.total.item<float>(), 0.6f * first.total.item<float>())
      << "first " << first.items << " last " << last.items;
  EXPECT_LT(last.items[0].item<float>(), 0.6f * first.items[0].item<float>());
  EXPECT_LT(last.items[1].item<float>(), first.items[1].item<float>());
  EXPECT_LT(last.items[2].item<float>(), first.items[2].item<float>());
}

TEST_F(DetectionLossTest, ZeroTargetBatchHasOnlyClassLoss) {
  const LossOutput out = loss_.Compute(model_->ForwardRaw(images_),
                                       torch::zeros({0, 6}), LossGains());
  EXPECT_EQ(out.items[0].item<float>(), 0.0f);
  EXPECT_EQ(out.items[2].item<float>(), 0.0f);
  EXPECT_GT(out.items[1].item<float>(), 0.0f);
  out.total.backward();  // still a valid graph
  // The class loss pushes every logit towards 0: BCE(x, 0) summed over all
  // anchors and classes, divided by max(sum of target scores, 1) = 1.
  torch::NoGradGuard no_grad;
  const auto raw = model_->ForwardRaw(images_);
  double expected = 0;
  for (const torch::Tensor& r : raw) {
    expected += torch::softplus(r.narrow(1, 64, kNc)).sum().item<double>();
  }
  const LossOutput again =
      loss_.Compute(raw, torch::zeros({0, 6}), LossGains{1, 1, 1});
  EXPECT_NEAR(again.items[1].item<double>(), expected, 1e-3 * expected);
}

TEST_F(DetectionLossTest, ImageWithoutTargetsInABatch) {
  const LossOutput out = loss_.Compute(model_->ForwardRaw(images_),
                                       targets_.narrow(0, 0, 2), LossGains());
  EXPECT_TRUE(torch::isfinite(out.items).all().item<bool>());
  EXPECT_GT(out.items[0].item<float>(), 0.0f);
}

TEST_F(DetectionLossTest, TryComputeRejectsBadInputs) {
  const auto raw = model_->ForwardRaw(images_);
  EXPECT_TRUE(loss_.TryCompute(raw, targets_, LossGains()).ok());
  const auto bad_class = T({0, 2, 0.5, 0.5, 0.1, 0.1}, {1, 6});
  EXPECT_EQ(loss_.TryCompute(raw, bad_class, LossGains()).status().code(),
            absl::StatusCode::kInvalidArgument);
  const auto bad_batch = T({2, 0, 0.5, 0.5, 0.1, 0.1}, {1, 6});
  EXPECT_EQ(loss_.TryCompute(raw, bad_batch, LossGains()).status().code(),
            absl::StatusCode::kInvalidArgument);
  const auto nan = T({0, 0, NAN, 0.5, 0.1, 0.1}, {1, 6});
  EXPECT_EQ(loss_.TryCompute(raw, nan, LossGains()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      loss_.TryCompute(raw, torch::zeros({3, 5}), LossGains()).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(loss_.TryCompute({raw[0]}, targets_, LossGains()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_THROW(loss_.Compute({}, targets_, LossGains()), c10::Error);
}

}  // namespace
}  // namespace yolohook::nn
