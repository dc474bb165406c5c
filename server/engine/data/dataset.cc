#include "server/engine/data/dataset.h"

#include <algorithm>
#include <array>
#include <filesystem>
#include <opencv2/imgcodecs.hpp>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/engine/data/random.h"

namespace yolohook::data {
namespace {

// Boxes of an image mapped onto its letterboxed version.
std::vector<PixelBox> Letterboxed(std::vector<PixelBox> boxes,
                                  const LetterboxInfo& lb) {
  for (PixelBox& b : boxes) {
    b.x1 = b.x1 * lb.ratio + lb.pad_w;
    b.x2 = b.x2 * lb.ratio + lb.pad_w;
    b.y1 = b.y1 * lb.ratio + lb.pad_h;
    b.y2 = b.y2 * lb.ratio + lb.pad_h;
  }
  return boxes;
}

}  // namespace

DetectionDataset::DetectionDataset(std::vector<ImageRecord> records,
                                   std::vector<std::string> names,
                                   Options options)
    : records_(std::move(records)),
      names_(std::move(names)),
      options_(options),
      cache_(options.cache_images ? records_.size() : 0) {}

absl::StatusOr<DetectionDataset::CachedImage> DetectionDataset::Load(
    size_t index) const {
  const std::string& path = records_[index].image;
  if (options_.cache_images) {
    absl::MutexLock lock(&mu_);
    if (cache_[index] != nullptr) return *cache_[index];
  }
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat("image no longer exists: ", path));
  }
  CachedImage loaded;
  try {
    const cv::Mat decoded = cv::imread(path, cv::IMREAD_COLOR);
    if (decoded.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot decode image: ", path));
    }
    loaded.orig = decoded.size();
    loaded.image = ResizeLongSide(decoded, options_.imgsz, options_.augment);
  } catch (const cv::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot decode image: ", path, ": ", e.msg));
  }
  if (options_.cache_images) {
    absl::MutexLock lock(&mu_);
    if (cache_[index] == nullptr) {
      cache_[index] = std::make_shared<const CachedImage>(loaded);
    }
    return *cache_[index];
  }
  return loaded;
}

absl::StatusOr<LabeledImage> DetectionDataset::LoadResized(
    size_t index, cv::Size* orig) const {
  if (index >= records_.size()) {
    return absl::OutOfRangeError(absl::StrCat(
        "sample ", index, " outside a dataset of ", records_.size()));
  }
  YH_ASSIGN_OR_RETURN(CachedImage loaded, Load(index));
  LabeledImage out;
  // Cached pixels are shared: callers get their own copy.
  out.image = options_.cache_images ? loaded.image.clone() : loaded.image;
  out.boxes = ToPixelBoxes(records_[index].labels, loaded.image.cols,
                           loaded.image.rows);
  if (orig != nullptr) *orig = loaded.orig;
  return out;
}

absl::StatusOr<Sample> DetectionDataset::Get(size_t index,
                                             const AugmentOptions& hyp,
                                             std::mt19937& rng) const {
  if (index >= records_.size()) {
    return absl::OutOfRangeError(absl::StrCat(
        "sample ", index, " outside a dataset of ", records_.size()));
  }
  const int size = options_.imgsz;
  const ImageRecord& record = records_[index];
  Sample sample;
  sample.path = record.image;
  try {
    // The loaded pixels may be shared with the cache: every path below writes
    // only into images it created (Letterbox, Mosaic4At and warps allocate).
    YH_ASSIGN_OR_RETURN(CachedImage loaded, Load(index));
    sample.orig_width = loaded.orig.width;
    sample.orig_height = loaded.orig.height;
    const std::vector<PixelBox> boxes =
        ToPixelBoxes(record.labels, loaded.image.cols, loaded.image.rows);

    if (!options_.augment) {
      LetterboxInfo lb;
      sample.image = Letterbox(loaded.image, size, &lb, /*scaleup=*/false);
      sample.labels = ToLabels(Letterboxed(boxes, lb), size, size);
      const int long_side = std::max(loaded.orig.width, loaded.orig.height);
      sample.letterbox.ratio =
          lb.ratio * static_cast<float>(size) / static_cast<float>(long_side);
      sample.letterbox.pad_w = lb.pad_w;
      sample.letterbox.pad_h = lb.pad_h;
    } else {
      LabeledImage warped;
      if (RandomChance(rng, hyp.mosaic)) {
        std::array<LabeledImage, 4> tiles;
        tiles[0].image = loaded.image;
        tiles[0].boxes = boxes;
        for (int k = 1; k < 4; ++k) {
          const size_t other = static_cast<size_t>(
              RandomInt(rng, 0, static_cast<int>(records_.size()) - 1));
          YH_ASSIGN_OR_RETURN(CachedImage img, Load(other));
          tiles[k].boxes = ToPixelBoxes(records_[other].labels, img.image.cols,
                                        img.image.rows);
          tiles[k].image = std::move(img.image);
        }
        const LabeledImage mosaic = Mosaic4(tiles, size, rng);
        warped = RandomAffine(mosaic, hyp, cv::Size(size, size), rng);
      } else {
        LetterboxInfo lb;
        LabeledImage boxed;
        boxed.image = Letterbox(loaded.image, size, &lb);
        boxed.boxes = Letterboxed(boxes, lb);
        warped = RandomAffine(boxed, hyp, cv::Size(size, size), rng);
      }
      sample.image = std::move(warped.image);
      sample.labels = ToLabels(warped.boxes, size, size);
      AugmentHsv(&sample.image, hyp.hsv_h, hyp.hsv_s, hyp.hsv_v, rng);
      RandomFlips(&sample.image, &sample.labels, hyp.fliplr, hyp.flipud, rng);
    }
  } catch (const cv::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot process image ", record.image, ": ", e.msg));
  }
  if (!sample.image.isContinuous()) sample.image = sample.image.clone();
  return sample;
}

}  // namespace yolohook::data
