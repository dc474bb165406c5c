#include "server/dashboard/assets.h"

#include "absl/strings/match.h"
#include "absl/strings/strip.h"

namespace yolohook::dashboard {

const EmbeddedFile* FindFile(absl::string_view path) {
  absl::ConsumePrefix(&path, "/");
  if (path.empty()) path = "index.html";
  if (absl::StrContains(path, "..")) return nullptr;
  for (const EmbeddedFile& file : EmbeddedFiles()) {
    if (file.name == path) return &file;
  }
  return nullptr;
}

absl::string_view ContentType(absl::string_view name) {
  if (absl::EndsWith(name, ".html")) return "text/html; charset=utf-8";
  if (absl::EndsWith(name, ".js")) return "text/javascript; charset=utf-8";
  if (absl::EndsWith(name, ".css")) return "text/css; charset=utf-8";
  if (absl::EndsWith(name, ".svg")) return "image/svg+xml";
  if (absl::EndsWith(name, ".png")) return "image/png";
  return "application/octet-stream";
}

}  // namespace yolohook::dashboard
