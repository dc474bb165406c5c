#include "server/engine/data/dataset.h"

#include <filesystem>
#include <opencv2/imgproc.hpp>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/engine/data/labels.h"
#include "tests/engine/data/test_util.h"

namespace yolohook::data {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;

const cv::Scalar kBackground(60, 60, 60);
const cv::Scalar kRed(0, 0, 220);

// Records of `count` images, each a uniform background with one red
// rectangle (class i % 3), written under a fresh directory.
std::vector<ImageRecord> RectangleRecords(const std::string& dir, int count) {
  std::vector<ImageRecord> records;
  for (int i = 0; i < count; ++i) {
    ImageRecord r;
    r.width = 50 + 7 * i % 40;
    r.height = 40 + 11 * i % 45;
    r.image = absl::StrCat(dir, "/img", i, ".png");
    cv::Mat image = testing::Solid(r.width, r.height, kBackground);
    const cv::Rect rect(r.width / 5 + i % 4, r.height / 4, r.width / 2,
                        r.height / 3 + i % 5);
    cv::rectangle(image, rect, kRed, cv::FILLED);
    testing::WriteImage(r.image, image);
    Label l;
    l.cls = i % 3;
    l.xc = (rect.x + rect.width / 2.0f) / r.width;
    l.yc = (rect.y + rect.height / 2.0f) / r.height;
    l.w = static_cast<float>(rect.width) / r.width;
    l.h = static_cast<float>(rect.height) / r.height;
    r.labels.push_back(l);
    records.push_back(r);
  }
  return records;
}

std::vector<std::string> Names() { return {"a", "b", "c"}; }

// Expects every label to bound (within `tolerance` pixels) one connected red
// region of `image`. A box cut by the image border after a rotation bounds
// the whole rotated shape, so there it need only contain the region.
void ExpectLabelsMatchRedRegions(const cv::Mat& image,
                                 const std::vector<Label>& labels,
                                 float tolerance) {
  cv::Mat mask;
  cv::inRange(image, cv::Scalar(0, 0, 160), cv::Scalar(60, 60, 255), mask);
  cv::Mat component_labels, stats, centroids;
  const int n = cv::connectedComponentsWithStats(mask, component_labels, stats,
                                                 centroids);
  const float size = static_cast<float>(image.cols);
  for (const Label& l : labels) {
    const float x1 = (l.xc - l.w / 2) * size, x2 = (l.xc + l.w / 2) * size;
    const float y1 = (l.yc - l.h / 2) * size, y2 = (l.yc + l.h / 2) * size;
    const bool clipped =
        x1 <= 0.5f || y1 <= 0.5f || x2 >= size - 0.5f || y2 >= size - 0.5f;
    bool matched = false;
    for (int c = 1; c < n && !matched; ++c) {
      const float cx1 = static_cast<float>(stats.at<int>(c, cv::CC_STAT_LEFT));
      const float cy1 = static_cast<float>(stats.at<int>(c, cv::CC_STAT_TOP));
      const float cx2 = cx1 + stats.at<int>(c, cv::CC_STAT_WIDTH);
      const float cy2 = cy1 + stats.at<int>(c, cv::CC_STAT_HEIGHT);
      if (clipped) {
        // Contains the region, and the region is not a mere speck of it.
        matched = x1 <= cx1 + tolerance && y1 <= cy1 + tolerance &&
                  x2 >= cx2 - tolerance && y2 >= cy2 - tolerance &&
                  (cx2 - cx1) * (cy2 - cy1) > 0.3f * (x2 - x1) * (y2 - y1);
      } else {
        matched = std::abs(x1 - cx1) <= tolerance &&
                  std::abs(x2 - cx2) <= tolerance &&
                  std::abs(y1 - cy1) <= tolerance &&
                  std::abs(y2 - cy2) <= tolerance;
      }
    }
    EXPECT_TRUE(matched) << "label box " << x1 << "," << y1 << " " << x2 << ","
                         << y2 << " matches no red region";
  }
}

TEST(DetectionDatasetTest, ValidationLetterboxes) {
  const std::string dir = testing::MakeTempDir();
  cv::Mat image = testing::Solid(80, 40, kBackground);
  cv::rectangle(image, cv::Rect(10, 5, 20, 20), kRed, cv::FILLED);
  testing::WriteImage(dir + "/a.png", image);
  ImageRecord record{
      dir + "/a.png", {{1, 20.0f / 80, 15.0f / 40, 0.25f, 0.5f}}, 80, 40};
  DetectionDataset dataset({record}, Names(), {64, false, false});
  std::mt19937 rng(0);
  absl::StatusOr<Sample> sample = dataset.Get(0, AugmentOptions(), rng);
  ASSERT_TRUE(sample.ok()) << sample.status();
  EXPECT_EQ(sample->image.size(), cv::Size(64, 64));
  EXPECT_EQ(sample->image.type(), CV_8UC3);
  EXPECT_TRUE(sample->image.isContinuous());
  EXPECT_EQ(sample->path, dir + "/a.png");
  EXPECT_EQ(sample->orig_width, 80);
  EXPECT_EQ(sample->orig_height, 40);
  EXPECT_FLOAT_EQ(sample->letterbox.ratio, 0.8f);
  EXPECT_FLOAT_EQ(sample->letterbox.pad_w, 0);
  EXPECT_FLOAT_EQ(sample->letterbox.pad_h, 16);
  ASSERT_THAT(sample->labels, SizeIs(1));
  // x: 10 * 0.8 .. 30 * 0.8 = 8 .. 24; y: 5 * 0.8 + 16 .. 25 * 0.8 + 16.
  const Label& l = sample->labels[0];
  EXPECT_EQ(l.cls, 1);
  EXPECT_NEAR(l.xc * 64, 16, 1e-4);
  EXPECT_NEAR(l.w * 64, 16, 1e-4);
  EXPECT_NEAR(l.yc * 64, 28, 1e-4);
  EXPECT_NEAR(l.h * 64, 16, 1e-4);
  ExpectLabelsMatchRedRegions(sample->image, sample->labels, 1.0f);
}

TEST(DetectionDatasetTest, AugmentedSamplesKeepBoxesOnThePixels) {
  const std::string dir = testing::MakeTempDir();
  DetectionDataset dataset(RectangleRecords(dir, 8), Names(),
                           {64, true, false});
  AugmentOptions hyp;
  hyp.hsv_h = hyp.hsv_s = hyp.hsv_v = 0;  // keep the red findable
  hyp.degrees = 10;
  hyp.flipud = 0.5;
  int with_labels = 0;
  for (uint32_t seed = 0; seed < 24; ++seed) {
    SCOPED_TRACE(seed);
    hyp.mosaic = seed % 3 == 0 ? 0.0 : 1.0;
    std::mt19937 rng(seed);
    absl::StatusOr<Sample> sample = dataset.Get(seed % 8, hyp, rng);
    ASSERT_TRUE(sample.ok()) << sample.status();
    ASSERT_EQ(sample->image.size(), cv::Size(64, 64));
    ASSERT_TRUE(sample->image.isContinuous());
    for (const Label& l : sample->labels) {
      EXPECT_GE(l.xc - l.w / 2, -1e-5);
      EXPECT_LE(l.xc + l.w / 2, 1 + 1e-5);
      EXPECT_GE(l.yc - l.h / 2, -1e-5);
      EXPECT_LE(l.yc + l.h / 2, 1 + 1e-5);
    }
    if (!sample->labels.empty()) ++with_labels;
    ExpectLabelsMatchRedRegions(sample->image, sample->labels, 2.0f);
  }
  EXPECT_GT(with_labels, 16);
}

TEST(DetectionDatasetTest, DeterministicForARngStateWithOrWithoutCache) {
  const std::string dir = testing::MakeTempDir();
  const std::vector<ImageRecord> records = RectangleRecords(dir, 5);
  DetectionDataset plain(records, Names(), {64, true, false});
  DetectionDataset cached(records, Names(), {64, true, true});
  for (int round = 0; round < 2; ++round) {
    for (uint32_t seed = 0; seed < 5; ++seed) {
      std::mt19937 a(seed), b(seed), c(seed + 100);
      absl::StatusOr<Sample> x = plain.Get(seed, AugmentOptions(), a);
      absl::StatusOr<Sample> y = cached.Get(seed, AugmentOptions(), b);
      absl::StatusOr<Sample> z = cached.Get(seed, AugmentOptions(), c);
      ASSERT_TRUE(x.ok() && y.ok() && z.ok());
      EXPECT_EQ(cv::norm(x->image, y->image, cv::NORM_INF), 0);
      ASSERT_EQ(x->labels.size(), y->labels.size());
      for (size_t i = 0; i < x->labels.size(); ++i) {
        EXPECT_EQ(x->labels[i].xc, y->labels[i].xc);
        EXPECT_EQ(x->labels[i].h, y->labels[i].h);
      }
      EXPECT_GT(cv::norm(x->image, z->image, cv::NORM_INF), 0);
    }
  }
}

TEST(DetectionDatasetTest, HsvLeavesLabelsAndSizeUnchanged) {
  const std::string dir = testing::MakeTempDir();
  DetectionDataset dataset(RectangleRecords(dir, 3), Names(),
                           {64, true, false});
  AugmentOptions hsv_only = NoAugmentation();
  hsv_only.hsv_h = 0.3;
  hsv_only.hsv_s = 0.7;
  hsv_only.hsv_v = 0.4;
  for (uint32_t seed = 0; seed < 3; ++seed) {
    std::mt19937 a(seed), b(seed);
    absl::StatusOr<Sample> plain = dataset.Get(seed, NoAugmentation(), a);
    absl::StatusOr<Sample> coloured = dataset.Get(seed, hsv_only, b);
    ASSERT_TRUE(plain.ok() && coloured.ok());
    EXPECT_EQ(coloured->image.size(), plain->image.size());
    EXPECT_GT(cv::norm(coloured->image, plain->image, cv::NORM_INF), 0);
    ASSERT_EQ(coloured->labels.size(), plain->labels.size());
    for (size_t i = 0; i < plain->labels.size(); ++i) {
      EXPECT_EQ(coloured->labels[i].xc, plain->labels[i].xc);
      EXPECT_EQ(coloured->labels[i].yc, plain->labels[i].yc);
      EXPECT_EQ(coloured->labels[i].w, plain->labels[i].w);
      EXPECT_EQ(coloured->labels[i].h, plain->labels[i].h);
    }
  }
}

TEST(DetectionDatasetTest, ErrorsNameTheFile) {
  const std::string dir = testing::MakeTempDir();
  std::vector<ImageRecord> records = RectangleRecords(dir, 2);
  DetectionDataset dataset(records, Names(), {64, false, false});
  std::mt19937 rng(0);
  EXPECT_EQ(dataset.Get(2, AugmentOptions(), rng).status().code(),
            absl::StatusCode::kOutOfRange);

  std::filesystem::remove(records[1].image);
  absl::StatusOr<Sample> gone = dataset.Get(1, AugmentOptions(), rng);
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(gone.status().message(), HasSubstr(records[1].image));

  testing::WriteText(records[1].image, "garbage");
  absl::StatusOr<Sample> bad = dataset.Get(1, AugmentOptions(), rng);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr(records[1].image));
}

}  // namespace
}  // namespace yolohook::data
