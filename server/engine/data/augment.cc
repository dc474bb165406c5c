#include "server/engine/data/augment.h"

#include <algorithm>
#include <cmath>
#include <opencv2/imgproc.hpp>

#include "server/engine/data/random.h"

namespace yolohook::data {
namespace {

const cv::Scalar kPad(kPadValue, kPadValue, kPadValue);

constexpr double kPi = 3.14159265358979323846;

// Row-major 3x3 homogeneous matrices for composing affine maps.
cv::Matx33d Translation(double tx, double ty) {
  return cv::Matx33d(1, 0, tx, 0, 1, ty, 0, 0, 1);
}

}  // namespace

cv::Mat Letterbox(const cv::Mat& image, int size, LetterboxInfo* info,
                  bool scaleup) {
  LetterboxInfo local;
  if (image.empty() || size <= 0) {
    if (info != nullptr) *info = local;
    return cv::Mat(std::max(size, 0), std::max(size, 0), CV_8UC3, kPad);
  }
  double r = std::min(static_cast<double>(size) / image.rows,
                      static_cast<double>(size) / image.cols);
  if (!scaleup) r = std::min(r, 1.0);
  const int new_w =
      std::clamp(static_cast<int>(std::lround(image.cols * r)), 1, size);
  const int new_h =
      std::clamp(static_cast<int>(std::lround(image.rows * r)), 1, size);
  cv::Mat resized = image;
  if (new_w != image.cols || new_h != image.rows) {
    cv::resize(image, resized, cv::Size(new_w, new_h), 0, 0, cv::INTER_LINEAR);
  }
  // An odd padding puts the extra pixel at the bottom / right.
  const int left = (size - new_w) / 2;
  const int top = (size - new_h) / 2;
  cv::Mat out;
  cv::copyMakeBorder(resized, out, top, size - new_h - top, left,
                     size - new_w - left, cv::BORDER_CONSTANT, kPad);
  local.ratio = static_cast<float>(r);
  local.pad_w = static_cast<float>(left);
  local.pad_h = static_cast<float>(top);
  if (info != nullptr) *info = local;
  return out;
}

std::vector<Label> LetterboxLabels(const std::vector<Label>& labels, int width,
                                   int height, const LetterboxInfo& info,
                                   int size) {
  std::vector<PixelBox> boxes = ToPixelBoxes(labels, width, height);
  for (PixelBox& b : boxes) {
    b.x1 = b.x1 * info.ratio + info.pad_w;
    b.x2 = b.x2 * info.ratio + info.pad_w;
    b.y1 = b.y1 * info.ratio + info.pad_h;
    b.y2 = b.y2 * info.ratio + info.pad_h;
  }
  return ToLabels(boxes, size, size);
}

cv::Mat ResizeLongSide(const cv::Mat& image, int size, bool augment,
                       float* ratio) {
  const int long_side = std::max(image.rows, image.cols);
  if (image.empty() || size <= 0 || long_side == size) {
    if (ratio != nullptr) *ratio = 1;
    return image;
  }
  const double r = static_cast<double>(size) / long_side;
  if (ratio != nullptr) *ratio = static_cast<float>(r);
  const int new_w =
      std::clamp(static_cast<int>(std::ceil(image.cols * r - 1e-6)), 1, size);
  const int new_h =
      std::clamp(static_cast<int>(std::ceil(image.rows * r - 1e-6)), 1, size);
  cv::Mat out;
  cv::resize(image, out, cv::Size(new_w, new_h), 0, 0,
             (augment || r > 1) ? cv::INTER_LINEAR : cv::INTER_AREA);
  return out;
}

AugmentOptions NoAugmentation() {
  AugmentOptions o;
  o.hsv_h = o.hsv_s = o.hsv_v = 0;
  o.degrees = o.translate = o.scale = o.shear = 0;
  o.fliplr = o.flipud = 0;
  o.mosaic = 0;
  return o;
}

std::vector<PixelBox> ToPixelBoxes(const std::vector<Label>& labels, int width,
                                   int height) {
  std::vector<PixelBox> boxes;
  boxes.reserve(labels.size());
  for (const Label& l : labels) {
    PixelBox b;
    b.cls = l.cls;
    const float w = static_cast<float>(width);
    const float h = static_cast<float>(height);
    b.x1 = (l.xc - l.w / 2) * w;
    b.x2 = (l.xc + l.w / 2) * w;
    b.y1 = (l.yc - l.h / 2) * h;
    b.y2 = (l.yc + l.h / 2) * h;
    boxes.push_back(b);
  }
  return boxes;
}

std::vector<Label> ToLabels(const std::vector<PixelBox>& boxes, int width,
                            int height) {
  std::vector<Label> labels;
  if (width <= 0 || height <= 0) return labels;
  labels.reserve(boxes.size());
  const float w = static_cast<float>(width);
  const float h = static_cast<float>(height);
  for (const PixelBox& b : boxes) {
    const float x1 = std::clamp(b.x1, 0.0f, w);
    const float x2 = std::clamp(b.x2, 0.0f, w);
    const float y1 = std::clamp(b.y1, 0.0f, h);
    const float y2 = std::clamp(b.y2, 0.0f, h);
    if (!(x2 > x1) || !(y2 > y1)) continue;
    Label l;
    l.cls = b.cls;
    l.xc = (x1 + x2) / 2 / w;
    l.yc = (y1 + y2) / 2 / h;
    l.w = (x2 - x1) / w;
    l.h = (y2 - y1) / h;
    labels.push_back(l);
  }
  return labels;
}

LabeledImage Mosaic4At(const std::array<LabeledImage, 4>& tiles, int size,
                       cv::Point centre) {
  const int side = 2 * size;
  const int xc = std::clamp(centre.x, 0, side);
  const int yc = std::clamp(centre.y, 0, side);
  LabeledImage out;
  out.image = cv::Mat(side, side, CV_8UC3, kPad);
  for (int i = 0; i < 4; ++i) {
    const cv::Mat& img = tiles[i].image;
    const int w = img.cols;
    const int h = img.rows;
    // The tile's region on the canvas [ax1, ax2) x [ay1, ay2): it touches the
    // centre with its inner corner.
    int ax1, ay1, ax2, ay2;
    if (i == 0) {
      ax1 = std::max(xc - w, 0), ay1 = std::max(yc - h, 0), ax2 = xc, ay2 = yc;
    } else if (i == 1) {
      ax1 = xc, ay1 = std::max(yc - h, 0), ax2 = std::min(xc + w, side),
      ay2 = yc;
    } else if (i == 2) {
      ax1 = std::max(xc - w, 0), ay1 = yc, ax2 = xc,
      ay2 = std::min(yc + h, side);
    } else {
      ax1 = xc, ay1 = yc, ax2 = std::min(xc + w, side),
      ay2 = std::min(yc + h, side);
    }
    const int cw = ax2 - ax1;
    const int ch = ay2 - ay1;
    if (cw <= 0 || ch <= 0 || img.empty()) continue;
    // The part of the tile that lands there: tiles left of / above the centre
    // keep their right / bottom part.
    const int bx1 = (i == 0 || i == 2) ? w - cw : 0;
    const int by1 = (i == 0 || i == 1) ? h - ch : 0;
    img(cv::Rect(bx1, by1, cw, ch))
        .copyTo(out.image(cv::Rect(ax1, ay1, cw, ch)));
    const float dx = static_cast<float>(ax1 - bx1);
    const float dy = static_cast<float>(ay1 - by1);
    for (const PixelBox& b : tiles[i].boxes) {
      PixelBox m = b;
      m.x1 = std::clamp(b.x1 + dx, 0.0f, static_cast<float>(side));
      m.x2 = std::clamp(b.x2 + dx, 0.0f, static_cast<float>(side));
      m.y1 = std::clamp(b.y1 + dy, 0.0f, static_cast<float>(side));
      m.y2 = std::clamp(b.y2 + dy, 0.0f, static_cast<float>(side));
      if (m.x2 > m.x1 && m.y2 > m.y1) out.boxes.push_back(m);
    }
  }
  return out;
}

LabeledImage Mosaic4(const std::array<LabeledImage, 4>& tiles, int size,
                     std::mt19937& rng) {
  const int xc = static_cast<int>(RandomUniform(rng, size / 2.0, 1.5 * size));
  const int yc = static_cast<int>(RandomUniform(rng, size / 2.0, 1.5 * size));
  return Mosaic4At(tiles, size, cv::Point(xc, yc));
}

bool IsBoxCandidate(const PixelBox& before, const PixelBox& after, double scale,
                    double wh_thr, double ar_thr, double area_thr) {
  constexpr double kEps = 1e-16;
  const double w1 = (static_cast<double>(before.x2) - before.x1) * scale;
  const double h1 = (static_cast<double>(before.y2) - before.y1) * scale;
  const double w2 = static_cast<double>(after.x2) - after.x1;
  const double h2 = static_cast<double>(after.y2) - after.y1;
  const double ar = std::max(w2 / (h2 + kEps), h2 / (w2 + kEps));
  return w2 > wh_thr && h2 > wh_thr && w2 * h2 / (w1 * h1 + kEps) > area_thr &&
         ar < ar_thr;
}

LabeledImage WarpAffineLabeled(const LabeledImage& input, const cv::Matx23d& m,
                               cv::Size out_size, double scale) {
  LabeledImage out;
  const bool identity = m == cv::Matx23d(1, 0, 0, 0, 1, 0);
  if (identity && out_size == input.image.size()) {
    out.image = input.image;
  } else {
    cv::warpAffine(input.image, out.image, m, out_size, cv::INTER_LINEAR,
                   cv::BORDER_CONSTANT, kPad);
  }
  const float w = static_cast<float>(out_size.width);
  const float h = static_cast<float>(out_size.height);
  for (const PixelBox& b : input.boxes) {
    const cv::Vec3d corners[4] = {
        {b.x1, b.y1, 1}, {b.x2, b.y1, 1}, {b.x1, b.y2, 1}, {b.x2, b.y2, 1}};
    double x1 = 1e30, y1 = 1e30, x2 = -1e30, y2 = -1e30;
    for (const cv::Vec3d& c : corners) {
      const cv::Vec2d p = m * c;
      x1 = std::min(x1, p[0]), x2 = std::max(x2, p[0]);
      y1 = std::min(y1, p[1]), y2 = std::max(y2, p[1]);
    }
    PixelBox moved;
    moved.cls = b.cls;
    moved.x1 = std::clamp(static_cast<float>(x1), 0.0f, w);
    moved.x2 = std::clamp(static_cast<float>(x2), 0.0f, w);
    moved.y1 = std::clamp(static_cast<float>(y1), 0.0f, h);
    moved.y2 = std::clamp(static_cast<float>(y2), 0.0f, h);
    if (IsBoxCandidate(b, moved, scale)) out.boxes.push_back(moved);
  }
  return out;
}

LabeledImage RandomAffine(const LabeledImage& input, const AugmentOptions& hyp,
                          cv::Size out_size, std::mt19937& rng) {
  const int out_w = out_size.width;
  const int out_h = out_size.height;
  if (out_w <= 0 || out_h <= 0) return input;

  const double angle = RandomUniform(rng, -hyp.degrees, hyp.degrees);
  const double s = RandomUniform(rng, 1 - hyp.scale, 1 + hyp.scale);
  const double shear_x = RandomUniform(rng, -hyp.shear, hyp.shear);
  const double shear_y = RandomUniform(rng, -hyp.shear, hyp.shear);
  const double tx =
      RandomUniform(rng, 0.5 - hyp.translate, 0.5 + hyp.translate) * out_w;
  const double ty =
      RandomUniform(rng, 0.5 - hyp.translate, 0.5 + hyp.translate) * out_h;

  // Centre on the origin, rotate and scale (OpenCV's sense: positive angles
  // turn counter-clockwise on screen), shear, then move the centre to (tx, ty).
  const cv::Matx33d centre =
      Translation(-input.image.cols / 2.0, -input.image.rows / 2.0);
  const double a = s * std::cos(angle * kPi / 180);
  const double b = s * std::sin(angle * kPi / 180);
  const cv::Matx33d rotate(a, b, 0, -b, a, 0, 0, 0, 1);
  const cv::Matx33d shear(1, std::tan(shear_x * kPi / 180), 0,
                          std::tan(shear_y * kPi / 180), 1, 0, 0, 0, 1);
  const cv::Matx33d m = Translation(tx, ty) * shear * rotate * centre;
  const cv::Matx23d m23(m(0, 0), m(0, 1), m(0, 2), m(1, 0), m(1, 1), m(1, 2));
  return WarpAffineLabeled(input, m23, cv::Size(out_w, out_h), s);
}

void ApplyHsvGains(cv::Mat* image, double hue, double sat, double val) {
  if (image == nullptr || image->empty()) return;
  cv::Mat lut(1, 256, CV_8UC3);
  for (int x = 0; x < 256; ++x) {
    double h = std::fmod(x * hue, 180.0);
    if (h < 0) h += 180;
    lut.at<cv::Vec3b>(0, x) =
        cv::Vec3b(static_cast<uchar>(std::min(static_cast<int>(h), 179)),
                  static_cast<uchar>(std::clamp(x * sat, 0.0, 255.0)),
                  static_cast<uchar>(std::clamp(x * val, 0.0, 255.0)));
  }
  cv::Mat hsv;
  cv::cvtColor(*image, hsv, cv::COLOR_BGR2HSV);
  cv::LUT(hsv, lut, hsv);
  cv::cvtColor(hsv, *image, cv::COLOR_HSV2BGR);
}

void AugmentHsv(cv::Mat* image, double hgain, double sgain, double vgain,
                std::mt19937& rng) {
  const double h = RandomUniform(rng, -1, 1) * hgain + 1;
  const double s = RandomUniform(rng, -1, 1) * sgain + 1;
  const double v = RandomUniform(rng, -1, 1) * vgain + 1;
  if (hgain == 0 && sgain == 0 && vgain == 0) return;
  ApplyHsvGains(image, h, s, v);
}

void FlipHorizontal(cv::Mat* image, std::vector<Label>* labels) {
  if (image != nullptr && !image->empty()) cv::flip(*image, *image, 1);
  if (labels != nullptr) {
    for (Label& l : *labels) l.xc = 1 - l.xc;
  }
}

void FlipVertical(cv::Mat* image, std::vector<Label>* labels) {
  if (image != nullptr && !image->empty()) cv::flip(*image, *image, 0);
  if (labels != nullptr) {
    for (Label& l : *labels) l.yc = 1 - l.yc;
  }
}

void RandomFlips(cv::Mat* image, std::vector<Label>* labels, double fliplr,
                 double flipud, std::mt19937& rng) {
  const bool ud = RandomChance(rng, flipud);
  const bool lr = RandomChance(rng, fliplr);
  if (ud) FlipVertical(image, labels);
  if (lr) FlipHorizontal(image, labels);
}

}  // namespace yolohook::data
