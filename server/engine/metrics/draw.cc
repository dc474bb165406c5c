#include "server/engine/metrics/draw.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "opencv2/imgproc.hpp"

namespace yolohook::metrics {
namespace {

// Hue, saturation and value of a palette entry: hues 18 degrees apart, visited
// in steps of 7 so that neighbouring class ids get far-apart hues; even and
// odd entries alternate a brighter and a deeper shade.
cv::Scalar PaletteEntry(int i) {
  const double hue = ((i * 7) % kNumClassColors) * 360.0 / kNumClassColors;
  const double saturation = (i % 2 == 0) ? 0.85 : 0.95;
  const double value = (i % 2 == 0) ? 1.0 : 0.72;
  const double c = value * saturation;
  const double h = hue / 60.0;
  const double x = c * (1 - std::abs(std::fmod(h, 2.0) - 1));
  double r = 0, g = 0, b = 0;
  switch (static_cast<int>(h)) {
    case 0:
      r = c, g = x;
      break;
    case 1:
      r = x, g = c;
      break;
    case 2:
      g = c, b = x;
      break;
    case 3:
      g = x, b = c;
      break;
    case 4:
      r = x, b = c;
      break;
    default:
      r = c, b = x;
      break;
  }
  const double m = value - c;
  return cv::Scalar(std::round((b + m) * 255), std::round((g + m) * 255),
                    std::round((r + m) * 255));
}

const std::array<cv::Scalar, kNumClassColors>& Palette() {
  static const std::array<cv::Scalar, kNumClassColors> kPalette = [] {
    std::array<cv::Scalar, kNumClassColors> palette;
    for (int i = 0; i < kNumClassColors; ++i) palette[i] = PaletteEntry(i);
    return palette;
  }();
  return kPalette;
}

std::string LabelText(const Box& box, const Result& result,
                      const DrawOptions& options) {
  std::string text;
  if (box.track_id) absl::StrAppend(&text, "id:", *box.track_id);
  if (options.show_labels) {
    if (!text.empty()) text += ' ';
    if (box.cls >= 0 && box.cls < static_cast<int>(result.names.size())) {
      text += result.names[box.cls];
    } else {
      absl::StrAppend(&text, box.cls);
    }
  }
  if (options.show_conf && std::isfinite(box.conf)) {
    char conf[16];
    std::snprintf(conf, sizeof(conf), "%.2f", box.conf);
    if (!text.empty()) text += ' ';
    text += conf;
  }
  return text;
}

void DrawBox(cv::Mat& image, const Box& box, const Result& result,
             const DrawOptions& options, int line_width) {
  if (!std::isfinite(box.x1) || !std::isfinite(box.y1) ||
      !std::isfinite(box.x2) || !std::isfinite(box.y2)) {
    return;
  }
  const double cols = image.cols;
  const double rows = image.rows;
  const double left = std::min(box.x1, box.x2);
  const double right = std::max(box.x1, box.x2);
  const double top = std::min(box.y1, box.y2);
  const double bottom = std::max(box.y1, box.y2);
  if (right < 0 || bottom < 0 || left > cols - 1 || top > rows - 1) return;
  const cv::Point p1(
      static_cast<int>(std::lround(std::clamp(left, 0.0, cols - 1))),
      static_cast<int>(std::lround(std::clamp(top, 0.0, rows - 1))));
  const cv::Point p2(
      static_cast<int>(std::lround(std::clamp(right, 0.0, cols - 1))),
      static_cast<int>(std::lround(std::clamp(bottom, 0.0, rows - 1))));
  const cv::Scalar color = ClassColor(box.cls);
  cv::rectangle(image, p1, p2, color, line_width, cv::LINE_AA);

  const std::string text = LabelText(box, result, options);
  if (text.empty()) return;
  const double scale = line_width / 3.0;
  const int thickness = std::max(line_width - 1, 1);
  int baseline = 0;
  const cv::Size size = cv::getTextSize(text, cv::FONT_HERSHEY_SIMPLEX, scale,
                                        thickness, &baseline);
  const int pad = std::max(line_width / 2, 1);
  const int label_w = size.width + 2 * pad;
  const int label_h = size.height + baseline + 2 * pad;
  // Above the box when it fits, else just inside its top edge; shifted left
  // or up so that it stays inside the image.
  int x = std::min(p1.x, image.cols - label_w);
  int y = p1.y - label_h >= 0 ? p1.y - label_h : p1.y;
  y = std::min(y, image.rows - label_h);
  x = std::max(x, 0);
  y = std::max(y, 0);
  cv::rectangle(
      image,
      cv::Rect(x, y, label_w, label_h) & cv::Rect(0, 0, image.cols, image.rows),
      color, cv::FILLED);
  const double luminance =
      0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2];
  const cv::Scalar text_color =
      luminance > 150 ? cv::Scalar(0, 0, 0) : cv::Scalar(255, 255, 255);
  cv::putText(image, text, cv::Point(x + pad, y + pad + size.height),
              cv::FONT_HERSHEY_SIMPLEX, scale, text_color, thickness,
              cv::LINE_AA);
}

}  // namespace

cv::Scalar ClassColor(int cls) {
  const int i = ((cls % kNumClassColors) + kNumClassColors) % kNumClassColors;
  return Palette()[i];
}

int DefaultLineWidth(int height, int width) {
  return std::max(static_cast<int>(std::lround((height + width) / 2.0 * 0.003)),
                  2);
}

void DrawResult(cv::Mat& image, const Result& result,
                const DrawOptions& options) {
  if (image.empty() || image.depth() != CV_8U || image.dims != 2) return;
  const int channels = image.channels();
  if (channels != 1 && channels != 3 && channels != 4) return;
  const int line_width = options.line_width > 0
                             ? options.line_width
                             : DefaultLineWidth(image.rows, image.cols);
  try {
    for (const Box& box : result.boxes) {
      DrawBox(image, box, result, options, line_width);
    }
  } catch (const cv::Exception&) {
    // Inputs are validated above; drawing is best effort and never throws.
  }
}

}  // namespace yolohook::metrics
