// Helpers for the data tests: scratch directories and small files.
#ifndef YOLOHOOK_TESTS_ENGINE_DATA_TEST_UTIL_H_
#define YOLOHOOK_TESTS_ENGINE_DATA_TEST_UTIL_H_

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace yolohook::data::testing {

// The directories MakeTempDir made; removed when the test program exits.
inline std::vector<std::string>& TempDirsToRemove() {
  static auto* dirs = new std::vector<std::string>();
  return *dirs;
}

// A fresh, empty directory named after the running test, removed when the
// test program exits.
inline std::string MakeTempDir(const std::string& suffix = "") {
  static const bool cleanup_registered = [] {
    std::atexit([] {
      std::error_code ec;
      for (const std::string& dir : TempDirsToRemove())
        std::filesystem::remove_all(dir, ec);
    });
    return true;
  }();
  (void)cleanup_registered;
  const ::testing::TestInfo* info =
      ::testing::UnitTest::GetInstance()->current_test_info();
  std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) /
      absl::StrCat("yolohook_data_", getpid(), "_", info->test_suite_name(),
                   "_", info->name(), suffix);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  TempDirsToRemove().push_back(dir.string());
  return dir.string();
}

// Writes `text` to `path`, creating parent directories.
inline void WriteText(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(
      std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

inline std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// Writes an image (format from the extension), creating parent directories.
inline void WriteImage(const std::string& path, const cv::Mat& image) {
  std::filesystem::create_directories(
      std::filesystem::path(path).parent_path());
  ASSERT_TRUE(cv::imwrite(path, image)) << path;
}

// A width x height BGR image of one colour.
inline cv::Mat Solid(int width, int height,
                     const cv::Scalar& color = cv::Scalar(60, 60, 60)) {
  return cv::Mat(height, width, CV_8UC3, color);
}

// The bounding box [x1, x2) x [y1, y2) of the pixels within `tolerance`
// (per channel) of `color`; an empty rect if there are none.
inline cv::Rect ColorBounds(const cv::Mat& image, const cv::Scalar& color,
                            int tolerance = 40) {
  cv::Mat mask;
  cv::inRange(image,
              cv::Scalar(color[0] - tolerance, color[1] - tolerance,
                         color[2] - tolerance),
              cv::Scalar(color[0] + tolerance, color[1] + tolerance,
                         color[2] + tolerance),
              mask);
  return cv::boundingRect(mask);
}

}  // namespace yolohook::data::testing

#endif  // YOLOHOOK_TESTS_ENGINE_DATA_TEST_UTIL_H_
