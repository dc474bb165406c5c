#include "server/engine/metrics/metrics.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace yolohook::metrics {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

Box MakeBox(float x1, float y1, float x2, float y2, int cls, float conf = 1) {
  Box box;
  box.x1 = x1;
  box.y1 = y1;
  box.x2 = x2;
  box.y2 = y2;
  box.cls = cls;
  box.conf = conf;
  return box;
}

// The flags of one prediction as a string of T/F, one per IoU threshold.
std::string Flags(const std::array<bool, kNumIouThresholds>& flags) {
  std::string out;
  for (bool flag : flags) out += flag ? 'T' : 'F';
  return out;
}

std::string PadLeft(const std::string& text, size_t width) {
  return std::string(width > text.size() ? width - text.size() : 0, ' ') + text;
}

TEST(IouThresholdsTest, AreHalfToNinetyFiveInStepsOfFive) {
  EXPECT_THAT(IouThresholds(), ElementsAre(0.50, 0.55, 0.60, 0.65, 0.70, 0.75,
                                           0.80, 0.85, 0.90, 0.95));
}

TEST(BoxIouTest, HandCases) {
  const Box a = MakeBox(0, 0, 10, 10, 0);
  EXPECT_FLOAT_EQ(BoxIou(a, a), 1.0f);
  EXPECT_FLOAT_EQ(BoxIou(a, MakeBox(0, 0, 10, 6, 0)), 0.6f);
  // 5x10 overlap of two 10x10 boxes: 50 / 150.
  EXPECT_FLOAT_EQ(BoxIou(a, MakeBox(5, 0, 15, 10, 0)), 1.0f / 3.0f);
  EXPECT_EQ(BoxIou(a, MakeBox(10, 0, 20, 10, 0)), 0.0);  // touching
  EXPECT_EQ(BoxIou(a, MakeBox(5, 5, 5, 5, 0)), 0.0);     // no area
  EXPECT_EQ(BoxIou(a, MakeBox(NAN, 0, 10, 10, 0)), 0.0);
}

TEST(InterpTest, MatchesNumpyIncludingRepeatedPoints) {
  const std::vector<double> xp = {0, 0.5, 0.5, 1};
  const std::vector<double> fp = {1, 1, 0.5, 0};
  EXPECT_DOUBLE_EQ(Interp(0.25, xp, fp, 9, 9), 1.0);
  // Among equal xp the rightmost value is taken, as numpy does.
  EXPECT_DOUBLE_EQ(Interp(0.5, xp, fp, 9, 9), 0.5);
  EXPECT_DOUBLE_EQ(Interp(0.75, xp, fp, 9, 9), 0.25);
  EXPECT_DOUBLE_EQ(Interp(1.0, xp, fp, 9, 9), 0.0);
  EXPECT_DOUBLE_EQ(Interp(-0.1, xp, fp, 7, 9), 7.0);
  EXPECT_DOUBLE_EQ(Interp(1.1, xp, fp, 7, 9), 9.0);
}

TEST(SmoothTest, BoxFilterOf101PointsForAThousandValues) {
  std::vector<double> y(1000, 0.0);
  y[500] = 101;
  const std::vector<double> s = Smooth(y, 0.1);
  ASSERT_EQ(s.size(), 1000u);
  EXPECT_DOUBLE_EQ(s[449], 0.0);
  EXPECT_NEAR(s[450], 1.0, 1e-12);
  EXPECT_NEAR(s[500], 1.0, 1e-12);
  EXPECT_NEAR(s[550], 1.0, 1e-12);
  EXPECT_DOUBLE_EQ(s[551], 0.0);

  // The ends are padded with the first and last values.
  std::vector<double> ramp(1000, 0.0);
  ramp[999] = 101;
  const std::vector<double> r = Smooth(ramp, 0.1);
  EXPECT_NEAR(r[999], 51.0, 1e-9);  // 50 pads + the value itself
  EXPECT_DOUBLE_EQ(r[0], 0.0);
}

TEST(SmoothTest, EvenWidthForShortSeries) {
  // 30 values: width round(6) / 2 + 1 = 4, two pads each side; value k
  // averages padded elements k..k+3, i.e. y[k-2..k+1].
  std::vector<double> y(30);
  for (int i = 0; i < 30; ++i) y[i] = i;
  const std::vector<double> s = Smooth(y, 0.1);
  ASSERT_EQ(s.size(), 30u);
  EXPECT_NEAR(s[5], (3 + 4 + 5 + 6) / 4.0, 1e-12);
  EXPECT_NEAR(s[0], (0 + 0 + 0 + 1) / 4.0, 1e-12);
  const std::vector<double> flat = Smooth(std::vector<double>(30, 2.5), 0.1);
  for (double v : flat) EXPECT_NEAR(v, 2.5, 1e-12);
}

TEST(ComputeApTest, PerfectCurveIsNearlyOne) {
  // Precision 1 up to recall 1, then the padding drops it to 0 at recall 1:
  // 99 intervals at 1 and one half interval, 0.99 + 0.005.
  EXPECT_NEAR(ComputeAp({1.0}, {1.0}), 0.995, 1e-12);
  EXPECT_NEAR(ComputeAp({0.5, 1.0}, {1.0, 1.0}), 0.995, 1e-12);
}

TEST(ComputeApTest, OneTruePositiveAtHalfRecall) {
  // mrec = 0, 0.5, 1 and mpre = 1, 1, 0: precision 1 up to recall 0.5, then a
  // straight line down to 0 at recall 1. 0.5 * 1 + 0.5 * 0.5 * 1 = 0.75.
  EXPECT_NEAR(ComputeAp({0.5}, {1.0}), 0.75, 1e-12);
}

TEST(ComputeApTest, FalsePositiveAtSameRecallUsesLowerPrecisionAtThatPoint) {
  // mrec = 0, .5, .5, 1 and mpre = 1, 1, .5, 0. Recall 0.5 interpolates to the
  // rightmost point (0.5), so: 0.49 (points 0..0.49 at 1) + 0.01 * 1.5 / 2
  // + the line from (0.5, 0.5) to (1, 0): 0.125. Total 0.6225.
  EXPECT_NEAR(ComputeAp({0.5, 0.5}, {1.0, 0.5}), 0.6225, 1e-12);
}

TEST(ComputeApTest, PrecisionEnvelopeIsMonotone) {
  // Precision 0.5 at recall 0.5 is lifted to 0.75 by the later point:
  // 0.25 * 1 + 0.25 * (1 + 0.75) / 2 + 0.25 * 0.75 + 0.25 * 0.75 / 2 = 0.75.
  EXPECT_NEAR(ComputeAp({0.25, 0.5, 0.75}, {1.0, 0.5, 0.75}), 0.75, 1e-12);
}

TEST(ComputeApTest, NoTruePositivesIsZero) {
  EXPECT_NEAR(ComputeAp({0.0, 0.0}, {0.0, 0.0}), 0.0, 1e-12);
  // Only the padding: a straight line from (0, 1) to (1, 0).
  EXPECT_NEAR(ComputeAp({}, {}), 0.5, 1e-12);
}

TEST(MatchPredictionsTest, IouSixTenthsCountsUpToSixTenths) {
  const auto correct =
      MatchPredictions({MakeBox(0, 0, 10, 6, 0)}, {MakeBox(0, 0, 10, 10, 0)});
  ASSERT_EQ(correct.size(), 1u);
  EXPECT_EQ(Flags(correct[0]), "TTTFFFFFFF");
}

TEST(MatchPredictionsTest, ClassMismatchIsNeverCorrect) {
  const auto correct =
      MatchPredictions({MakeBox(0, 0, 10, 10, 1)}, {MakeBox(0, 0, 10, 10, 0)});
  ASSERT_EQ(correct.size(), 1u);
  EXPECT_EQ(Flags(correct[0]), "FFFFFFFFFF");
}

TEST(MatchPredictionsTest, TwoPredictionsOnOneLabelOnlyTheBestCounts) {
  // IoU 0.7 (first) and 0.9 (second): the label goes to the higher IoU.
  const auto correct =
      MatchPredictions({MakeBox(0, 0, 10, 7, 0), MakeBox(0, 0, 10, 9, 0)},
                       {MakeBox(0, 0, 10, 10, 0)});
  ASSERT_EQ(correct.size(), 2u);
  EXPECT_EQ(Flags(correct[0]), "FFFFFFFFFF");
  EXPECT_EQ(Flags(correct[1]), "TTTTTTTTTF");
}

TEST(MatchPredictionsTest, OnePredictionOnTwoLabelsLeavesTheOtherLabel) {
  // P0 overlaps L0 (0.9) and L1 (80/90); P1 overlaps L1 (70/80) and L0 (0.7).
  // Greedy: P0-L0 first, so P1 takes L1 up to IoU 0.875.
  const auto correct =
      MatchPredictions({MakeBox(0, 0, 10, 9, 0), MakeBox(0, 0, 10, 7, 0)},
                       {MakeBox(0, 0, 10, 10, 0), MakeBox(0, 0, 10, 8, 0)});
  ASSERT_EQ(correct.size(), 2u);
  EXPECT_EQ(Flags(correct[0]), "TTTTTTTTTF");
  EXPECT_EQ(Flags(correct[1]), "TTTTTTTTFF");
}

TEST(MatchPredictionsTest, EmptyInputs) {
  EXPECT_TRUE(MatchPredictions({}, {MakeBox(0, 0, 1, 1, 0)}).empty());
  const auto correct = MatchPredictions({MakeBox(0, 0, 1, 1, 0)}, {});
  ASSERT_EQ(correct.size(), 1u);
  EXPECT_EQ(Flags(correct[0]), "FFFFFFFFFF");
}

TEST(DetectionMetricsTest, PerfectPredictions) {
  DetectionMetrics metrics({"cat", "dog"});
  for (int i = 0; i < 3; ++i) {
    const std::vector<Box> labels = {MakeBox(0, 0, 10, 10, 0),
                                     MakeBox(20, 20, 40, 30, 1)};
    std::vector<Box> preds = labels;
    preds[0].conf = 0.9f;
    preds[1].conf = 0.8f;
    metrics.AddImage(preds, labels);
  }
  const Summary s = metrics.Compute();
  EXPECT_DOUBLE_EQ(s.precision, 1.0);
  EXPECT_DOUBLE_EQ(s.recall, 1.0);
  // Ultralytics' interpolated AP of a perfect curve is 0.995 (see ComputeAp).
  EXPECT_NEAR(s.map50, 0.995, 1e-12);
  EXPECT_NEAR(s.map50_95, 0.995, 1e-12);
  EXPECT_DOUBLE_EQ(s.fitness, s.map50_95);
  EXPECT_EQ(s.images, 3);
  EXPECT_EQ(s.instances, 6);
  ASSERT_EQ(s.per_class.size(), 2u);
  EXPECT_EQ(s.per_class[1].name, "dog");
  EXPECT_EQ(s.per_class[1].images, 3);
  EXPECT_EQ(s.per_class[1].instances, 3);
  EXPECT_THAT(s.confusion,
              ElementsAre(ElementsAre(3, 0, 0), ElementsAre(0, 3, 0),
                          ElementsAre(0, 0, 0)));
  const auto map = s.ToMap();
  EXPECT_DOUBLE_EQ(map.at("metrics/precision(B)"), 1.0);
  EXPECT_DOUBLE_EQ(map.at("metrics/recall(B)"), 1.0);
  EXPECT_NEAR(map.at("metrics/mAP50(B)"), 0.995, 1e-12);
  EXPECT_NEAR(map.at("metrics/mAP50-95(B)"), 0.995, 1e-12);
  EXPECT_NEAR(map.at("fitness"), 0.995, 1e-12);
}

TEST(DetectionMetricsTest, AllWrongClassScoresZero) {
  DetectionMetrics metrics({"cat", "dog"});
  const std::vector<Box> labels = {MakeBox(0, 0, 10, 10, 0),
                                   MakeBox(20, 20, 40, 30, 1)};
  metrics.AddImage(
      {MakeBox(0, 0, 10, 10, 1, 0.9f), MakeBox(20, 20, 40, 30, 0, 0.8f)},
      labels);
  const Summary s = metrics.Compute();
  EXPECT_EQ(s.precision, 0.0);
  EXPECT_EQ(s.recall, 0.0);
  EXPECT_EQ(s.map50, 0.0);
  EXPECT_EQ(s.map50_95, 0.0);
  // Class-agnostic matching puts them off the diagonal.
  EXPECT_THAT(s.confusion,
              ElementsAre(ElementsAre(0, 1, 0), ElementsAre(1, 0, 0),
                          ElementsAre(0, 0, 0)));
}

TEST(DetectionMetricsTest, TwoClassesWithAFalsePositive) {
  DetectionMetrics metrics({"cat", "dog"});
  // Image 1: cat TP (0.9), cat FP (0.8), dog TP (0.7).
  metrics.AddImage(
      {MakeBox(0, 0, 10, 10, 0, 0.9f), MakeBox(40, 40, 50, 50, 0, 0.8f),
       MakeBox(20, 20, 30, 30, 1, 0.7f)},
      {MakeBox(0, 0, 10, 10, 0), MakeBox(20, 20, 30, 30, 1)});
  // Image 2: cat TP (0.6).
  metrics.AddImage({MakeBox(0, 0, 10, 10, 0, 0.6f)},
                   {MakeBox(0, 0, 10, 10, 0)});
  const Summary s = metrics.Compute();

  // cat: recall .5 .5 1, precision 1 .5 2/3; envelope 1 up to recall .5 (the
  // point at exactly .5 takes 2/3), then 2/3 until 1 where it drops to 0:
  // 0.49 + 0.01 * (1 + 2/3) / 2 + 0.49 * 2/3 + 0.01 * (2/3) / 2.
  const double cat_ap =
      0.49 + 0.01 * (5.0 / 3.0) / 2 + 0.49 * 2.0 / 3.0 + 0.01 * (2.0 / 3.0) / 2;
  const double dog_ap = 0.995;
  ASSERT_EQ(s.per_class.size(), 2u);
  EXPECT_NEAR(s.per_class[0].map50, cat_ap, 1e-12);
  EXPECT_NEAR(s.per_class[1].map50, dog_ap, 1e-12);
  EXPECT_NEAR(s.map50, (cat_ap + dog_ap) / 2, 1e-12);
  EXPECT_NEAR(s.map50, 0.9116666666666667, 1e-12);
  EXPECT_NEAR(s.map50_95, s.map50, 1e-12);  // every IoU is 1
  // Mean F1 is highest (0.9) for confidences up to 0.6, where cat has P 2/3,
  // R 1 and dog P 1, R 1.
  EXPECT_NEAR(s.per_class[0].precision, 2.0 / 3.0, 1e-12);
  EXPECT_NEAR(s.per_class[0].recall, 1.0, 1e-12);
  EXPECT_NEAR(s.precision, (2.0 / 3.0 + 1.0) / 2, 1e-12);
  EXPECT_NEAR(s.recall, 1.0, 1e-12);
  EXPECT_EQ(s.per_class[0].images, 2);
  EXPECT_EQ(s.per_class[0].instances, 2);
  EXPECT_EQ(s.per_class[1].images, 1);
  EXPECT_EQ(s.per_class[1].instances, 1);
  EXPECT_EQ(s.instances, 3);
  EXPECT_THAT(s.confusion,
              ElementsAre(ElementsAre(2, 0, 1), ElementsAre(0, 1, 0),
                          ElementsAre(0, 0, 0)));
}

TEST(DetectionMetricsTest, ClassWithLabelsButNoPredictions) {
  DetectionMetrics metrics({"a", "b", "c"});
  metrics.AddImage({MakeBox(0, 0, 10, 10, 0, 0.9f)},
                   {MakeBox(0, 0, 10, 10, 0), MakeBox(20, 20, 30, 30, 1)});
  const Summary s = metrics.Compute();
  ASSERT_EQ(s.per_class.size(), 2u);  // c has no labels: no row
  EXPECT_EQ(s.per_class[0].cls, 0);
  EXPECT_EQ(s.per_class[1].cls, 1);
  EXPECT_EQ(s.per_class[1].precision, 0.0);
  EXPECT_EQ(s.per_class[1].recall, 0.0);
  EXPECT_EQ(s.per_class[1].map50, 0.0);
  EXPECT_EQ(s.per_class[1].map50_95, 0.0);
  EXPECT_NEAR(s.map50, 0.995 / 2, 1e-12);
  EXPECT_NEAR(s.precision, 0.5, 1e-12);
  EXPECT_NEAR(s.recall, 0.5, 1e-12);
  EXPECT_EQ(s.confusion[3][1], 1);  // the missed b is background
}

TEST(DetectionMetricsTest, ImagesWithoutLabels) {
  DetectionMetrics metrics({"a"});
  metrics.AddImage({}, {});
  metrics.AddImage({MakeBox(50, 50, 60, 60, 0, 0.5f)}, {});
  metrics.AddImage({MakeBox(0, 0, 10, 10, 0, 0.9f)},
                   {MakeBox(0, 0, 10, 10, 0)});
  const Summary s = metrics.Compute();
  EXPECT_EQ(s.images, 3);
  EXPECT_EQ(s.instances, 1);
  ASSERT_EQ(s.per_class.size(), 1u);
  EXPECT_EQ(s.per_class[0].images, 1);
  // The false positive ranks below the true positive: AP is unchanged.
  EXPECT_NEAR(s.map50, 0.995, 1e-12);
  EXPECT_THAT(s.confusion, ElementsAre(ElementsAre(1, 1), ElementsAre(0, 0)));
}

TEST(DetectionMetricsTest, NoLabelsAtAll) {
  DetectionMetrics metrics({"a", "b"});
  metrics.AddImage({MakeBox(0, 0, 10, 10, 1, 0.9f)}, {});
  const Summary s = metrics.Compute();
  EXPECT_EQ(s.images, 1);
  EXPECT_EQ(s.instances, 0);
  EXPECT_TRUE(s.per_class.empty());
  EXPECT_EQ(s.map50, 0.0);
  EXPECT_EQ(s.precision, 0.0);
  EXPECT_EQ(s.confusion[1][2], 1);
}

TEST(DetectionMetricsTest, IgnoresOutOfRangeClassesAndNanConfidence) {
  DetectionMetrics metrics({"a"});
  metrics.AddImage(
      {MakeBox(0, 0, 10, 10, 5, 0.9f), MakeBox(0, 0, 10, 10, 0, NAN)},
      {MakeBox(0, 0, 10, 10, -1)});
  const Summary s = metrics.Compute();
  EXPECT_EQ(s.instances, 0);
  EXPECT_THAT(s.confusion, ElementsAre(ElementsAre(0, 0), ElementsAre(0, 0)));
}

TEST(DetectionMetricsTest, ConfusionMatrixHandCase) {
  DetectionMetrics metrics({"a", "b"});
  const std::vector<Box> labels = {MakeBox(0, 0, 10, 10, 0),
                                   MakeBox(20, 0, 30, 10, 1),
                                   MakeBox(40, 0, 50, 10, 0)};
  const std::vector<Box> preds = {
      MakeBox(0, 0, 10, 10, 1, 0.9f),   // b on the first a: IoU 1
      MakeBox(20, 0, 30, 10, 1, 0.2f),  // conf <= 0.25: not counted
      MakeBox(0, 0, 10, 9, 0, 0.8f),    // IoU 0.9 with a taken label
      MakeBox(44, 0, 54, 10, 0, 0.7f),  // IoU 60/140 < 0.45 with the last a
  };
  metrics.AddImage(preds, labels);
  const Summary s = metrics.Compute();
  // Rows predicted a, b, background; columns true a, b, background.
  EXPECT_THAT(s.confusion,
              ElementsAre(ElementsAre(0, 0, 2), ElementsAre(1, 0, 0),
                          ElementsAre(1, 1, 0)));

  DetectionMetrics::Options options;
  options.confusion_conf = 0.1f;
  DetectionMetrics low_conf({"a", "b"}, options);
  low_conf.AddImage(preds, labels);
  EXPECT_THAT(low_conf.Compute().confusion,
              ElementsAre(ElementsAre(0, 0, 2), ElementsAre(1, 1, 0),
                          ElementsAre(1, 0, 0)));
}

TEST(DetectionMetricsTest, ResetForgetsImages) {
  DetectionMetrics metrics({"a"});
  metrics.AddImage({MakeBox(0, 0, 10, 10, 0, 0.9f)},
                   {MakeBox(0, 0, 10, 10, 0)});
  metrics.Reset();
  const Summary s = metrics.Compute();
  EXPECT_EQ(s.images, 0);
  EXPECT_EQ(s.instances, 0);
  EXPECT_THAT(s.confusion, ElementsAre(ElementsAre(0, 0), ElementsAre(0, 0)));
}

TEST(FormatTableTest, HeaderAllRowAndClassRows) {
  Summary s;
  s.images = 3;
  s.instances = 4;
  s.precision = 0.5;
  s.recall = 0.25;
  s.map50 = 0.125;
  s.map50_95 = 0.0625;
  ClassMetrics row;
  row.cls = 1;
  row.name = "ignored";
  row.images = 2;
  row.instances = 3;
  row.precision = 1;
  row.recall = 0.123456;
  row.map50 = 0.995;
  row.map50_95 = 0.5;
  s.per_class.push_back(row);
  const std::vector<std::string> names = {"a", "dog"};

  const std::string header = PadLeft("Class", 22) + PadLeft("Images", 11) +
                             PadLeft("Instances", 11) + PadLeft("Box(P", 11) +
                             PadLeft("R", 11) + PadLeft("mAP50", 11) +
                             PadLeft("mAP50-95)", 11) + "\n";
  const std::string all = PadLeft("all", 22) + PadLeft("3", 11) +
                          PadLeft("4", 11) + PadLeft("0.5", 11) +
                          PadLeft("0.25", 11) + PadLeft("0.125", 11) +
                          PadLeft("0.0625", 11) + "\n";
  const std::string dog = PadLeft("dog", 22) + PadLeft("2", 11) +
                          PadLeft("3", 11) + PadLeft("1", 11) +
                          PadLeft("0.123", 11) + PadLeft("0.995", 11) +
                          PadLeft("0.5", 11) + "\n";
  EXPECT_EQ(FormatTable(s, names, false), header + all);
  EXPECT_EQ(FormatTable(s, names, true), header + all + dog);
  EXPECT_THAT(FormatTable(s, {}, true), HasSubstr("ignored"));
}

}  // namespace
}  // namespace yolohook::metrics
