// Drawing detections on images: boxes with "name 0.87" labels in a fixed
// colour per class.
#ifndef YOLOHOOK_SERVER_ENGINE_METRICS_DRAW_H_
#define YOLOHOOK_SERVER_ENGINE_METRICS_DRAW_H_

#include "opencv2/core.hpp"
#include "server/callbacks/state.h"

namespace yolohook::metrics {

// Number of colours in the palette of ClassColor().
inline constexpr int kNumClassColors = 20;

// Colour for a class id (a fixed palette of 20 distinct colours, BGR; class
// ids repeat it modulo 20, negative ids included).
cv::Scalar ClassColor(int cls);

struct DrawOptions {
  // write the class name above each box
  bool show_labels = true;
  // write the confidence (two decimals)
  bool show_conf = true;
  // box line width in pixels (0 = from image size)
  int line_width = 0;
};

// The line width DrawResult uses for an image of this size when
// options.line_width is 0: 0.3% of the mean side, at least 2.
int DefaultLineWidth(int height, int width);

// Draws boxes with "name 0.87" labels (prefixed with "id:N " when tracked) on
// the image in place; labels are kept inside the image. Boxes are clipped to
// the image; boxes with non-finite corners or wholly outside are skipped.
// Works on 8-bit images with 1, 3 (BGR) or 4 channels; other images are left
// untouched. Never throws.
void DrawResult(cv::Mat& image, const Result& result,
                const DrawOptions& options);

}  // namespace yolohook::metrics

#endif  // YOLOHOOK_SERVER_ENGINE_METRICS_DRAW_H_
