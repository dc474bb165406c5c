#include "server/engine/data/augment.h"

#include <array>
#include <cmath>
#include <opencv2/imgproc.hpp>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/data/test_util.h"

namespace yolohook::data {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::SizeIs;

const cv::Scalar kBackground(60, 60, 60);
const cv::Scalar kRed(0, 0, 220);

// A uniform image with a filled rectangle [x1, x2) x [y1, y2) of `color` and
// the matching box.
LabeledImage WithRectangle(int width, int height, cv::Rect rect,
                           const cv::Scalar& color = kRed, int cls = 0) {
  LabeledImage out;
  out.image = testing::Solid(width, height, kBackground);
  cv::rectangle(out.image, rect, color, cv::FILLED);
  PixelBox box;
  box.cls = cls;
  box.x1 = static_cast<float>(rect.x);
  box.y1 = static_cast<float>(rect.y);
  box.x2 = static_cast<float>(rect.x + rect.width);
  box.y2 = static_cast<float>(rect.y + rect.height);
  out.boxes.push_back(box);
  return out;
}

// Expects `box` to bound the pixels of `color` in `image` within `tolerance`
// pixels on every side. A rotated box cut by the image border is the clipped
// bounding box of the whole rotated shape, so it may be larger than what
// remains visible: there the box need only contain the pixels.
void ExpectBoxMatchesPixels(const cv::Mat& image, const PixelBox& box,
                            const cv::Scalar& color, float tolerance) {
  const cv::Rect pixels = testing::ColorBounds(image, color, 60);
  ASSERT_GT(pixels.area(), 0);
  const bool clipped = box.x1 <= 0.5f || box.y1 <= 0.5f ||
                       box.x2 >= image.cols - 0.5f ||
                       box.y2 >= image.rows - 0.5f;
  if (clipped) {
    EXPECT_LE(box.x1, pixels.x + tolerance);
    EXPECT_LE(box.y1, pixels.y + tolerance);
    EXPECT_GE(box.x2, pixels.x + pixels.width - tolerance);
    EXPECT_GE(box.y2, pixels.y + pixels.height - tolerance);
    return;
  }
  EXPECT_NEAR(box.x1, pixels.x, tolerance);
  EXPECT_NEAR(box.y1, pixels.y, tolerance);
  EXPECT_NEAR(box.x2, pixels.x + pixels.width, tolerance);
  EXPECT_NEAR(box.y2, pixels.y + pixels.height, tolerance);
}

void ExpectInside(const std::vector<PixelBox>& boxes, cv::Size size) {
  for (const PixelBox& b : boxes) {
    EXPECT_GE(b.x1, 0);
    EXPECT_GE(b.y1, 0);
    EXPECT_LE(b.x2, size.width);
    EXPECT_LE(b.y2, size.height);
    EXPECT_LT(b.x1, b.x2);
    EXPECT_LT(b.y1, b.y2);
  }
}

TEST(LetterboxTest, WideImageIsScaledAndPaddedVertically) {
  const cv::Mat image = testing::Solid(200, 100, kRed);
  LetterboxInfo info;
  const cv::Mat out = Letterbox(image, 64, &info);
  ASSERT_EQ(out.size(), cv::Size(64, 64));
  EXPECT_FLOAT_EQ(info.ratio, 0.32f);
  EXPECT_FLOAT_EQ(info.pad_w, 0);
  EXPECT_FLOAT_EQ(info.pad_h, 16);
  EXPECT_EQ(out.at<cv::Vec3b>(15, 10), cv::Vec3b(114, 114, 114));
  EXPECT_EQ(out.at<cv::Vec3b>(16, 10), cv::Vec3b(0, 0, 220));
  EXPECT_EQ(out.at<cv::Vec3b>(47, 63), cv::Vec3b(0, 0, 220));
  EXPECT_EQ(out.at<cv::Vec3b>(48, 63), cv::Vec3b(114, 114, 114));
}

TEST(LetterboxTest, OddPaddingPutsTheExtraPixelLast) {
  LetterboxInfo info;
  const cv::Mat out = Letterbox(testing::Solid(64, 33, kRed), 64, &info);
  EXPECT_FLOAT_EQ(info.ratio, 1);
  EXPECT_FLOAT_EQ(info.pad_h, 15);
  EXPECT_EQ(out.at<cv::Vec3b>(14, 0), cv::Vec3b(114, 114, 114));
  EXPECT_EQ(out.at<cv::Vec3b>(15, 0), cv::Vec3b(0, 0, 220));
  EXPECT_EQ(out.at<cv::Vec3b>(47, 0), cv::Vec3b(0, 0, 220));
  EXPECT_EQ(out.at<cv::Vec3b>(48, 0), cv::Vec3b(114, 114, 114));
}

TEST(LetterboxTest, NoScaleupKeepsSmallImages) {
  LetterboxInfo info;
  const cv::Mat out =
      Letterbox(testing::Solid(20, 10), 64, &info, /*scaleup=*/false);
  EXPECT_EQ(out.size(), cv::Size(64, 64));
  EXPECT_FLOAT_EQ(info.ratio, 1);
  EXPECT_FLOAT_EQ(info.pad_w, 22);
  EXPECT_FLOAT_EQ(info.pad_h, 27);

  Letterbox(testing::Solid(20, 10), 64, &info, /*scaleup=*/true);
  EXPECT_FLOAT_EQ(info.ratio, 3.2f);
  EXPECT_FLOAT_EQ(info.pad_w, 0);
  EXPECT_FLOAT_EQ(info.pad_h, 16);
}

TEST(LetterboxTest, LabelsFollowThePixels) {
  // Rectangle [50, 100) x [20, 60) of a 200 x 100 image.
  const LabeledImage in = WithRectangle(200, 100, cv::Rect(50, 20, 50, 40));
  const std::vector<Label> labels = ToLabels(in.boxes, 200, 100);
  LetterboxInfo info;
  const cv::Mat out = Letterbox(in.image, 64, &info);
  const std::vector<Label> mapped = LetterboxLabels(labels, 200, 100, info, 64);
  ASSERT_THAT(mapped, SizeIs(1));
  // x: 50 * 0.32 = 16 .. 32; y: 20 * 0.32 + 16 = 22.4 .. 35.2.
  EXPECT_NEAR(mapped[0].xc * 64, 24, 1e-4);
  EXPECT_NEAR(mapped[0].w * 64, 16, 1e-4);
  EXPECT_NEAR(mapped[0].yc * 64, 28.8, 1e-4);
  EXPECT_NEAR(mapped[0].h * 64, 12.8, 1e-4);
  ExpectBoxMatchesPixels(out, ToPixelBoxes(mapped, 64, 64)[0], kRed, 1.0f);
}

TEST(ResizeLongSideTest, ScalesTheLongSideOnly) {
  float ratio = 0;
  cv::Mat out = ResizeLongSide(testing::Solid(300, 150), 64, false, &ratio);
  EXPECT_EQ(out.size(), cv::Size(64, 32));
  EXPECT_FLOAT_EQ(ratio, 64.0f / 300);
  out = ResizeLongSide(testing::Solid(10, 33), 64, false, &ratio);
  EXPECT_EQ(out.size(), cv::Size(20, 64));  // ceil(19.39)
  const cv::Mat same = testing::Solid(64, 20);
  EXPECT_EQ(ResizeLongSide(same, 64, true).data, same.data);
}

TEST(PixelBoxTest, RoundTripAndClipping) {
  const std::vector<PixelBox> boxes = {{1, -5, 10, 30, 20},
                                       {2, 50, 50, 60, 60}};
  const std::vector<Label> labels = ToLabels(boxes, 40, 40);
  ASSERT_THAT(labels, SizeIs(1));  // the second lies outside
  EXPECT_EQ(labels[0].cls, 1);
  EXPECT_FLOAT_EQ(labels[0].xc, 15.0f / 40);
  EXPECT_FLOAT_EQ(labels[0].w, 30.0f / 40);
  const std::vector<PixelBox> back = ToPixelBoxes(labels, 40, 40);
  EXPECT_FLOAT_EQ(back[0].x1, 0);
  EXPECT_FLOAT_EQ(back[0].x2, 30);
  EXPECT_FLOAT_EQ(back[0].y1, 10);
  EXPECT_FLOAT_EQ(back[0].y2, 20);
}

TEST(MosaicTest, TilesMeetAtTheCentre) {
  const int s = 32;
  const cv::Scalar colors[4] = {
      {200, 0, 0}, {0, 200, 0}, {0, 0, 200}, {200, 200, 0}};
  std::array<LabeledImage, 4> tiles;
  for (int i = 0; i < 4; ++i) {
    tiles[i].image = testing::Solid(s, 20, colors[i]);
    tiles[i].boxes = {{i, 0, 0, static_cast<float>(s), 20}};
  }
  const LabeledImage m = Mosaic4At(tiles, s, cv::Point(40, 24));
  ASSERT_EQ(m.image.size(), cv::Size(64, 64));
  EXPECT_EQ(m.image.at<cv::Vec3b>(23, 39), cv::Vec3b(200, 0, 0));
  EXPECT_EQ(m.image.at<cv::Vec3b>(23, 40), cv::Vec3b(0, 200, 0));
  EXPECT_EQ(m.image.at<cv::Vec3b>(24, 39), cv::Vec3b(0, 0, 200));
  EXPECT_EQ(m.image.at<cv::Vec3b>(24, 40), cv::Vec3b(200, 200, 0));
  EXPECT_EQ(m.image.at<cv::Vec3b>(0, 0), cv::Vec3b(114, 114, 114));
  ASSERT_THAT(m.boxes, SizeIs(4));
  // Tile 0 ends at the centre; tile 1 is cut at the canvas edge (64).
  EXPECT_THAT(std::vector<float>(
                  {m.boxes[0].x1, m.boxes[0].y1, m.boxes[0].x2, m.boxes[0].y2}),
              ElementsAre(8, 4, 40, 24));
  EXPECT_THAT(std::vector<float>(
                  {m.boxes[1].x1, m.boxes[1].y1, m.boxes[1].x2, m.boxes[1].y2}),
              ElementsAre(40, 4, 64, 24));
  EXPECT_THAT(std::vector<float>(
                  {m.boxes[3].x1, m.boxes[3].y1, m.boxes[3].x2, m.boxes[3].y2}),
              ElementsAre(40, 24, 64, 44));
  for (int i = 0; i < 4; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(m.boxes[i].cls, i);
    ExpectBoxMatchesPixels(m.image, m.boxes[i], colors[i], 0);
  }
}

TEST(IsBoxCandidateTest, UltralyticsThresholds) {
  const PixelBox before{0, 0, 0, 20, 20};
  EXPECT_TRUE(IsBoxCandidate(before, {0, 5, 5, 25, 25}, 1.0));
  EXPECT_FALSE(IsBoxCandidate(before, {0, 5, 5, 7, 25}, 1.0));  // 2 px wide
  EXPECT_FALSE(IsBoxCandidate(before, {0, 0, 0, 5, 5}, 1.0));   // 6% area
  EXPECT_TRUE(IsBoxCandidate(before, {0, 0, 0, 5, 5}, 0.5));    // 25% scaled
  EXPECT_FALSE(IsBoxCandidate({0, 0, 0, 400, 3}, {0, 0, 0, 400, 3}, 1.0, 2,
                              100));  // aspect 133
}

TEST(RandomAffineTest, IdentityWhenAllRangesAreZero) {
  const LabeledImage in = WithRectangle(48, 48, cv::Rect(10, 12, 8, 6));
  std::mt19937 rng(1);
  const LabeledImage out =
      RandomAffine(in, NoAugmentation(), cv::Size(48, 48), rng);
  EXPECT_EQ(out.image.data, in.image.data);
  ASSERT_THAT(out.boxes, SizeIs(1));
  EXPECT_FLOAT_EQ(out.boxes[0].x1, 10);
  EXPECT_FLOAT_EQ(out.boxes[0].y2, 18);
}

TEST(RandomAffineTest, BoxFollowsTheRectangle) {
  AugmentOptions hyp;
  hyp.degrees = 30;
  hyp.shear = 8;
  hyp.scale = 0.5;
  hyp.translate = 0.2;
  int kept = 0;
  for (uint32_t seed = 0; seed < 40; ++seed) {
    SCOPED_TRACE(seed);
    std::mt19937 rng(seed);
    const LabeledImage in = WithRectangle(64, 64, cv::Rect(20, 16, 20, 12));
    const LabeledImage out = RandomAffine(in, hyp, cv::Size(64, 64), rng);
    ASSERT_EQ(out.image.size(), cv::Size(64, 64));
    ExpectInside(out.boxes, out.image.size());
    if (out.boxes.empty()) continue;
    ++kept;
    // A rotated rectangle's corners bound its pixels exactly; bilinear edges
    // and pixel centres leave about a pixel.
    ExpectBoxMatchesPixels(out.image, out.boxes[0], kRed, 2.0f);
  }
  EXPECT_GT(kept, 30);
}

TEST(MosaicAffineTest, LabelsStayInsideAndFollowThePixels) {
  const int s = 64;
  AugmentOptions hyp;
  hyp.degrees = 10;
  hyp.scale = 0.5;
  hyp.translate = 0.1;
  int checked = 0;
  for (uint32_t seed = 0; seed < 60; ++seed) {
    SCOPED_TRACE(seed);
    std::mt19937 rng(seed);
    std::array<LabeledImage, 4> tiles;
    tiles[0] = WithRectangle(s, 48, cv::Rect(8, 10, 30, 24));
    for (int i = 1; i < 4; ++i) {
      tiles[i].image = testing::Solid(s, s - 8 * i, kBackground);
    }
    const LabeledImage mosaic = Mosaic4(tiles, s, rng);
    ASSERT_EQ(mosaic.image.size(), cv::Size(2 * s, 2 * s));
    const LabeledImage out = RandomAffine(mosaic, hyp, cv::Size(s, s), rng);
    ASSERT_EQ(out.image.size(), cv::Size(s, s));
    ExpectInside(out.boxes, out.image.size());
    ASSERT_LE(out.boxes.size(), 1u);
    const cv::Rect pixels = testing::ColorBounds(out.image, kRed, 60);
    if (out.boxes.empty()) {
      // Dropped boxes are those mostly cropped away.
      EXPECT_LT(pixels.area(), 0.2 * 30 * 24 * 1.5 * 1.5);
      continue;
    }
    ++checked;
    ExpectBoxMatchesPixels(out.image, out.boxes[0], kRed, 2.0f);
  }
  EXPECT_GT(checked, 10);
}

TEST(FlipTest, FlipsMoveLabelsWithPixels) {
  const LabeledImage in = WithRectangle(40, 20, cv::Rect(2, 3, 10, 5));
  std::vector<Label> labels = ToLabels(in.boxes, 40, 20);
  cv::Mat image = in.image.clone();
  FlipHorizontal(&image, &labels);
  EXPECT_FLOAT_EQ(labels[0].xc, 1 - 7.0f / 40);
  ExpectBoxMatchesPixels(image, ToPixelBoxes(labels, 40, 20)[0], kRed, 0);
  FlipVertical(&image, &labels);
  EXPECT_FLOAT_EQ(labels[0].yc, 1 - 5.5f / 20);
  ExpectBoxMatchesPixels(image, ToPixelBoxes(labels, 40, 20)[0], kRed, 0);
  EXPECT_FLOAT_EQ(labels[0].w, 10.0f / 40);
  EXPECT_FLOAT_EQ(labels[0].h, 5.0f / 20);
}

TEST(FlipTest, RandomFlipsFollowTheProbabilities) {
  const LabeledImage in = WithRectangle(40, 20, cv::Rect(2, 3, 10, 5));
  std::mt19937 rng(3);
  std::vector<Label> labels = ToLabels(in.boxes, 40, 20);
  cv::Mat image = in.image.clone();
  RandomFlips(&image, &labels, 0, 0, rng);
  EXPECT_FLOAT_EQ(labels[0].xc, 7.0f / 40);
  EXPECT_EQ(cv::norm(image, in.image, cv::NORM_INF), 0);
  RandomFlips(&image, &labels, 1, 1, rng);
  EXPECT_FLOAT_EQ(labels[0].xc, 1 - 7.0f / 40);
  EXPECT_FLOAT_EQ(labels[0].yc, 1 - 5.5f / 20);
  ExpectBoxMatchesPixels(image, ToPixelBoxes(labels, 40, 20)[0], kRed, 0);
}

TEST(HsvTest, ChangesColoursNotSizeOrLabels) {
  const LabeledImage in = WithRectangle(40, 30, cv::Rect(5, 5, 10, 10));
  std::vector<Label> labels = ToLabels(in.boxes, 40, 30);
  const std::vector<Label> before = labels;
  cv::Mat image = in.image.clone();
  std::mt19937 rng(5);
  AugmentHsv(&image, 0.5, 0.7, 0.4, rng);
  EXPECT_EQ(image.size(), in.image.size());
  EXPECT_EQ(image.type(), CV_8UC3);
  EXPECT_GT(cv::norm(image, in.image, cv::NORM_INF), 0);
  ASSERT_THAT(labels, SizeIs(1));
  EXPECT_EQ(labels[0].xc, before[0].xc);
  EXPECT_EQ(labels[0].w, before[0].w);

  cv::Mat untouched = in.image.clone();
  AugmentHsv(&untouched, 0, 0, 0, rng);
  EXPECT_EQ(cv::norm(untouched, in.image, cv::NORM_INF), 0);
}

TEST(HsvTest, GainsScaleValueAndRotateHue) {
  cv::Mat image = testing::Solid(4, 4, cv::Scalar(0, 0, 200));  // pure red
  ApplyHsvGains(&image, 1, 1, 0.5);
  const cv::Vec3b darker = image.at<cv::Vec3b>(0, 0);
  EXPECT_NEAR(darker[2], 100, 1);
  EXPECT_EQ(darker[0], 0);

  cv::Mat blue = testing::Solid(4, 4, cv::Scalar(200, 0, 0));  // hue 120
  ApplyHsvGains(&blue, 0.5, 1, 1);                             // hue 60: green
  const cv::Vec3b green = blue.at<cv::Vec3b>(0, 0);
  EXPECT_NEAR(green[1], 200, 1);
  EXPECT_NEAR(green[0], 0, 1);
  EXPECT_NEAR(green[2], 0, 1);
}

}  // namespace
}  // namespace yolohook::data
