#include "server/engine/metrics/results.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "opencv2/core.hpp"
#include "opencv2/imgcodecs.hpp"
#include "opencv2/imgproc.hpp"

namespace yolohook::metrics {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kHeader[] =
    "epoch,time,train/box_loss,train/cls_loss,train/dfl_loss,"
    "metrics/precision(B),metrics/recall(B),metrics/mAP50(B),"
    "metrics/mAP50-95(B),val/box_loss,val/cls_loss,val/dfl_loss,"
    "lr/pg0,lr/pg1,lr/pg2";

class ResultsCsvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           absl::StrCat(
               "results_test_", getpid(), "_",
               ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "results.csv").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static std::string Read(const std::string& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
  static void Write(const std::string& path, const std::string& text) {
    std::ofstream(path) << text;
  }

  std::filesystem::path dir_;
  std::string path_;
};

TEST_F(ResultsCsvTest, ExactHeaderAndSixSignificantDigits) {
  ResultsCsv csv(path_);
  ASSERT_TRUE(csv.Load().ok());
  ASSERT_TRUE(csv.Append(1, 12.3456789,
                         {{"train/box_loss", 1.23456789},
                          {"metrics/mAP50(B)", 0.5},
                          {"lr/pg0", 0.000123456789},
                          {"lr/pg2", 1e-7}})
                  .ok());
  EXPECT_EQ(Read(path_),
            absl::StrCat(kHeader, "\n",
                         "1,12.3457,1.23457,,,,,0.5,,,,,0.000123457,,1e-07\n"));
  EXPECT_EQ(csv.columns().size(), 15u);
  ASSERT_EQ(csv.rows().size(), 1u);
  EXPECT_DOUBLE_EQ(csv.rows()[0].at("epoch"), 1);
  EXPECT_DOUBLE_EQ(csv.rows()[0].at("time"), 12.3456789);
  EXPECT_EQ(csv.rows()[0].count("train/cls_loss"), 0u);
}

TEST_F(ResultsCsvTest, NewExtraColumnRewritesFileWithEarlierRowsBlank) {
  ResultsCsv csv(path_);
  ASSERT_TRUE(csv.Append(1, 1.5, {{"train/box_loss", 2}}).ok());
  ASSERT_TRUE(
      csv.Append(2, 3, {{"train/box_loss", 1.75}, {"z/extra", 7}}).ok());
  ASSERT_TRUE(csv.Append(3, 4.5, {{"a/extra", 0.25}, {"z/extra", 8}}).ok());
  EXPECT_EQ(
      Read(path_),
      absl::StrCat(kHeader, ",z/extra,a/extra\n", "1,1.5,2,,,,,,,,,,,,,,\n",
                   "2,3,1.75,,,,,,,,,,,,,7,\n", "3,4.5,,,,,,,,,,,,,,8,0.25\n"));
  EXPECT_EQ(csv.columns().back(), "a/extra");
}

TEST_F(ResultsCsvTest, LoadRoundTripThenAppendContinues) {
  {
    ResultsCsv csv(path_);
    ASSERT_TRUE(csv.Append(1, 10, {{"lr/pg1", 0.01}, {"custom", 3}}).ok());
    ASSERT_TRUE(csv.Append(2, 20.25, {{"lr/pg1", 0.0099}}).ok());
  }
  const std::string before = Read(path_);
  ResultsCsv csv(path_);
  ASSERT_TRUE(csv.Load().ok());
  ASSERT_EQ(csv.columns().size(), 16u);
  EXPECT_EQ(csv.columns()[15], "custom");
  ASSERT_EQ(csv.rows().size(), 2u);
  EXPECT_DOUBLE_EQ(csv.rows()[0].at("custom"), 3);
  EXPECT_DOUBLE_EQ(csv.rows()[1].at("time"), 20.25);
  EXPECT_DOUBLE_EQ(csv.rows()[1].at("lr/pg1"), 0.0099);
  EXPECT_EQ(csv.rows()[1].count("custom"), 0u);

  ASSERT_TRUE(csv.Append(3, 30, {{"custom", 4}}).ok());
  EXPECT_EQ(Read(path_), before + "3,30,,,,,,,,,,,,,,4\n");
  EXPECT_EQ(csv.rows().size(), 3u);
}

TEST_F(ResultsCsvTest, LoadOfMissingFileIsEmpty) {
  ResultsCsv csv(path_);
  ASSERT_TRUE(csv.Load().ok());
  EXPECT_TRUE(csv.rows().empty());
  EXPECT_EQ(csv.columns().front(), "epoch");
}

TEST_F(ResultsCsvTest, MalformedFileNamesTheLine) {
  Write(path_, absl::StrCat(kHeader, "\n1,2,3,,,,,,,,,,,,\n1,2\n"));
  ResultsCsv csv(path_);
  const absl::Status status = csv.Load();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr(path_ + ":3:"));

  Write(path_, absl::StrCat(kHeader, "\n1,abc,,,,,,,,,,,,,\n"));
  const absl::Status not_a_number = csv.Load();
  EXPECT_EQ(not_a_number.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(not_a_number.message(), HasSubstr(":2:"));
  EXPECT_THAT(not_a_number.message(), HasSubstr("'abc' is not a number"));

  Write(path_, "loss,time\n1,2\n");
  EXPECT_EQ(csv.Load().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ResultsCsvTest, AcceptsPaddedColumnsAndRewritesThemInOurLayout) {
  // Older Ultralytics files pad every field with spaces.
  Write(path_, "      epoch,  train/box_loss\n          1,         1.5\n");
  ResultsCsv csv(path_);
  ASSERT_TRUE(csv.Load().ok());
  ASSERT_EQ(csv.rows().size(), 1u);
  EXPECT_DOUBLE_EQ(csv.rows()[0].at("train/box_loss"), 1.5);
  ASSERT_TRUE(csv.Append(2, 5, {}).ok());
  EXPECT_EQ(Read(path_), absl::StrCat(kHeader, "\n1,,1.5,,,,,,,,,,,,\n",
                                      "2,5,,,,,,,,,,,,,\n"));
}

TEST_F(ResultsCsvTest, BadArgumentsAndUnwritablePath) {
  ResultsCsv csv(path_);
  EXPECT_EQ(csv.Append(0, 1, {}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(csv.Append(1, 1, {{"a,b", 1}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(csv.rows().empty());

  ResultsCsv nowhere((dir_ / "missing" / "results.csv").string());
  const absl::Status status = nowhere.Append(1, 1, {});
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("missing"));
  EXPECT_TRUE(nowhere.rows().empty());
}

TEST_F(ResultsCsvTest, PlotResultsWritesAGrid) {
  ResultsCsv csv(path_);
  for (int epoch = 1; epoch <= 3; ++epoch) {
    ASSERT_TRUE(csv.Append(epoch, epoch * 2.0,
                           {{"train/box_loss", 3.0 - epoch * 0.5},
                            {"metrics/mAP50(B)", 0.1 * epoch},
                            {"lr/pg0", 0.01},
                            {"custom/score", epoch * epoch}})
                    .ok());
  }
  const std::string png = (dir_ / "results.png").string();
  ASSERT_TRUE(PlotResults(path_, png).ok());
  const cv::Mat image = cv::imread(png);
  ASSERT_FALSE(image.empty());
  // 14 panels (13 standard after epoch and time, one extra): 3 rows of 5.
  EXPECT_EQ(image.cols, 5 * 320);
  EXPECT_EQ(image.rows, 3 * 240);
  // Something was drawn: not a blank white canvas.
  cv::Mat gray;
  cv::cvtColor(image, gray, cv::COLOR_BGR2GRAY);
  EXPECT_GT(cv::countNonZero(gray < 200), 1000);
}

TEST_F(ResultsCsvTest, PlotResultsErrors) {
  const std::string missing = (dir_ / "nope.csv").string();
  const absl::Status status =
      PlotResults(missing, (dir_ / "results.png").string());
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr(missing));

  Write(path_, absl::StrCat(kHeader, "\n"));
  EXPECT_EQ(PlotResults(path_, (dir_ / "results.png").string()).code(),
            absl::StatusCode::kInvalidArgument);

  Write(path_, absl::StrCat(kHeader, "\n1,2,3,,,,,,,,,,,,\n"));
  EXPECT_FALSE(
      PlotResults(path_, (dir_ / "no_dir" / "results.png").string()).ok());
}

}  // namespace
}  // namespace yolohook::metrics
