// A tiny shapes dataset for engine tests: 8 training and 4 validation images
// of about 64 px, generated in a few milliseconds.
#ifndef YOLOHOOK_TESTS_TESTING_TINY_SHAPES_H_
#define YOLOHOOK_TESTS_TESTING_TINY_SHAPES_H_

#include <string>

#include "absl/status/status.h"
#include "server/engine/data/shapes.h"

namespace yolohook::testing {

// Writes the dataset to `dir`; its data.yaml is dir + "/data.yaml".
inline absl::Status MakeTinyShapes(const std::string& dir) {
  data::ShapesOptions options;
  options.train_images = 8;
  options.val_images = 4;
  options.image_size = 64;
  return data::GenerateShapes(dir, options);
}

}  // namespace yolohook::testing

#endif  // YOLOHOOK_TESTS_TESTING_TINY_SHAPES_H_
