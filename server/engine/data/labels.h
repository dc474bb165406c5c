// YOLO label files and their verification.
#ifndef YOLOHOOK_SERVER_ENGINE_DATA_LABELS_H_
#define YOLOHOOK_SERVER_ENGINE_DATA_LABELS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace yolohook::data {

// One object: class id and box centre/size, normalised to the image.
struct Label {
  // class id
  int cls = 0;
  // box centre x / image width
  float xc = 0;
  // box centre y / image height
  float yc = 0;
  // box width / image width
  float w = 0;
  // box height / image height
  float h = 0;
};

// A verified image and its labels.
struct ImageRecord {
  // path
  std::string image;
  // empty = background image
  std::vector<Label> labels;
  // original width in pixels
  int width = 0;
  // original height in pixels
  int height = 0;
};

// What VerifyDataset found.
struct VerifyReport {
  // images with a label file and labels
  int found = 0;
  // images without a label file (backgrounds)
  int missing = 0;
  // empty label files
  int empty = 0;
  // images or label files skipped
  int corrupt = 0;
  // duplicate label rows removed
  int duplicates = 0;
  // one line each: file, line and reason
  std::vector<std::string> warnings;

  // "N images, B backgrounds, C corrupt": N counts every usable image,
  // backgrounds (no label file, or an empty one) included.
  std::string Summary() const;
};

// Parses the text of a label file ("class xc yc w h" per line; blank lines
// are ignored). Rows must have 5 numeric columns, an integral class id in
// 0..nc-1, coordinates in [0, 1] (1e-3 tolerance) and w, h > 0; boxes are then
// clipped to the image. Exact duplicate rows are removed, each adding a line
// to `warnings` (optional). `file` names the file in messages.
// Errors: INVALID_ARGUMENT naming the file, the line and the reason.
absl::StatusOr<std::vector<Label>> ParseLabels(
    const std::string& text, int nc, const std::string& file,
    std::vector<std::string>* warnings);

// Checks every image (readable, decodable, non-zero size) and its label file
// (see LabelPathFor and ParseLabels). An image without a label file is a
// background. A corrupt image or label file skips that image with a warning
// "ignoring corrupt image/label: <file>[:<line>]: <reason>"; duplicate rows
// are removed with a warning. Records keep the order of `images`. Runs on
// `threads` threads (at least one). `report` may be null.
// Errors: INVALID_ARGUMENT if no valid image remains (naming the first
// reasons).
absl::StatusOr<std::vector<ImageRecord>> VerifyDataset(
    const std::vector<std::string>& images, int nc, int threads,
    VerifyReport* report);

}  // namespace yolohook::data

#endif  // YOLOHOOK_SERVER_ENGINE_DATA_LABELS_H_
