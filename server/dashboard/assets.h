// The dashboard page's files (server/dashboard/web/), compiled into the
// binary so that yolohookd needs no files at run time.
#ifndef YOLOHOOK_SERVER_DASHBOARD_ASSETS_H_
#define YOLOHOOK_SERVER_DASHBOARD_ASSETS_H_

#include <vector>

#include "absl/strings/string_view.h"

namespace yolohook::dashboard {

// One file: its name relative to web/ ("index.html", "app.js") and bytes.
struct EmbeddedFile {
  absl::string_view name;
  absl::string_view bytes;
};

// Every file of web/, generated at build time (cmake/embed_files.cmake).
const std::vector<EmbeddedFile>& EmbeddedFiles();

// The file served at the URL path `path` ("/" and "" are index.html), or
// nullptr when there is none. Never matches a path with "..".
const EmbeddedFile* FindFile(absl::string_view path);

// The Content-Type for a file name, by its extension.
absl::string_view ContentType(absl::string_view name);

}  // namespace yolohook::dashboard

#endif  // YOLOHOOK_SERVER_DASHBOARD_ASSETS_H_
