#include "server/engine/metrics/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <utility>

#include "absl/strings/str_cat.h"

namespace yolohook::metrics {
namespace {

// Ultralytics' eps in ap_per_class (recall and F1 denominators).
constexpr double kEps = 1e-16;
// Points of the confidence axis of the P, R and F1 curves.
constexpr int kCurvePoints = 1000;
// Points of the recall axis of the interpolated AP.
constexpr int kApPoints = 101;

// numpy.linspace(0, 1, n): k * (1 / (n - 1)), the last exactly 1.
std::vector<double> Linspace01(int n) {
  std::vector<double> x(n);
  const double step = 1.0 / (n - 1);
  for (int k = 0; k < n; ++k) x[k] = k * step;
  x[n - 1] = 1.0;
  return x;
}

// One candidate (label, prediction) pair of a matching.
struct Pair {
  float iou = 0;
  int pred = 0;
  int label = 0;
};

// Highest IoU first; ties by prediction, then label index, so results do not
// depend on the sort implementation.
bool PairBefore(const Pair& a, const Pair& b) {
  if (a.iou != b.iou) return a.iou > b.iou;
  if (a.pred != b.pred) return a.pred < b.pred;
  return a.label < b.label;
}

float BoxIouF(const Box& a, const Box& b) {
  const float iw = std::min(a.x2, b.x2) - std::max(a.x1, b.x1);
  const float ih = std::min(a.y2, b.y2) - std::max(a.y1, b.y1);
  // Written so that NaN coordinates give no overlap.
  if (!(iw > 0.0f) || !(ih > 0.0f)) return 0.0f;
  const float inter = iw * ih;
  const float area_a =
      std::max(a.x2 - a.x1, 0.0f) * std::max(a.y2 - a.y1, 0.0f);
  const float area_b =
      std::max(b.x2 - b.x1, 0.0f) * std::max(b.y2 - b.y1, 0.0f);
  const float iou = inter / (area_a + area_b - inter + 1e-7f);
  return std::isfinite(iou) ? iou : 0.0f;
}

double Mean(const std::vector<double>& v) {
  if (v.empty()) return 0;
  return std::accumulate(v.begin(), v.end(), 0.0) /
         static_cast<double>(v.size());
}

// printf into a std::string.
template <typename... Args>
std::string Format(const char* format, Args... args) {
  const int n = std::snprintf(nullptr, 0, format, args...);
  if (n <= 0) return "";
  std::string out(static_cast<size_t>(n) + 1, '\0');
  std::snprintf(out.data(), out.size(), format, args...);
  out.resize(static_cast<size_t>(n));
  return out;
}

std::string TableRow(const std::string& name, int images, int instances,
                     double p, double r, double map50, double map50_95) {
  return Format("%22s%11d%11d%11.3g%11.3g%11.3g%11.3g\n", name.c_str(), images,
                instances, p, r, map50, map50_95);
}

}  // namespace

const std::array<double, kNumIouThresholds>& IouThresholds() {
  static constexpr std::array<double, kNumIouThresholds> kThresholds = {
      0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95};
  return kThresholds;
}

double BoxIou(const Box& a, const Box& b) { return BoxIouF(a, b); }

std::vector<std::array<bool, kNumIouThresholds>> MatchPredictions(
    const std::vector<Box>& predictions, const std::vector<Box>& labels) {
  std::vector<std::array<bool, kNumIouThresholds>> correct(predictions.size());
  for (auto& row : correct) row.fill(false);
  const auto& thresholds = IouThresholds();
  // IoUs are single precision (as in Ultralytics), so compare against the
  // single-precision thresholds: an IoU of exactly 0.6 passes 0.60.
  std::array<float, kNumIouThresholds> thresholds_f;
  for (int t = 0; t < kNumIouThresholds; ++t) {
    thresholds_f[t] = static_cast<float>(thresholds[t]);
  }

  std::vector<Pair> pairs;
  for (size_t p = 0; p < predictions.size(); ++p) {
    for (size_t l = 0; l < labels.size(); ++l) {
      if (predictions[p].cls != labels[l].cls) continue;
      const float iou = BoxIouF(predictions[p], labels[l]);
      if (iou >= thresholds_f[0]) {
        pairs.push_back({iou, static_cast<int>(p), static_cast<int>(l)});
      }
    }
  }
  std::sort(pairs.begin(), pairs.end(), PairBefore);

  std::vector<char> pred_used(predictions.size());
  std::vector<char> label_used(labels.size());
  for (int t = 0; t < kNumIouThresholds; ++t) {
    std::fill(pred_used.begin(), pred_used.end(), 0);
    std::fill(label_used.begin(), label_used.end(), 0);
    for (const Pair& pair : pairs) {
      if (pair.iou < thresholds_f[t]) break;  // sorted: the rest are lower
      if (pred_used[pair.pred] || label_used[pair.label]) continue;
      pred_used[pair.pred] = 1;
      label_used[pair.label] = 1;
      correct[pair.pred][t] = true;
    }
  }
  return correct;
}

double Interp(double x, const std::vector<double>& xp,
              const std::vector<double>& fp, double left, double right) {
  const size_t n = std::min(xp.size(), fp.size());
  if (n == 0 || std::isnan(x)) return left;
  if (x < xp[0]) return left;
  if (x > xp[n - 1]) return right;
  // The last j with xp[j] <= x.
  const size_t j = static_cast<size_t>(
      std::upper_bound(xp.begin(), xp.begin() + n, x) - xp.begin() - 1);
  if (j == n - 1 || xp[j] == x) return fp[j];
  const double slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]);
  double y = slope * (x - xp[j]) + fp[j];
  if (std::isnan(y)) {
    y = slope * (x - xp[j + 1]) + fp[j + 1];
    if (std::isnan(y) && fp[j] == fp[j + 1]) y = fp[j];
  }
  return y;
}

std::vector<double> Smooth(const std::vector<double>& y, double fraction) {
  if (y.empty()) return {};
  // Python's round() rounds half to even, as nearbyint in the default mode.
  const int width = static_cast<int>(std::nearbyint(
                        static_cast<double>(y.size()) * fraction * 2)) /
                        2 +
                    1;
  // Pad width / 2 copies of the ends on each side; output k averages padded
  // elements k .. k + width - 1 (numpy's "valid" convolution; for an even
  // width numpy yields one more value, which is dropped).
  const int pad = width / 2;
  const int n = static_cast<int>(y.size());
  auto at = [&](int i) { return y[std::clamp(i - pad, 0, n - 1)]; };
  const double weight = 1.0 / width;
  std::vector<double> out(y.size());
  for (int k = 0; k < n; ++k) {
    double sum = 0;
    for (int i = k; i < k + width; ++i) sum += at(i) * weight;
    out[k] = sum;
  }
  return out;
}

double ComputeAp(const std::vector<double>& recall,
                 const std::vector<double>& precision) {
  const size_t n = std::min(recall.size(), precision.size());
  std::vector<double> mrec;
  std::vector<double> mpre;
  mrec.reserve(n + 2);
  mpre.reserve(n + 2);
  mrec.push_back(0.0);
  mpre.push_back(1.0);
  for (size_t i = 0; i < n; ++i) {
    mrec.push_back(recall[i]);
    mpre.push_back(precision[i]);
  }
  mrec.push_back(1.0);
  mpre.push_back(0.0);
  for (size_t i = mpre.size() - 1; i-- > 0;) {
    mpre[i] = std::max(mpre[i], mpre[i + 1]);
  }
  const std::vector<double> x = Linspace01(kApPoints);
  std::vector<double> y(x.size());
  for (size_t k = 0; k < x.size(); ++k) {
    y[k] = Interp(x[k], mrec, mpre, mpre.front(), mpre.back());
  }
  double ap = 0;
  for (size_t k = 0; k + 1 < x.size(); ++k) {
    ap += (x[k + 1] - x[k]) * (y[k] + y[k + 1]) / 2.0;
  }
  return ap;
}

std::map<std::string, double> Summary::ToMap() const {
  return {{"metrics/precision(B)", precision},
          {"metrics/recall(B)", recall},
          {"metrics/mAP50(B)", map50},
          {"metrics/mAP50-95(B)", map50_95},
          {"fitness", fitness}};
}

DetectionMetrics::DetectionMetrics(std::vector<std::string> names)
    : DetectionMetrics(std::move(names), Options()) {}

DetectionMetrics::DetectionMetrics(std::vector<std::string> names,
                                   Options options)
    : names_(std::move(names)), options_(options) {
  Reset();
}

void DetectionMetrics::Reset() {
  const size_t nc = names_.size();
  images_ = 0;
  predictions_.clear();
  label_count_.assign(nc, 0);
  image_count_.assign(nc, 0);
  confusion_.assign(nc + 1, std::vector<int64_t>(nc + 1, 0));
}

void DetectionMetrics::AddImage(const std::vector<Box>& predictions,
                                const std::vector<Box>& labels) {
  const int nc = static_cast<int>(names_.size());
  std::vector<Box> preds;
  preds.reserve(predictions.size());
  for (const Box& box : predictions) {
    if (box.cls >= 0 && box.cls < nc && std::isfinite(box.conf)) {
      preds.push_back(box);
    }
  }
  std::vector<Box> truth;
  truth.reserve(labels.size());
  for (const Box& box : labels) {
    if (box.cls >= 0 && box.cls < nc) truth.push_back(box);
  }

  ++images_;
  std::vector<char> present(names_.size(), 0);
  for (const Box& box : truth) {
    ++label_count_[box.cls];
    present[box.cls] = 1;
  }
  for (int c = 0; c < nc; ++c) image_count_[c] += present[c];

  const auto correct = MatchPredictions(preds, truth);
  for (size_t i = 0; i < preds.size(); ++i) {
    predictions_.push_back({preds[i].conf, preds[i].cls, correct[i]});
  }
  AddToConfusion(preds, truth);
}

void DetectionMetrics::AddToConfusion(const std::vector<Box>& predictions,
                                      const std::vector<Box>& labels) {
  const int background = static_cast<int>(names_.size());
  std::vector<const Box*> preds;
  for (const Box& box : predictions) {
    if (box.conf > options_.confusion_conf) preds.push_back(&box);
  }
  // Class-agnostic, unique, highest IoU first.
  std::vector<Pair> pairs;
  for (size_t p = 0; p < preds.size(); ++p) {
    for (size_t l = 0; l < labels.size(); ++l) {
      const float iou = BoxIouF(*preds[p], labels[l]);
      if (iou > options_.confusion_iou) {
        pairs.push_back({iou, static_cast<int>(p), static_cast<int>(l)});
      }
    }
  }
  std::sort(pairs.begin(), pairs.end(), PairBefore);
  std::vector<char> pred_used(preds.size(), 0);
  std::vector<char> label_used(labels.size(), 0);
  for (const Pair& pair : pairs) {
    if (pred_used[pair.pred] || label_used[pair.label]) continue;
    pred_used[pair.pred] = 1;
    label_used[pair.label] = 1;
    ++confusion_[preds[pair.pred]->cls][labels[pair.label].cls];
  }
  for (size_t l = 0; l < labels.size(); ++l) {
    if (!label_used[l]) ++confusion_[background][labels[l].cls];
  }
  for (size_t p = 0; p < preds.size(); ++p) {
    if (!pred_used[p]) ++confusion_[preds[p]->cls][background];
  }
}

Summary DetectionMetrics::Compute() const {
  Summary summary;
  summary.images = images_;
  summary.instances =
      std::accumulate(label_count_.begin(), label_count_.end(), 0);
  summary.confusion = confusion_;

  // Classes present in the labels.
  std::vector<int> classes;
  for (int c = 0; c < static_cast<int>(label_count_.size()); ++c) {
    if (label_count_[c] > 0) classes.push_back(c);
  }
  if (classes.empty()) return summary;

  // All predictions by descending confidence (stable: equal confidences keep
  // the order in which they were added).
  std::vector<size_t> order(predictions_.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return predictions_[a].conf > predictions_[b].conf;
  });

  // Per class, its predictions in that order.
  std::vector<std::vector<size_t>> by_class(names_.size());
  for (size_t idx : order) by_class[predictions_[idx].cls].push_back(idx);

  const std::vector<double> x = Linspace01(kCurvePoints);
  const size_t nk = classes.size();
  std::vector<std::vector<double>> p_curve(
      nk, std::vector<double>(kCurvePoints, 0.0));
  std::vector<std::vector<double>> r_curve(
      nk, std::vector<double>(kCurvePoints, 0.0));
  std::vector<std::array<double, kNumIouThresholds>> ap(nk);

  for (size_t ci = 0; ci < nk; ++ci) {
    ap[ci].fill(0.0);
    const int c = classes[ci];
    const double n_labels = label_count_[c];
    std::vector<double> neg_conf;
    std::array<std::vector<double>, kNumIouThresholds> recall;
    std::array<std::vector<double>, kNumIouThresholds> precision;
    std::array<double, kNumIouThresholds> tpc{};
    std::array<double, kNumIouThresholds> fpc{};
    for (size_t idx : by_class[c]) {
      const Prediction& pred = predictions_[idx];
      neg_conf.push_back(-static_cast<double>(pred.conf));
      for (int t = 0; t < kNumIouThresholds; ++t) {
        if (pred.tp[t]) {
          tpc[t] += 1;
        } else {
          fpc[t] += 1;
        }
        recall[t].push_back(tpc[t] / (n_labels + kEps));
        precision[t].push_back(tpc[t] / (tpc[t] + fpc[t]));
      }
    }
    if (neg_conf.empty()) continue;
    for (int k = 0; k < kCurvePoints; ++k) {
      r_curve[ci][k] =
          Interp(-x[k], neg_conf, recall[0], 0.0, recall[0].back());
      p_curve[ci][k] =
          Interp(-x[k], neg_conf, precision[0], 1.0, precision[0].back());
    }
    for (int t = 0; t < kNumIouThresholds; ++t) {
      ap[ci][t] = ComputeAp(recall[t], precision[t]);
    }
  }

  // The confidence of the best mean F1 (first maximum of the smoothed curve).
  std::vector<double> mean_f1(kCurvePoints, 0.0);
  for (size_t ci = 0; ci < nk; ++ci) {
    for (int k = 0; k < kCurvePoints; ++k) {
      const double p = p_curve[ci][k];
      const double r = r_curve[ci][k];
      mean_f1[k] += 2 * p * r / (p + r + kEps);
    }
  }
  for (double& f : mean_f1) f /= static_cast<double>(nk);
  const std::vector<double> smoothed = Smooth(mean_f1, 0.1);
  const size_t best = static_cast<size_t>(
      std::max_element(smoothed.begin(), smoothed.end()) - smoothed.begin());

  std::vector<double> ps;
  std::vector<double> rs;
  std::vector<double> ap50s;
  std::vector<double> aps;
  for (size_t ci = 0; ci < nk; ++ci) {
    const int c = classes[ci];
    ClassMetrics row;
    row.cls = c;
    row.name = names_[c];
    row.images = image_count_[c];
    row.instances = label_count_[c];
    row.precision = p_curve[ci][best];
    row.recall = r_curve[ci][best];
    row.map50 = ap[ci][0];
    row.map50_95 =
        std::accumulate(ap[ci].begin(), ap[ci].end(), 0.0) / kNumIouThresholds;
    ps.push_back(row.precision);
    rs.push_back(row.recall);
    ap50s.push_back(row.map50);
    aps.push_back(row.map50_95);
    summary.per_class.push_back(std::move(row));
  }
  summary.precision = Mean(ps);
  summary.recall = Mean(rs);
  summary.map50 = Mean(ap50s);
  summary.map50_95 = Mean(aps);
  summary.fitness = summary.map50_95;
  return summary;
}

std::string FormatTable(const Summary& summary,
                        const std::vector<std::string>& names,
                        bool per_class_rows) {
  std::string out = Format("%22s%11s%11s%11s%11s%11s%11s\n", "Class", "Images",
                           "Instances", "Box(P", "R", "mAP50", "mAP50-95)");
  out += TableRow("all", summary.images, summary.instances, summary.precision,
                  summary.recall, summary.map50, summary.map50_95);
  if (!per_class_rows) return out;
  for (const ClassMetrics& row : summary.per_class) {
    std::string name;
    if (row.cls >= 0 && row.cls < static_cast<int>(names.size())) {
      name = names[row.cls];
    } else if (!row.name.empty()) {
      name = row.name;
    } else {
      name = absl::StrCat(row.cls);
    }
    out += TableRow(name, row.images, row.instances, row.precision, row.recall,
                    row.map50, row.map50_95);
  }
  return out;
}

}  // namespace yolohook::metrics
