#include "server/engine/metrics/draw.h"

#include <cmath>
#include <set>
#include <tuple>

#include "gtest/gtest.h"
#include "opencv2/core.hpp"

namespace yolohook::metrics {
namespace {

Result MakeResult(float x1, float y1, float x2, float y2, int cls, float conf) {
  Result result;
  result.names = {"circle", "square"};
  Box box;
  box.x1 = x1;
  box.y1 = y1;
  box.x2 = x2;
  box.y2 = y2;
  box.cls = cls;
  box.conf = conf;
  result.boxes.push_back(box);
  return result;
}

int ChangedPixels(const cv::Mat& a, const cv::Mat& b, const cv::Rect& roi) {
  cv::Mat diff;
  cv::absdiff(a(roi), b(roi), diff);
  cv::Mat gray;
  cv::transform(diff, gray, cv::Matx13f(1, 1, 1));
  return cv::countNonZero(gray);
}

TEST(ClassColorTest, TwentyDistinctColoursThenRepeats) {
  std::set<std::tuple<double, double, double>> colours;
  for (int cls = 0; cls < kNumClassColors; ++cls) {
    const cv::Scalar c = ClassColor(cls);
    for (int i = 0; i < 3; ++i) {
      EXPECT_GE(c[i], 0);
      EXPECT_LE(c[i], 255);
    }
    colours.insert({c[0], c[1], c[2]});
  }
  EXPECT_EQ(colours.size(), static_cast<size_t>(kNumClassColors));
  EXPECT_EQ(ClassColor(kNumClassColors + 3), ClassColor(3));
  EXPECT_EQ(ClassColor(-1), ClassColor(kNumClassColors - 1));
}

TEST(DrawResultTest, ChangesPixelsInsideTheBoxOnly) {
  const cv::Mat blank(200, 200, CV_8UC3, cv::Scalar(0, 0, 0));
  cv::Mat image = blank.clone();
  DrawResult(image, MakeResult(40, 60, 120, 140, 1, 0.87f), DrawOptions());
  // The outline and the label around the box changed...
  EXPECT_GT(ChangedPixels(blank, image, cv::Rect(38, 58, 85, 85)), 100);
  EXPECT_GT(ChangedPixels(blank, image, cv::Rect(40, 40, 80, 20)), 50);
  // ...far-away pixels did not.
  EXPECT_EQ(ChangedPixels(blank, image, cv::Rect(150, 150, 50, 50)), 0);
  EXPECT_EQ(ChangedPixels(blank, image, cv::Rect(0, 150, 30, 50)), 0);
  // The outline has the class colour.
  const cv::Vec3b edge = image.at<cv::Vec3b>(100, 40);
  const cv::Scalar colour = ClassColor(1);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(edge[i], colour[i], 1);
}

TEST(DrawResultTest, NoLabelMeansOnlyTheOutline) {
  const cv::Mat blank(200, 200, CV_8UC3, cv::Scalar(0, 0, 0));
  cv::Mat image = blank.clone();
  DrawOptions options;
  options.show_labels = false;
  options.show_conf = false;
  options.line_width = 1;
  DrawResult(image, MakeResult(40, 60, 120, 140, 0, 0.5f), options);
  EXPECT_GT(ChangedPixels(blank, image, cv::Rect(38, 58, 85, 85)), 100);
  EXPECT_EQ(ChangedPixels(blank, image, cv::Rect(40, 30, 80, 25)), 0);
  // Line width 1: the interior stays untouched.
  EXPECT_EQ(ChangedPixels(blank, image, cv::Rect(43, 63, 75, 75)), 0);
}

TEST(DrawResultTest, LabelsStayInsideTheImage) {
  const cv::Mat blank(100, 100, CV_8UC3, cv::Scalar(0, 0, 0));
  cv::Mat image = blank.clone();
  Result result = MakeResult(70, 0, 99, 30, 0, 0.5f);
  result.names = {"a_rather_long_class_name"};
  DrawResult(image, result, DrawOptions());
  // No room above: the label sits inside at the top and is shifted left, so
  // the top-left area of the image is painted.
  EXPECT_GT(ChangedPixels(blank, image, cv::Rect(0, 0, 60, 10)), 50);
  EXPECT_EQ(ChangedPixels(blank, image, cv::Rect(0, 60, 60, 40)), 0);
}

TEST(DrawResultTest, SkipsBadBoxesAndImages) {
  const cv::Mat blank(50, 50, CV_8UC3, cv::Scalar(0, 0, 0));
  cv::Mat image = blank.clone();
  DrawResult(image, MakeResult(NAN, 0, 10, 10, 0, 0.5f), DrawOptions());
  DrawResult(image, MakeResult(100, 100, 200, 200, 0, 0.5f), DrawOptions());
  EXPECT_EQ(ChangedPixels(blank, image, cv::Rect(0, 0, 50, 50)), 0);

  cv::Mat empty;
  DrawResult(empty, MakeResult(0, 0, 10, 10, 0, 0.5f), DrawOptions());
  EXPECT_TRUE(empty.empty());
  cv::Mat floats(20, 20, CV_32FC3, cv::Scalar(0, 0, 0));
  DrawResult(floats, MakeResult(0, 0, 10, 10, 0, 0.5f), DrawOptions());
  EXPECT_EQ(cv::countNonZero(floats.reshape(1)), 0);

  // Unknown class ids are drawn with the id as name; corners may be swapped.
  cv::Mat gray(50, 50, CV_8UC1, cv::Scalar(0));
  DrawResult(gray, MakeResult(40, 45, 10, 20, 7, 0.5f), DrawOptions());
  EXPECT_GT(cv::countNonZero(gray), 0);
}

TEST(DefaultLineWidthTest, ScalesWithImageSize) {
  EXPECT_EQ(DefaultLineWidth(100, 100), 2);
  EXPECT_EQ(DefaultLineWidth(640, 640), 2);
  EXPECT_EQ(DefaultLineWidth(1000, 1000), 3);
  EXPECT_EQ(DefaultLineWidth(2000, 2000), 6);
}

}  // namespace
}  // namespace yolohook::metrics
