// The text forms of the metadata an exported detector carries in its ONNX
// metadata_props, as Ultralytics writes them, so that files exported here and
// by Ultralytics read the same way:
//   names  "{0: 'person', 1: 'bicycle'}"  (a Python dict literal)
//   imgsz  "[640, 640]"                   (height, width)
//   stride "32", task "detect", batch "1", date, version, ...
#ifndef YOLOHOOK_SERVER_ENGINE_EXPORT_ONNX_METADATA_H_
#define YOLOHOOK_SERVER_ENGINE_EXPORT_ONNX_METADATA_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace yolohook::exporter {

// Metadata keys.
inline constexpr char kMetadataNames[] = "names";
inline constexpr char kMetadataImgsz[] = "imgsz";
inline constexpr char kMetadataStride[] = "stride";
inline constexpr char kMetadataTask[] = "task";
inline constexpr char kMetadataBatch[] = "batch";

// Formats class names as a Python dict literal from index to quoted name,
// quoting like Python's repr().
std::string FormatNames(const std::vector<std::string>& names);

// Parses names written by FormatNames() or Ultralytics: a dict literal whose
// keys are 0..n-1 in any order, or a list literal ['a', 'b']. Either quote
// style and the escapes \\ \' \" \n \t are accepted. Errors:
// INVALID_ARGUMENT describing where the text is malformed, or a missing or
// repeated index.
absl::StatusOr<std::vector<std::string>> ParseNames(absl::string_view text);

// "[h, w]" for a square size.
std::string FormatImgsz(int imgsz);

// Parses "[h, w]", "(h, w)" or "s" into a square size. Errors: INVALID_ARGUMENT
// for malformed text, non-positive sizes or h != w.
absl::StatusOr<int> ParseImgsz(absl::string_view text);

// The names used when a model carries none: "class0", "class1", ...
std::vector<std::string> DefaultNames(int num_classes);

}  // namespace yolohook::exporter

#endif  // YOLOHOOK_SERVER_ENGINE_EXPORT_ONNX_METADATA_H_
