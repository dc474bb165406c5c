#include "server/engine/data/frames.h"

#include <cstdint>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <vector>

namespace yolohook::data {

std::string EncodeJpeg(const FrameView& frame) {
  if (frame.bgr == nullptr || frame.height <= 0 || frame.width <= 0) return "";
  cv::Mat image(frame.height, frame.width, CV_8UC3,
                const_cast<uint8_t*>(frame.bgr),
                static_cast<size_t>(frame.step));
  std::vector<uint8_t> bytes;
  if (!cv::imencode(".jpg", image, bytes, {cv::IMWRITE_JPEG_QUALITY, 90}))
    return "";
  return std::string(bytes.begin(), bytes.end());
}

}  // namespace yolohook::data
