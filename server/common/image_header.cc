#include "server/common/image_header.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace yolohook {
namespace {

uint32_t Byte(absl::string_view b, size_t i) {
  return static_cast<uint8_t>(b[i]);
}
uint32_t Be16(absl::string_view b, size_t i) {
  return Byte(b, i) << 8 | Byte(b, i + 1);
}
uint32_t Be32(absl::string_view b, size_t i) {
  return Be16(b, i) << 16 | Be16(b, i + 2);
}
uint32_t Le16(absl::string_view b, size_t i) {
  return Byte(b, i) | Byte(b, i + 1) << 8;
}
uint32_t Le24(absl::string_view b, size_t i) {
  return Le16(b, i) | Byte(b, i + 2) << 16;
}
uint32_t Le32(absl::string_view b, size_t i) {
  return Le16(b, i) | Le16(b, i + 2) << 16;
}

std::optional<ImageSize> Png(absl::string_view b) {
  // Signature, then the IHDR chunk: length, "IHDR", width, height.
  if (b.size() < 24 || b.substr(12, 4) != "IHDR") return std::nullopt;
  return ImageSize{Be32(b, 16), Be32(b, 20)};
}

std::optional<ImageSize> Jpeg(absl::string_view b) {
  // Walks the marker segments up to the first start-of-frame.
  size_t i = 2;
  while (i + 4 <= b.size()) {
    if (Byte(b, i) != 0xFF) return std::nullopt;
    const uint32_t marker = Byte(b, i + 1);
    if (marker == 0xFF) {  // fill byte
      ++i;
      continue;
    }
    if (marker == 0xD8 || marker == 0x01 ||
        (marker >= 0xD0 && marker <= 0xD7)) {
      i += 2;  // markers without a length
      continue;
    }
    const uint32_t length = Be16(b, i + 2);
    const bool sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 &&
                     marker != 0xC8 && marker != 0xCC;
    if (sof) {
      if (i + 9 > b.size()) return std::nullopt;
      return ImageSize{Be16(b, i + 7), Be16(b, i + 5)};
    }
    if (marker == 0xD9 || marker == 0xDA || length < 2) return std::nullopt;
    i += 2 + length;
  }
  return std::nullopt;
}

std::optional<ImageSize> Bmp(absl::string_view b) {
  if (b.size() < 26) return std::nullopt;
  const uint32_t header = Le32(b, 14);
  if (header == 12) return ImageSize{Le16(b, 18), Le16(b, 20)};  // OS/2
  const int32_t width = static_cast<int32_t>(Le32(b, 18));
  const int32_t height = static_cast<int32_t>(Le32(b, 22));  // < 0: top-down
  return ImageSize{std::llabs(width), std::llabs(height)};
}

std::optional<ImageSize> Gif(absl::string_view b) {
  if (b.size() < 10) return std::nullopt;
  return ImageSize{Le16(b, 6), Le16(b, 8)};
}

std::optional<ImageSize> Webp(absl::string_view b) {
  if (b.size() < 30) return std::nullopt;
  const absl::string_view chunk = b.substr(12, 4);
  if (chunk == "VP8 ") {  // lossy: the key frame's 14-bit sizes
    return ImageSize{Le16(b, 26) & 0x3FFF, Le16(b, 28) & 0x3FFF};
  }
  if (chunk == "VP8L") {  // lossless: 14-bit sizes minus one, packed
    const uint32_t bits = Le32(b, 21);
    return ImageSize{(bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1};
  }
  if (chunk == "VP8X") {  // extended: 24-bit sizes minus one
    return ImageSize{Le24(b, 24) + 1, Le24(b, 27) + 1};
  }
  return std::nullopt;
}

}  // namespace

std::optional<ImageSize> ReadImageSize(absl::string_view b) {
  if (b.size() >= 8 && b.substr(0, 8) == "\x89PNG\r\n\x1a\n") return Png(b);
  if (b.size() >= 3 && b.substr(0, 3) == "\xFF\xD8\xFF") return Jpeg(b);
  if (b.size() >= 2 && b.substr(0, 2) == "BM") return Bmp(b);
  if (b.size() >= 6 &&
      (b.substr(0, 6) == "GIF87a" || b.substr(0, 6) == "GIF89a"))
    return Gif(b);
  if (b.size() >= 12 && b.substr(0, 4) == "RIFF" && b.substr(8, 4) == "WEBP")
    return Webp(b);
  return std::nullopt;
}

absl::Status CheckImageSize(absl::string_view what, absl::string_view bytes,
                            int64_t max_pixels) {
  if (max_pixels <= 0) return absl::OkStatus();
  const std::optional<ImageSize> size = ReadImageSize(bytes);
  if (!size) return absl::OkStatus();
  const int64_t pixels = size->width * size->height;
  if (pixels <= max_pixels) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(what, ": ", size->width, "x", size->height, " pixels (",
                   pixels, ") is more than the limit of ", max_pixels,
                   " pixels per image (yolohookd --max_image_pixels)"));
}

}  // namespace yolohook
