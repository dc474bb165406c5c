#include "server/engine/data/shapes.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <random>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "server/common/status_macros.h"
#include "server/engine/data/random.h"

namespace yolohook::data {
namespace {

namespace fs = std::filesystem;

constexpr double kPi = 3.14159265358979323846;
constexpr int kShift = 4;  // fixed-point bits of polygon vertices
constexpr double kFixed = 1 << kShift;

enum ShapeClass {
  kCircle,
  kRectangle,
  kTriangle,
  kStar,
  kCross,
  kEllipse,
  kNumClasses
};

using Outline = std::vector<cv::Point2d>;

// The outline of a shape of class `cls` whose longest dimension is `size`,
// centred on the origin and not yet rotated.
Outline MakeOutline(int cls, double size, std::mt19937& rng) {
  Outline p;
  const double r = size / 2;
  switch (cls) {
    case kCircle:
    case kEllipse: {
      // Ellipses are clearly elongated so that form, not chance, separates
      // them from circles.
      const double minor =
          cls == kCircle ? r : r * RandomUniform(rng, 0.35, 0.6);
      const int n = 48;
      for (int i = 0; i < n; ++i) {
        const double a = 2 * kPi * i / n;
        p.emplace_back(r * std::cos(a), minor * std::sin(a));
      }
      break;
    }
    case kRectangle: {
      const double h = r * RandomUniform(rng, 0.45, 1.0);
      p = {{-r, -h}, {r, -h}, {r, h}, {-r, h}};
      break;
    }
    case kTriangle: {
      // Roughly equilateral, with jittered corners and a squash.
      const double squash = RandomUniform(rng, 0.75, 1.2);
      for (double base : {-90.0, 30.0, 150.0}) {
        const double a = (base + RandomUniform(rng, -12, 12)) * kPi / 180;
        const double radius = r * RandomUniform(rng, 0.85, 1.0);
        p.emplace_back(radius * std::cos(a), squash * radius * std::sin(a));
      }
      break;
    }
    case kStar: {
      const double inner = r * RandomUniform(rng, 0.38, 0.5);
      for (int i = 0; i < 10; ++i) {
        const double a = -kPi / 2 + kPi * i / 5;
        const double radius = i % 2 == 0 ? r : inner;
        p.emplace_back(radius * std::cos(a), radius * std::sin(a));
      }
      break;
    }
    case kCross: {
      const double t = size * RandomUniform(rng, 0.14, 0.19);  // half arm width
      p = {{-t, -r}, {t, -r}, {t, -t}, {r, -t}, {r, t},   {t, t},
           {t, r},   {-t, r}, {-t, t}, {-r, t}, {-r, -t}, {-t, -t}};
      break;
    }
    default:
      break;
  }
  return p;
}

// Rotates and moves an outline, in OpenCV's fixed-point vertex format.
std::vector<cv::Point> Place(const Outline& outline, double angle,
                             cv::Point2d centre) {
  const double c = std::cos(angle);
  const double s = std::sin(angle);
  std::vector<cv::Point> out;
  out.reserve(outline.size());
  for (const cv::Point2d& q : outline) {
    const double x = centre.x + c * q.x - s * q.y;
    const double y = centre.y + s * q.x + c * q.y;
    out.emplace_back(static_cast<int>(std::lround(x * kFixed)),
                     static_cast<int>(std::lround(y * kFixed)));
  }
  return out;
}

double FixedArea(const std::vector<cv::Point>& poly) {
  return cv::contourArea(poly) / (kFixed * kFixed);
}

cv::Vec3b RandomColor(std::mt19937& rng) {
  return cv::Vec3b(static_cast<uchar>(RandomInt(rng, 0, 255)),
                   static_cast<uchar>(RandomInt(rng, 0, 255)),
                   static_cast<uchar>(RandomInt(rng, 0, 255)));
}

cv::Scalar ToScalar(const cv::Vec3b& c) { return cv::Scalar(c[0], c[1], c[2]); }

double ColorDistance(const cv::Scalar& a, const cv::Scalar& b) {
  const double d0 = a[0] - b[0], d1 = a[1] - b[1], d2 = a[2] - b[2];
  return std::sqrt(d0 * d0 + d1 * d1 + d2 * d2);
}

// Fills `img` with a linear gradient, stripes or smoothed noise.
void DrawBackground(cv::Mat3b& img, std::mt19937& rng) {
  const int w = img.cols;
  const int h = img.rows;
  const cv::Vec3b c0 = RandomColor(rng);
  const cv::Vec3b c1 = RandomColor(rng);
  const double theta = RandomUniform(rng, 0, kPi);
  const double ct = std::cos(theta);
  const double st = std::sin(theta);
  const int kind = RandomInt(rng, 0, 2);
  if (kind == 0 || kind == 1) {
    const double extent = std::abs(w * ct) + std::abs(h * st);
    const double period = RandomUniform(rng, 10, 48);
    const bool hard = RandomChance(rng, 0.5);
    for (int y = 0; y < h; ++y) {
      cv::Vec3b* row = img.ptr<cv::Vec3b>(y);
      for (int x = 0; x < w; ++x) {
        const double proj = (x - w / 2.0) * ct + (y - h / 2.0) * st;
        double t;
        if (kind == 0) {
          t = std::clamp(proj / extent + 0.5, 0.0, 1.0);
        } else {
          t = 0.5 + 0.5 * std::sin(2 * kPi * proj / period);
          if (hard) t = t > 0.5 ? 1.0 : 0.0;
        }
        for (int ch = 0; ch < 3; ++ch) {
          row[x][ch] =
              static_cast<uchar>(std::lround(c0[ch] * (1 - t) + c1[ch] * t));
        }
      }
    }
    return;
  }
  cv::Mat noise(h, w, CV_32FC3);
  cv::RNG cv_rng((static_cast<uint64_t>(rng()) << 32) | rng());
  cv_rng.fill(noise, cv::RNG::NORMAL, 0.0, 1.0);
  const double blur = RandomUniform(rng, 0, 3);
  if (blur > 0.5) {
    cv::GaussianBlur(noise, noise, cv::Size(0, 0), blur);
    cv::Scalar mean, stddev;
    cv::meanStdDev(noise, mean, stddev);
    noise /= std::max(stddev[0], 1e-3);
  }
  const double sigma = RandomUniform(rng, 12, 40);
  cv::Mat base(h, w, CV_32FC3, ToScalar(c0));
  cv::Mat out = base + noise * sigma;
  out.convertTo(img, CV_8UC3);
}

void DrawClutterLines(cv::Mat3b& img, int count, int max_thickness,
                      std::mt19937& rng) {
  for (int i = 0; i < count; ++i) {
    const cv::Point a(RandomInt(rng, -img.cols / 4, img.cols * 5 / 4),
                      RandomInt(rng, -img.rows / 4, img.rows * 5 / 4));
    const cv::Point b(RandomInt(rng, -img.cols / 4, img.cols * 5 / 4),
                      RandomInt(rng, -img.rows / 4, img.rows * 5 / 4));
    const int thickness = RandomInt(rng, 1, max_thickness);
    cv::line(img, a, b, ToScalar(RandomColor(rng)), thickness, cv::LINE_AA);
  }
}

// One generated image and its label file text.
struct GeneratedImage {
  cv::Mat3b image;
  std::string labels;
};

GeneratedImage GenerateImage(int base_size, uint64_t seed) {
  std::mt19937 rng = MakeRng(seed);
  const int w =
      static_cast<int>(std::lround(base_size * RandomUniform(rng, 0.8, 1.2)));
  const int h =
      static_cast<int>(std::lround(base_size * RandomUniform(rng, 0.8, 1.2)));
  GeneratedImage out;
  out.image = cv::Mat3b(h, w);
  DrawBackground(out.image, rng);
  DrawClutterLines(out.image, RandomInt(rng, 0, 8), 2, rng);

  const int short_side = std::min(w, h);
  const int objects = RandomChance(rng, 0.04) ? 0 : RandomInt(rng, 1, 6);
  // owner(y, x) = 1 + the index of the top object at that pixel (0: none).
  cv::Mat1b owner(h, w, uchar{0});
  std::vector<int> area;     // pixels of each object when drawn
  std::vector<int> visible;  // pixels still on top
  cv::Mat1b mask(h, w);
  for (int k = 0; k < objects; ++k) {
    const int cls = RandomInt(rng, 0, kNumClasses - 1);
    for (int attempt = 0; attempt < 40; ++attempt) {
      const double size = short_side * RandomUniform(rng, 0.05, 0.45);
      const Outline outline = MakeOutline(cls, size, rng);
      const double angle = RandomUniform(rng, 0, 2 * kPi);
      const cv::Point2d centre(RandomUniform(rng, 0, w),
                               RandomUniform(rng, 0, h));
      const int border = RandomChance(rng, 0.3) ? RandomInt(rng, 1, 3) : 0;
      const std::vector<std::vector<cv::Point>> poly = {
          Place(outline, angle, centre)};

      mask.setTo(0);
      cv::fillPoly(mask, poly, cv::Scalar(255), cv::LINE_8, kShift);
      if (border > 0) {
        cv::polylines(mask, poly, true, cv::Scalar(255), border, cv::LINE_8,
                      kShift);
      }
      const cv::Rect box = cv::boundingRect(mask);
      const int inside = cv::countNonZero(mask(box));
      // Mostly inside the image, so that the form stays recognisable.
      if (inside < 24 || inside < 0.7 * FixedArea(poly[0])) continue;
      // No earlier object may lose more than half of its pixels.
      std::vector<int> covered(area.size(), 0);
      for (int y = box.y; y < box.y + box.height; ++y) {
        const uchar* m = mask.ptr<uchar>(y);
        const uchar* o = owner.ptr<uchar>(y);
        for (int x = box.x; x < box.x + box.width; ++x) {
          if (m[x] != 0 && o[x] != 0) ++covered[o[x] - 1];
        }
      }
      bool hides = false;
      for (size_t j = 0; j < area.size(); ++j) {
        if (2 * (visible[j] - covered[j]) < area[j]) hides = true;
      }
      if (hides) continue;

      for (size_t j = 0; j < area.size(); ++j) visible[j] -= covered[j];
      owner.setTo(static_cast<uchar>(area.size() + 1), mask);
      area.push_back(inside);
      visible.push_back(inside);

      // A fill colour that stands out from what lies beneath.
      const cv::Scalar beneath = cv::mean(out.image, mask);
      cv::Scalar fill = ToScalar(RandomColor(rng));
      for (int t = 0; t < 16 && ColorDistance(fill, beneath) < 110; ++t) {
        fill = ToScalar(RandomColor(rng));
      }
      cv::fillPoly(out.image, poly, fill, cv::LINE_AA, kShift);
      if (border > 0) {
        cv::polylines(out.image, poly, true, ToScalar(RandomColor(rng)), border,
                      cv::LINE_AA, kShift);
      }
      absl::StrAppendFormat(&out.labels, "%d %.6f %.6f %.6f %.6f\n", cls,
                            (box.x + box.width / 2.0) / w,
                            (box.y + box.height / 2.0) / h,
                            static_cast<double>(box.width) / w,
                            static_cast<double>(box.height) / h);
      break;
    }
  }
  // A few thin lines over everything, and sensor-like noise.
  DrawClutterLines(out.image, RandomInt(rng, 0, 2), 1, rng);
  const double sigma = RandomUniform(rng, 0, 8);
  if (sigma > 1) {
    cv::Mat noise(h, w, CV_16SC3);
    cv::RNG cv_rng((static_cast<uint64_t>(rng()) << 32) | rng());
    cv_rng.fill(noise, cv::RNG::NORMAL, 0.0, sigma);
    cv::Mat sum;
    cv::add(out.image, noise, sum, cv::noArray(), CV_16SC3);
    sum.convertTo(out.image, CV_8UC3);
  }
  return out;
}

absl::Status WriteFile(const fs::path& path, const std::string& bytes) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  file.close();
  if (!file) {
    return absl::InternalError(absl::StrCat("cannot write ", path.string()));
  }
  return absl::OkStatus();
}

absl::Status WriteImage(const fs::path& dir, int split, int index,
                        const ShapesOptions& options) {
  const uint64_t seed =
      MixSeed(MixSeed(options.seed, static_cast<uint64_t>(split)),
              static_cast<uint64_t>(index));
  GeneratedImage generated = GenerateImage(options.image_size, seed);
  const char* split_name = split == 0 ? "train" : "val";
  const std::string stem = absl::StrFormat("%05d", index);
  std::vector<uchar> jpeg;
  const int quality = 80 + static_cast<int>(seed % 16);
  try {
    if (!cv::imencode(".jpg", generated.image, jpeg,
                      {cv::IMWRITE_JPEG_QUALITY, quality})) {
      return absl::InternalError("cannot encode a JPEG image");
    }
  } catch (const cv::Exception& e) {
    return absl::InternalError(
        absl::StrCat("cannot encode a JPEG image: ", e.msg));
  }
  YH_RETURN_IF_ERROR(WriteFile(dir / "images" / split_name / (stem + ".jpg"),
                               std::string(jpeg.begin(), jpeg.end())));
  return WriteFile(dir / "labels" / split_name / (stem + ".txt"),
                   generated.labels);
}

std::string DataYaml(const ShapesOptions& options) {
  std::string yaml = absl::StrCat(
      "# yolohook built-in dataset \"shapes\": synthetic geometric shapes\n",
      "# (seed ", options.seed, ", ", options.train_images, " train and ",
      options.val_images, " val images of about ", options.image_size,
      " px)\npath: .\ntrain: images/train\nval: images/val\nnames:\n");
  const auto& names = ShapesClassNames();
  for (size_t i = 0; i < names.size(); ++i) {
    absl::StrAppend(&yaml, "  ", i, ": ", names[i], "\n");
  }
  return yaml;
}

// Generates the whole dataset into `dir` (which must not exist yet).
absl::Status GenerateInto(const fs::path& dir, const ShapesOptions& options) {
  std::error_code ec;
  for (const char* sub :
       {"images/train", "images/val", "labels/train", "labels/val"}) {
    fs::create_directories(dir / sub, ec);
    if (ec) {
      return absl::InternalError(absl::StrCat(
          "cannot create ", (dir / sub).string(), ": ", ec.message()));
    }
  }
  const int total = options.train_images + options.val_images;
  std::atomic<int> next{0};
  absl::Mutex mu;
  absl::Status first_error;
  auto work = [&] {
    for (int i = next++; i < total; i = next++) {
      const int split = i < options.train_images ? 0 : 1;
      const int index = split == 0 ? i : i - options.train_images;
      absl::Status status = WriteImage(dir, split, index, options);
      if (!status.ok()) {
        absl::MutexLock lock(&mu);
        if (first_error.ok()) first_error = std::move(status);
        next = total;
      }
    }
  };
  const int threads =
      std::clamp(static_cast<int>(std::thread::hardware_concurrency()), 1, 4);
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  YH_RETURN_IF_ERROR(first_error);
  // Written last: its presence marks a complete dataset.
  return WriteFile(dir / "data.yaml", DataYaml(options));
}

}  // namespace

const std::vector<std::string>& ShapesClassNames() {
  static const auto* const kNames = new std::vector<std::string>{
      "circle", "rectangle", "triangle", "star", "cross", "ellipse"};
  return *kNames;
}

absl::Status GenerateShapes(const std::string& dir_name,
                            const ShapesOptions& options) {
  if (options.train_images < 1 || options.val_images < 1 ||
      options.image_size < 32 || options.image_size > 4096) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shapes: need train_images >= 1, val_images >= 1 and image_size in "
        "32..4096; got ",
        options.train_images, ", ", options.val_images, ", ",
        options.image_size));
  }
  fs::path dir = fs::path(dir_name).lexically_normal();
  if (!dir.has_filename()) dir = dir.parent_path();
  if (dir.empty()) {
    return absl::InvalidArgumentError("shapes: empty dataset directory");
  }
  std::error_code ec;
  if (fs::exists(dir / "data.yaml", ec)) return absl::OkStatus();
  if (fs::exists(dir, ec) && !fs::is_empty(dir, ec)) {
    return absl::FailedPreconditionError(absl::StrCat(
        dir.string(),
        " exists but holds no data.yaml: remove it to regenerate the shapes "
        "dataset"));
  }
  const fs::path parent = dir.has_parent_path() ? dir.parent_path() : ".";
  fs::create_directories(parent, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create ", parent.string(), ": ", ec.message()));
  }
  static std::atomic<int> counter{0};
  const fs::path tmp = parent / absl::StrCat(dir.filename().string(), ".tmp-",
                                             getpid(), "-", counter++);
  fs::remove_all(tmp, ec);
  absl::Status status = GenerateInto(tmp, options);
  if (status.ok()) {
    fs::rename(tmp, dir, ec);
    if (ec && !fs::exists(dir / "data.yaml")) {
      status =
          absl::InternalError(absl::StrCat("cannot move ", tmp.string(), " to ",
                                           dir.string(), ": ", ec.message()));
    }
  }
  // Leftovers: a failed attempt, or a copy that lost the race to a
  // concurrent caller.
  fs::remove_all(tmp, ec);
  return status;
}

}  // namespace yolohook::data
