#include "server/engine/export/onnx_metadata.h"

#include <cstdint>
#include <map>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace yolohook::exporter {
namespace {

// Python's repr() of a str, limited to what class names contain: single
// quotes unless the text has a single quote and no double quote.
std::string QuoteLikePython(absl::string_view text) {
  const bool has_single = text.find('\'') != absl::string_view::npos;
  const bool has_double = text.find('"') != absl::string_view::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (char c : text) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (c == quote) out += '\\';
        out += c;
    }
  }
  out += quote;
  return out;
}

// A cursor over a Python literal.
class LiteralReader {
 public:
  explicit LiteralReader(absl::string_view text) : text_(text) {}

  void SkipSpace() {
    while (pos_ < text_.size() && absl::ascii_isspace(text_[pos_])) ++pos_;
  }
  bool AtEnd() {
    SkipSpace();
    return pos_ >= text_.size();
  }
  // Consumes `c` after optional spaces.
  bool Consume(char c) {
    SkipSpace();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  char Peek() {
    SkipSpace();
    return pos_ < text_.size() ? text_[pos_] : '\0';
  }

  absl::StatusOr<int64_t> ReadInt() {
    SkipSpace();
    const size_t start = pos_;
    if (pos_ < text_.size() && text_[pos_] == '-') ++pos_;
    while (pos_ < text_.size() && absl::ascii_isdigit(text_[pos_])) ++pos_;
    int64_t value = 0;
    if (!absl::SimpleAtoi(text_.substr(start, pos_ - start), &value)) {
      return Error("an integer");
    }
    return value;
  }

  absl::StatusOr<std::string> ReadString() {
    SkipSpace();
    if (pos_ >= text_.size() || (text_[pos_] != '\'' && text_[pos_] != '"')) {
      return Error("a quoted string");
    }
    const char quote = text_[pos_++];
    std::string out;
    while (pos_ < text_.size() && text_[pos_] != quote) {
      char c = text_[pos_++];
      if (c == '\\') {
        if (pos_ >= text_.size()) break;
        const char e = text_[pos_++];
        switch (e) {
          case 'n':
            c = '\n';
            break;
          case 't':
            c = '\t';
            break;
          case 'r':
            c = '\r';
            break;
          case '\\':
          case '\'':
          case '"':
            c = e;
            break;
          default:
            return Error("a known escape (\\\\ \\' \\\" \\n \\t \\r)");
        }
      }
      out += c;
    }
    if (pos_ >= text_.size()) return Error("a closing quote");
    ++pos_;
    return out;
  }

  absl::Status Error(absl::string_view expected) const {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected ", expected, " at offset ", pos_, " of \"", text_, "\""));
  }

 private:
  absl::string_view text_;
  size_t pos_ = 0;
};

}  // namespace

std::string FormatNames(const std::vector<std::string>& names) {
  std::string out = "{";
  for (size_t i = 0; i < names.size(); ++i) {
    absl::StrAppend(&out, i == 0 ? "" : ", ", i, ": ",
                    QuoteLikePython(names[i]));
  }
  out += "}";
  return out;
}

absl::StatusOr<std::vector<std::string>> ParseNames(absl::string_view text) {
  LiteralReader reader(text);
  std::vector<std::string> names;
  if (reader.Consume('[')) {
    if (!reader.Consume(']')) {
      do {
        auto name = reader.ReadString();
        if (!name.ok()) return name.status();
        names.push_back(*std::move(name));
      } while (reader.Consume(',') && reader.Peek() != ']');
      if (!reader.Consume(']')) return reader.Error("',' or ']'");
    }
  } else if (reader.Consume('{')) {
    std::map<int64_t, std::string> by_index;
    if (!reader.Consume('}')) {
      do {
        auto index = reader.ReadInt();
        if (!index.ok()) return index.status();
        if (!reader.Consume(':')) return reader.Error("':'");
        auto name = reader.ReadString();
        if (!name.ok()) return name.status();
        if (!by_index.emplace(*index, *std::move(name)).second) {
          return absl::InvalidArgumentError(
              absl::StrCat("class index ", *index, " appears twice in names \"",
                           text, "\""));
        }
      } while (reader.Consume(',') && reader.Peek() != '}');
      if (!reader.Consume('}')) return reader.Error("',' or '}'");
    }
    int64_t expected = 0;
    for (auto& [index, name] : by_index) {
      if (index != expected) {
        return absl::InvalidArgumentError(absl::StrCat(
            "class index ", expected, " is missing from names \"", text, "\""));
      }
      names.push_back(std::move(name));
      ++expected;
    }
  } else {
    return reader.Error("'{' or '['");
  }
  if (!reader.AtEnd()) return reader.Error("the end");
  return names;
}

std::string FormatImgsz(int imgsz) {
  return absl::StrCat("[", imgsz, ", ", imgsz, "]");
}

absl::StatusOr<int> ParseImgsz(absl::string_view text) {
  absl::string_view body = absl::StripAsciiWhitespace(text);
  const bool bracketed =
      (absl::ConsumePrefix(&body, "[") && absl::ConsumeSuffix(&body, "]")) ||
      (absl::ConsumePrefix(&body, "(") && absl::ConsumeSuffix(&body, ")"));
  std::vector<int> sizes;
  for (absl::string_view part : absl::StrSplit(body, ',')) {
    part = absl::StripAsciiWhitespace(part);
    if (part.empty() && bracketed && !sizes.empty()) continue;  // "(640,)"
    int size = 0;
    if (!absl::SimpleAtoi(part, &size) || size <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "imgsz \"", text, "\" is not a positive size or [h, w]"));
    }
    sizes.push_back(size);
  }
  if (sizes.size() > 2 || (sizes.size() == 2 && sizes[0] != sizes[1])) {
    return absl::InvalidArgumentError(
        absl::StrCat("imgsz \"", text, "\" is not a square size"));
  }
  return sizes[0];
}

std::vector<std::string> DefaultNames(int num_classes) {
  std::vector<std::string> names;
  for (int i = 0; i < num_classes; ++i)
    names.push_back(absl::StrCat("class", i));
  return names;
}

}  // namespace yolohook::exporter
