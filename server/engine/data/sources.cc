#include "server/engine/data/sources.h"

#include <glob.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <initializer_list>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "server/common/status_macros.h"

namespace yolohook {
namespace {

namespace fs = std::filesystem;

bool HasExtension(absl::string_view path,
                  std::initializer_list<const char*> extensions) {
  const std::string ext = absl::AsciiStrToLower(
      fs::path(std::string(path.data(), path.size())).extension().string());
  for (const char* e : extensions) {
    if (ext == e) return true;
  }
  return false;
}

absl::Status AddPath(const fs::path& p, absl::string_view origin,
                     std::vector<SourceFile>& out) {
  if (!fs::exists(p)) {
    return absl::NotFoundError(
        absl::StrCat("source ", p.string(), origin, " not found"));
  }
  if (IsVideoPath(p.string())) {
    out.push_back({p.string(), true});
  } else if (IsImagePath(p.string())) {
    out.push_back({p.string(), false});
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("source ", p.string(), origin,
                     " is neither an image nor a video (by its extension)"));
  }
  return absl::OkStatus();
}

bool IsMedia(const std::string& path) {
  return IsImagePath(path) || IsVideoPath(path);
}

}  // namespace

bool IsImagePath(absl::string_view path) {
  return HasExtension(
      path, {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"});
}

bool IsVideoPath(absl::string_view path) {
  return HasExtension(path, {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v",
                             ".mpeg", ".mpg", ".wmv", ".gif"});
}

absl::StatusOr<ResolvedSource> ResolveSource(const std::string& source) {
  ResolvedSource out;
  if (source.empty()) {
    return absl::InvalidArgumentError(
        "predict needs source=: an image, a folder, a glob, a .txt list or a "
        "video file");
  }
  std::error_code ec;
  if (source.find_first_of("*?[") != std::string::npos) {
    out.type = "glob";
    glob_t g{};
    const int rc = glob(source.c_str(), 0, nullptr, &g);
    std::vector<std::string> matches(g.gl_pathv, g.gl_pathv + g.gl_pathc);
    globfree(&g);
    if (rc != 0 || matches.empty()) {
      return absl::NotFoundError(
          absl::StrCat("source=", source, " matches no files"));
    }
    for (const std::string& m : matches) {
      if (IsMedia(m)) YH_RETURN_IF_ERROR(AddPath(m, "", out.files));
    }
  } else if (fs::is_directory(source, ec)) {
    out.type = "folder";
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(source, ec)) {
      if (e.is_regular_file() && IsMedia(e.path().string()))
        files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    for (const fs::path& f : files)
      YH_RETURN_IF_ERROR(AddPath(f, "", out.files));
  } else if (absl::EndsWith(absl::AsciiStrToLower(source), ".txt")) {
    out.type = "list";
    std::ifstream in(source);
    if (!in)
      return absl::NotFoundError(absl::StrCat("source=", source, " not found"));
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
      absl::string_view entry = absl::StripAsciiWhitespace(line);
      if (entry.empty() || entry[0] == '#') continue;
      fs::path p(std::string{entry});
      if (p.is_relative()) p = fs::path(source).parent_path() / p;
      YH_RETURN_IF_ERROR(
          AddPath(p, absl::StrCat(" (", source, " line ", n, ")"), out.files));
    }
  } else {
    YH_RETURN_IF_ERROR(AddPath(source, "", out.files));
    out.type = out.files.back().video ? "video" : "image";
  }
  if (out.files.empty()) {
    return absl::NotFoundError(
        absl::StrCat("source=", source, " holds no images or videos"));
  }
  return out;
}

}  // namespace yolohook
