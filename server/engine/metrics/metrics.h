// Detection metrics of a validation run: box IoU, matching of predictions to
// labels, average precision, the per-class precision / recall / mAP table and
// the confusion matrix, computed the way Ultralytics' DetectionValidator does
// so that the figures are comparable with its results.
//
// Plain C++: no torch, no OpenCV.
#ifndef YOLOHOOK_SERVER_ENGINE_METRICS_METRICS_H_
#define YOLOHOOK_SERVER_ENGINE_METRICS_METRICS_H_

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "server/callbacks/state.h"

namespace yolohook::metrics {

// The IoU thresholds of mAP50-95.
// 0.50:0.05:0.95
inline constexpr int kNumIouThresholds = 10;

// 0.50, 0.55, ..., 0.95.
const std::array<double, kNumIouThresholds>& IouThresholds();

// Intersection over union of two boxes (corners in the same pixel space),
// computed in single precision with an epsilon of 1e-7 in the denominator, as
// Ultralytics' box_iou. Degenerate boxes (no area) give 0.
double BoxIou(const Box& a, const Box& b);

// Ultralytics' match_predictions (non-scipy path): for each IoU threshold,
// pairs (label, prediction) with the same class and IoU >= threshold, taken
// greedily by descending IoU (ties: lower prediction index, then lower label
// index), each prediction and each label used at most once. Returns per
// prediction the 10 "true positive at threshold t" flags. `conf` is not used.
std::vector<std::array<bool, kNumIouThresholds>> MatchPredictions(
    const std::vector<Box>& predictions, const std::vector<Box>& labels);

// AP of one class: envelope of precision made monotone (from the right),
// recall padded with 0 and 1 (precision 1 and 0), interpolated at 101 points
// of recall 0..1 and integrated with the trapezoidal rule (as Ultralytics'
// compute_ap "interp"). `recall` must be non-decreasing (a cumulative curve);
// if the sizes differ, only the common prefix is used. A perfect detector
// scores 0.995, not 1, because the padding drops precision to 0 at recall 1.
double ComputeAp(const std::vector<double>& recall,
                 const std::vector<double>& precision);

// numpy.interp: piecewise-linear interpolation of (xp, fp) at `x`, with `xp`
// non-decreasing; `left` / `right` outside the range; among equal xp values
// the rightmost wins. Exposed for the curves of callers and tests.
double Interp(double x, const std::vector<double>& xp,
              const std::vector<double>& fp, double left, double right);

// Ultralytics' smooth(): a box filter of width round(2 * fraction * size) / 2
// + 1 (integer division; 101 for 1000 values and fraction 0.1), the ends padded
// by the first and last values. Returns as many values as `y` holds.
std::vector<double> Smooth(const std::vector<double>& y, double fraction);

// The figures of a validation run.
struct Summary {
  // mean over classes at the confidence of max mean F1 (Ultralytics'
  // ap_per_class)
  double precision = 0;
  // mean over classes at the same confidence
  double recall = 0;
  // mean over classes present in the labels
  double map50 = 0;
  // mean over classes and the 10 IoU thresholds
  double map50_95 = 0;
  // = map50_95 (weights 0,0,0,1)
  double fitness = 0;
  // images validated
  int images = 0;
  // labels
  int instances = 0;
  // classes present in the labels, by id
  std::vector<ClassMetrics> per_class;
  // (nc+1) x (nc+1), rows predicted, columns true; the last is background.
  std::vector<std::vector<int64_t>> confusion;

  // "metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)",
  // "metrics/mAP50-95(B)", "fitness".
  std::map<std::string, double> ToMap() const;
};

// Accumulates a validation run image by image, then computes its Summary.
// Holds one small record per prediction and per label until destroyed or
// Reset(). Thread-compatible.
class DetectionMetrics {
 public:
  struct Options {
    // predictions counted in the confusion matrix have conf above this
    float confusion_conf = 0.25f;
    // a prediction and a label match in the confusion matrix when IoU is above
    // this
    float confusion_iou = 0.45f;
  };

  explicit DetectionMetrics(std::vector<std::string> names);
  DetectionMetrics(std::vector<std::string> names, Options options);

  // Adds one image. predictions: after NMS; labels: ground truth (conf
  // ignored). Both in the same pixel space. Boxes whose class is outside
  // [0, names.size()) and predictions with a non-finite conf are ignored.
  void AddImage(const std::vector<Box>& predictions,
                const std::vector<Box>& labels);

  // Precision / recall per class at the max-mean-F1 confidence (F1 curve over
  // 1000 confidence points, smoothed by a box filter of fraction 0.1, as
  // Ultralytics), AP per class at the 10 IoU thresholds, and the confusion
  // matrix.
  Summary Compute() const;

  // Forgets every image added.
  void Reset();

  int images() const { return images_; }
  const std::vector<std::string>& names() const { return names_; }

 private:
  struct Prediction {
    float conf = 0;
    int cls = 0;
    std::array<bool, kNumIouThresholds> tp{};
  };

  void AddToConfusion(const std::vector<Box>& predictions,
                      const std::vector<Box>& labels);

  std::vector<std::string> names_;
  Options options_;
  int images_ = 0;
  std::vector<Prediction> predictions_;
  // per class: labels
  std::vector<int> label_count_;
  // per class: images with such a label
  std::vector<int> image_count_;
  std::vector<std::vector<int64_t>> confusion_;
};

// Ultralytics-style table: header "Class Images Instances Box(P R mAP50
// mAP50-95)", an "all" row, then one row per class when per_class_rows. Lines
// end with '\n'. Class names come from `names` (the id when out of range).
std::string FormatTable(const Summary& summary,
                        const std::vector<std::string>& names,
                        bool per_class_rows);

}  // namespace yolohook::metrics

#endif  // YOLOHOOK_SERVER_ENGINE_METRICS_METRICS_H_
