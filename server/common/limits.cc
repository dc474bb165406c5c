#include "server/common/limits.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace yolohook {

std::string Escaped(absl::string_view text, size_t max_bytes) {
  std::string out;
  out.reserve(std::min(text.size(), max_bytes) + 8);
  size_t used = 0;
  for (; used < text.size() && out.size() < max_bytes; ++used) {
    const unsigned char c = static_cast<unsigned char>(text[used]);
    switch (c) {
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      default:
        if (c < 0x20 || c >= 0x7f) {
          absl::StrAppendFormat(&out, "\\x%02x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  if (used < text.size()) {
    absl::StrAppend(&out, "... (", text.size(), " bytes)");
  }
  return out;
}

std::string Quoted(absl::string_view text, size_t max_bytes) {
  return absl::StrCat("\"", Escaped(text, max_bytes), "\"");
}

absl::Status CheckLength(absl::string_view field, absl::string_view value,
                         size_t max_bytes) {
  if (value.size() <= max_bytes) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": ", value.size(), " bytes (", Quoted(value),
                   "), more than the limit of ", max_bytes));
}

absl::Status CheckCount(absl::string_view field, size_t count,
                        size_t max_count) {
  if (count <= max_count) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      field, ": ", count, " entries, more than the limit of ", max_count));
}

absl::Status CheckStringMap(absl::string_view field,
                            const std::map<std::string, std::string>& map,
                            size_t max_entries, size_t max_key,
                            size_t max_value) {
  if (absl::Status count = CheckCount(field, map.size(), max_entries);
      !count.ok()) {
    return count;
  }
  for (const auto& [key, value] : map) {
    if (key.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": an empty key"));
    }
    if (absl::Status s = CheckLength(absl::StrCat(field, " key"), key, max_key);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = CheckLength(absl::StrCat(field, "[", Quoted(key), "]"),
                                     value, max_value);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status CheckLabels(absl::string_view field,
                         const std::map<std::string, std::string>& labels) {
  return CheckStringMap(field, labels, kMaxLabels, kMaxLabelKeyBytes,
                        kMaxLabelValueBytes);
}

absl::Status CheckArgs(absl::string_view field,
                       const std::map<std::string, std::string>& args) {
  return CheckStringMap(field, args, kMaxArgs, kMaxArgKeyBytes,
                        kMaxArgValueBytes);
}

}  // namespace yolohook
