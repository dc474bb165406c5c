// An encoded image's width and height, read from its header without decoding
// it, so that the server can refuse an oversized image before spending memory
// on its pixels.
#ifndef YOLOHOOK_SERVER_COMMON_IMAGE_HEADER_H_
#define YOLOHOOK_SERVER_COMMON_IMAGE_HEADER_H_

#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace yolohook {

struct ImageSize {
  int64_t width = 0;
  int64_t height = 0;
};

// The size a PNG, JPEG, BMP, GIF or WebP header declares; nullopt for other
// formats and for headers too short or malformed to say (the decoder then
// decides).
std::optional<ImageSize> ReadImageSize(absl::string_view bytes);

// Checks the size `bytes` declare against `max_pixels` (0: no limit). Errors:
// INVALID_ARGUMENT naming `what` (e.g. `images[3] ("a.jpg")`), the size and
// the limit with the flag that raises it. Formats ReadImageSize does not know
// pass.
absl::Status CheckImageSize(absl::string_view what, absl::string_view bytes,
                            int64_t max_pixels);

}  // namespace yolohook

#endif  // YOLOHOOK_SERVER_COMMON_IMAGE_HEADER_H_
