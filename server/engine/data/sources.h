// What a predict `source=` names: image and video files, found the way
// Ultralytics finds them (a file, a folder, a glob, a .txt list of paths).
// Shared by the engine, which reads the files, and the command line, which
// uploads them to a server.
#ifndef YOLOHOOK_SERVER_ENGINE_DATA_SOURCES_H_
#define YOLOHOOK_SERVER_ENGINE_DATA_SOURCES_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace yolohook {

// One file of a source.
struct SourceFile {
  std::string path;
  // by its extension
  bool video = false;
};

// The files a source names, and what kind of source it is.
struct ResolvedSource {
  // image, video, folder, glob or list
  std::string type;
  std::vector<SourceFile> files;
};

// By extension, case-insensitively: .jpg .jpeg .png .bmp .tif .tiff .webp.
bool IsImagePath(absl::string_view path);
// By extension: .mp4 .avi .mov .mkv .webm .m4v .mpeg .mpg .wmv .gif.
bool IsVideoPath(absl::string_view path);

// Resolves `source`: a glob (any of *?[) matches files, a folder lists its
// image and video files (sorted), a .txt file lists paths one per line
// (relative to the list; blank lines and # comments skipped), anything else is
// one image or video file. Errors: INVALID_ARGUMENT for an empty source or a
// file that is neither image nor video; NOT_FOUND for a missing file, a glob
// that matches nothing, or a source with no image or video; each naming the
// source (and the list's line).
absl::StatusOr<ResolvedSource> ResolveSource(const std::string& source);

}  // namespace yolohook

#endif  // YOLOHOOK_SERVER_ENGINE_DATA_SOURCES_H_
