// The built-in `shapes` dataset: synthetic images of geometric shapes on
// textured backgrounds, a small but real detection task for demos and tests.
#ifndef YOLOHOOK_SERVER_ENGINE_DATA_SHAPES_H_
#define YOLOHOOK_SERVER_ENGINE_DATA_SHAPES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace yolohook::data {

// How many images of what size GenerateShapes writes.
struct ShapesOptions {
  // training images
  int train_images = 512;
  // validation images
  int val_images = 128;
  // images are about this size (each side 0.8x..1.2x)
  int image_size = 320;
  // generation seed
  uint32_t seed = 0;
};

// The class names, in class id order: circle, rectangle, triangle, star,
// cross, ellipse.
const std::vector<std::string>& ShapesClassNames();

// Writes an ordinary YOLO dataset: {dir}/images/{train,val}/NNNNN.jpg,
// {dir}/labels/{train,val}/NNNNN.txt and {dir}/data.yaml (path: ., train:
// images/train, val: images/val, names as an {id: name} map).
//
// Each image has 1-6 shapes (a few have none) of random colour, size (about
// 5% to 45% of the short side), aspect and rotation on a noise, gradient or
// stripe background with clutter lines; shapes may overlap but no shape loses
// more than half of its pixels. Labels are the tight boxes of the drawn
// shapes, clipped to the image.
//
// Deterministic: the same options give identical files. Idempotent: returns at
// once if {dir}/data.yaml exists. The dataset is generated in a temporary
// sibling directory that is renamed into place, so concurrent callers and
// crashes never leave half a dataset at {dir}.
// Errors: INVALID_ARGUMENT for bad options; FAILED_PRECONDITION if {dir}
// exists, is not empty and has no data.yaml; INTERNAL for I/O failures
// (naming the path).
absl::Status GenerateShapes(const std::string& dir,
                            const ShapesOptions& options);

}  // namespace yolohook::data

#endif  // YOLOHOOK_SERVER_ENGINE_DATA_SHAPES_H_
