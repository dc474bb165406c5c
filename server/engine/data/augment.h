// Image augmentations for detection training, each a free function that
// transforms an image together with its boxes.
//
// Pipeline (see DetectionDataset): ResizeLongSide → Mosaic4 + RandomAffine
// back to size x size, or Letterbox + RandomAffine → AugmentHsv →
// RandomFlips. All randomness comes from the std::mt19937 passed in, so a
// given generator state always gives the same result.
#ifndef YOLOHOOK_SERVER_ENGINE_DATA_AUGMENT_H_
#define YOLOHOOK_SERVER_ENGINE_DATA_AUGMENT_H_

#include <array>
#include <opencv2/core.hpp>
#include <random>
#include <vector>

#include "server/engine/data/labels.h"

namespace yolohook::data {

// How Letterbox mapped an image: letterboxed = original * ratio + pad.
struct LetterboxInfo {
  // scale from original to letterboxed pixels
  float ratio = 1;
  // left padding in letterboxed pixels
  float pad_w = 0;
  // top padding in letterboxed pixels
  float pad_h = 0;
};

// The pad colour of letterboxing, mosaics and affine borders.
inline constexpr int kPadValue = 114;

// Resizes keeping the aspect ratio so that the long side is `size` (never
// enlarges when `scaleup` is false), then pads to size x size with
// (114, 114, 114), centred. Fills `info` (may be null).
cv::Mat Letterbox(const cv::Mat& image, int size, LetterboxInfo* info,
                  bool scaleup = true);

// Maps labels normalised to a width x height image to the size x size image
// Letterbox made of it.
std::vector<Label> LetterboxLabels(const std::vector<Label>& labels, int width,
                                   int height, const LetterboxInfo& info,
                                   int size);

// Resizes so that the long side is `size` (up or down), keeping the aspect
// ratio; sides are rounded up and capped at `size`. Downscaling uses area
// interpolation unless `augment` (then bilinear, like upscaling). Returns the
// image itself when it already has that long side. `ratio` (optional)
// receives size / long side.
cv::Mat ResizeLongSide(const cv::Mat& image, int size, bool augment,
                       float* ratio = nullptr);

// Training hyperparameters of the augmentations (Ultralytics' names).
struct AugmentOptions {
  // hue gain (fraction)
  double hsv_h = 0.015;
  // saturation gain (fraction)
  double hsv_s = 0.7;
  // value gain (fraction)
  double hsv_v = 0.4;
  // rotation range (+/- degrees)
  double degrees = 0;
  // translation range (+/- fraction of the size)
  double translate = 0.1;
  // scale range (+/- gain)
  double scale = 0.5;
  // shear range (+/- degrees)
  double shear = 0;
  // horizontal flip probability
  double fliplr = 0.5;
  // vertical flip probability
  double flipud = 0;
  // mosaic probability (0 disables)
  double mosaic = 1.0;
};

// Settings under which the training pipeline only letterboxes.
AugmentOptions NoAugmentation();

// A box in pixels of its image (corners, x2 > x1, y2 > y1).
struct PixelBox {
  // class id
  int cls = 0;
  // left
  float x1 = 0;
  // top
  float y1 = 0;
  // right
  float x2 = 0;
  // bottom
  float y2 = 0;
};

// Normalised labels → pixel boxes of a width x height image.
std::vector<PixelBox> ToPixelBoxes(const std::vector<Label>& labels, int width,
                                   int height);
// Pixel boxes → normalised labels, clipped to the image; boxes left with no
// area are dropped.
std::vector<Label> ToLabels(const std::vector<PixelBox>& boxes, int width,
                            int height);

// An image with its boxes in its pixels.
struct LabeledImage {
  // CV_8UC3
  cv::Mat image;
  // in pixels of `image`
  std::vector<PixelBox> boxes;
};

// Places four images on a 2*size x 2*size canvas filled with 114 so that they
// meet at `centre` (image 0 top-left of it, 1 top-right, 2 bottom-left,
// 3 bottom-right), each cropped at the canvas border; boxes follow and are
// clipped to the canvas (empty ones dropped). Images should have a long side
// of `size`.
LabeledImage Mosaic4At(const std::array<LabeledImage, 4>& tiles, int size,
                       cv::Point centre);
// Mosaic4At around a random centre, uniform in [size/2, 3*size/2) on each axis.
LabeledImage Mosaic4(const std::array<LabeledImage, 4>& tiles, int size,
                     std::mt19937& rng);

// Ultralytics' box candidate rule: after a transform with scale gain `scale`,
// a box is kept if it is wider and taller than `wh_thr` pixels, keeps more
// than `area_thr` of its (scaled) area and has an aspect ratio below `ar_thr`.
bool IsBoxCandidate(const PixelBox& before, const PixelBox& after, double scale,
                    double wh_thr = 2, double ar_thr = 100,
                    double area_thr = 0.1);

// Warps `input` with the 2x3 matrix `m` into an image of `out_size` (borders
// 114, bilinear). Each box becomes the bounding box of its transformed
// corners, clipped to the output; boxes failing IsBoxCandidate (with gain
// `scale`) are dropped.
LabeledImage WarpAffineLabeled(const LabeledImage& input, const cv::Matx23d& m,
                               cv::Size out_size, double scale);

// Random rotation (+/- degrees), scale (1 +/- scale), shear (+/- shear) about
// the input's centre, which then moves to (0.5 +/- translate) of `out_size`.
// Ultralytics' `border` b is out_size = input size + 2b: a 2*size mosaic with
// out_size = size x size is cropped back to size (border -size/2). Boxes
// follow (see WarpAffineLabeled). With all ranges zero and out_size equal to
// the input size, the image is returned as is.
LabeledImage RandomAffine(const LabeledImage& input, const AugmentOptions& hyp,
                          cv::Size out_size, std::mt19937& rng);

// Multiplies hue, saturation and value by the given factors through lookup
// tables (hue wraps around 180, the others saturate at 255). In place; the
// size is unchanged.
void ApplyHsvGains(cv::Mat* image, double hue, double sat, double val);
// ApplyHsvGains with factors drawn uniformly from 1 +/- gain. Does nothing when
// all gains are zero.
void AugmentHsv(cv::Mat* image, double hgain, double sgain, double vgain,
                std::mt19937& rng);

// Mirror left-right / top-bottom, with normalised labels. In place.
void FlipHorizontal(cv::Mat* image, std::vector<Label>* labels);
void FlipVertical(cv::Mat* image, std::vector<Label>* labels);
// Flips vertically with probability `flipud`, then horizontally with
// probability `fliplr`.
void RandomFlips(cv::Mat* image, std::vector<Label>* labels, double fliplr,
                 double flipud, std::mt19937& rng);

}  // namespace yolohook::data

#endif  // YOLOHOOK_SERVER_ENGINE_DATA_AUGMENT_H_
