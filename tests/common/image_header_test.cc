#include "server/common/image_header.h"

#include <opencv2/imgcodecs.hpp>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace yolohook {
namespace {

using ::testing::HasSubstr;

std::string Encode(const std::string& ext, int width, int height) {
  cv::Mat image(height, width, CV_8UC3, cv::Scalar(10, 20, 30));
  std::vector<uint8_t> bytes;
  EXPECT_TRUE(cv::imencode(ext, image, bytes));
  return std::string(bytes.begin(), bytes.end());
}

TEST(ReadImageSizeTest, ReadsWhatOpenCvWrites) {
  for (const std::string ext : {".png", ".jpg", ".bmp", ".webp"}) {
    const std::optional<ImageSize> size = ReadImageSize(Encode(ext, 37, 21));
    ASSERT_TRUE(size.has_value()) << ext;
    EXPECT_EQ(size->width, 37) << ext;
    EXPECT_EQ(size->height, 21) << ext;
  }
}

TEST(ReadImageSizeTest, UnknownOrTruncatedIsNullopt) {
  EXPECT_FALSE(ReadImageSize("").has_value());
  EXPECT_FALSE(ReadImageSize("not an image").has_value());
  EXPECT_FALSE(ReadImageSize(Encode(".png", 8, 8).substr(0, 12)).has_value());
  EXPECT_FALSE(ReadImageSize(Encode(".jpg", 8, 8).substr(0, 30)).has_value());
}

TEST(CheckImageSizeTest, NamesTheImageTheSizeAndTheFlag) {
  const std::string png = Encode(".png", 40, 30);
  EXPECT_TRUE(CheckImageSize("images[0]", png, 1200).ok());
  EXPECT_TRUE(CheckImageSize("images[0]", png, 0).ok());
  const absl::Status big = CheckImageSize("images[2] (\"a.png\")", png, 1199);
  EXPECT_EQ(big.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(big.message()),
              HasSubstr("images[2] (\"a.png\"): 40x30 pixels (1200) is more "
                        "than the limit of 1199"));
  EXPECT_THAT(std::string(big.message()), HasSubstr("--max_image_pixels"));
}

}  // namespace
}  // namespace yolohook
