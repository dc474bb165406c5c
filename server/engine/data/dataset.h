// A detection dataset: verified records of one split, loaded and augmented on
// demand.
#ifndef YOLOHOOK_SERVER_ENGINE_DATA_DATASET_H_
#define YOLOHOOK_SERVER_ENGINE_DATA_DATASET_H_

#include <memory>
#include <opencv2/core.hpp>
#include <random>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/engine/data/augment.h"
#include "server/engine/data/labels.h"

namespace yolohook::data {

// One image ready for the model.
struct Sample {
  // imgsz x imgsz, CV_8UC3 BGR, continuous
  cv::Mat image;
  // normalised to `image`
  std::vector<Label> labels;
  // source image
  std::string path;
  // source height in pixels
  int orig_height = 0;
  // source width in pixels
  int orig_width = 0;
  // maps original → `image` (identity when augmented)
  LetterboxInfo letterbox;
};

// Loads and augments the images of a split (records from VerifyDataset).
//
// Training pipeline (`augment`): the image resized so its long side is imgsz,
// then with probability `mosaic` a mosaic with three other random images of
// the split on a 2*imgsz canvas followed by a random affine with border
// -imgsz/2 (which crops back to imgsz), otherwise a letterbox followed by a
// random affine; then HSV and flips. Validation: the resized image
// letterboxed.
//
// Thread-safe: Get() may be called from several threads at once. The image
// cache fills lazily and holds each image once.
class DetectionDataset {
 public:
  struct Options {
    // output size
    int imgsz = 640;
    // training augmentation; false = plain letterbox (validation)
    bool augment = false;
    // keep decoded images (resized so the long side = imgsz) in memory
    bool cache_images = false;
  };

  DetectionDataset(std::vector<ImageRecord> records,
                   std::vector<std::string> names, Options options);

  DetectionDataset(const DetectionDataset&) = delete;
  DetectionDataset& operator=(const DetectionDataset&) = delete;

  size_t size() const { return records_.size(); }
  const std::vector<ImageRecord>& records() const { return records_; }
  const std::vector<std::string>& names() const { return names_; }
  const Options& options() const { return options_; }

  // Sample `index`, augmented with `hyp` when the dataset augments
  // (NoAugmentation() reduces training to a letterbox). Deterministic for a
  // given rng state. Errors: OUT_OF_RANGE for a bad index; NOT_FOUND if the
  // image no longer exists, INVALID_ARGUMENT if it can no longer be decoded
  // (both name the file).
  absl::StatusOr<Sample> Get(size_t index, const AugmentOptions& hyp,
                             std::mt19937& rng) const;

  // Image `index` resized so that its long side is imgsz, with its labels in
  // its pixels; `orig` (optional) receives the decoded size. Errors as Get().
  absl::StatusOr<LabeledImage> LoadResized(size_t index,
                                           cv::Size* orig = nullptr) const;

 private:
  // A decoded, resized image and the size it had on disk.
  struct CachedImage {
    cv::Mat image;
    cv::Size orig;
  };

  absl::StatusOr<CachedImage> Load(size_t index) const ABSL_LOCKS_EXCLUDED(mu_);

  const std::vector<ImageRecord> records_;
  const std::vector<std::string> names_;
  const Options options_;

  mutable absl::Mutex mu_;
  // Filled lazily when options_.cache_images; one slot per record.
  mutable std::vector<std::shared_ptr<const CachedImage>> cache_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace yolohook::data

#endif  // YOLOHOOK_SERVER_ENGINE_DATA_DATASET_H_
