#include "server/common/log_sink.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace yolohook {
namespace {

// Longest record written; longer ones are cut (their size is noted).
constexpr size_t kMaxRecordBytes = 16 << 10;

// The length of the valid UTF-8 sequence at the start of `s`, or 0.
size_t Utf8Length(absl::string_view s) {
  const unsigned char c = static_cast<unsigned char>(s[0]);
  size_t n = c < 0xc2 ? 0 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : c < 0xf5 ? 4 : 0;
  if (n == 0 || n > s.size()) return 0;
  for (size_t i = 1; i < n; ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xc0) != 0x80) return 0;
  }
  return n;
}

// `text` with control characters escaped (\n, \r, \xNN); tabs and UTF-8 kept.
void AppendText(absl::string_view text, std::string* out) {
  for (char ch : text) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c == '\n') {
      *out += "\\n";
    } else if (c == '\r') {
      *out += "\\r";
    } else if ((c < 0x20 && c != '\t') || c == 0x7f) {
      absl::StrAppendFormat(out, "\\x%02x", c);
    } else {
      *out += ch;
    }
  }
}

// `text` as the inside of a JSON string; invalid UTF-8 becomes U+FFFD.
void AppendJson(absl::string_view text, std::string* out) {
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      const size_t n = Utf8Length(text.substr(i));
      if (n == 0) {
        *out += "\\ufffd";
        ++i;
      } else {
        out->append(text.data() + i, n);
        i += n;
      }
      continue;
    }
    switch (c) {
      case '"':
        *out += "\\\"";
        break;
      case '\\':
        *out += "\\\\";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\r':
        *out += "\\r";
        break;
      case '\t':
        *out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          absl::StrAppendFormat(out, "\\u%04x", c);
        } else {
          *out += static_cast<char>(c);
        }
    }
    ++i;
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<LogSink>> LogSink::Open(Options options) {
  if (options.max_bytes < 0 || options.max_files < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "log ", options.path, ": max_bytes and max_files must be >= 0"));
  }
  std::unique_ptr<LogSink> sink(new LogSink(std::move(options)));
  absl::MutexLock lock(&sink->mu_);
  if (sink->options_.path.empty()) {
    sink->file_ = stdout;
    return sink;
  }
  const std::string& path = sink->options_.path;
  sink->file_ = std::fopen(path.c_str(), "a");
  if (sink->file_ == nullptr) {
    const int error = errno;
    const std::string message = absl::StrCat(
        "log file ", path, ": cannot open: ", std::strerror(error));
    if (error == EROFS || error == EACCES) {
      return absl::FailedPreconditionError(message);
    }
    return absl::InvalidArgumentError(message);
  }
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  sink->size_ = ec ? 0 : static_cast<int64_t>(size);
  return sink;
}

LogSink::~LogSink() {
  absl::MutexLock lock(&mu_);
  if (file_ != nullptr && file_ != stdout) std::fclose(file_);
}

std::string LogSink::Format(absl::string_view record) const {
  std::string note;
  if (record.size() > kMaxRecordBytes) {
    note = absl::StrCat("... (", record.size(), " bytes)");
    record = record.substr(0, kMaxRecordBytes);
  }
  std::string out;
  out.reserve(record.size() + 64);
  if (!options_.json) {
    AppendText(record, &out);
    out += note;
    return out;
  }
  const absl::Time now = options_.now ? options_.now() : absl::Now();
  absl::StrAppend(
      &out, "{\"time\":\"",
      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", now, absl::UTCTimeZone()), "\"");
  // "[job-1a2b] text": the job id becomes a field of its own.
  if (record.size() > 2 && record[0] == '[') {
    const size_t close = record.find("] ");
    if (close != absl::string_view::npos && close < 160) {
      out += ",\"job\":\"";
      AppendJson(record.substr(1, close - 1), &out);
      out += "\"";
      record.remove_prefix(close + 2);
    }
  }
  out += ",\"msg\":\"";
  AppendJson(record, &out);
  AppendJson(note, &out);
  out += "\"}";
  return out;
}

void LogSink::Write(absl::string_view record) {
  std::string line = Format(record);
  line += '\n';
  absl::MutexLock lock(&mu_);
  if (file_ != stdout && options_.max_bytes > 0 &&
      size_ + static_cast<int64_t>(line.size()) > options_.max_bytes &&
      size_ > 0) {
    RotateLocked();
  }
  if (file_ == nullptr ||
      std::fwrite(line.data(), 1, line.size(), file_) != line.size() ||
      std::fflush(file_) != 0) {
    ++dropped_;
    if (file_ != nullptr) std::clearerr(file_);
    return;
  }
  size_ += static_cast<int64_t>(line.size());
}

int64_t LogSink::dropped() const {
  absl::MutexLock lock(&mu_);
  return dropped_;
}

void LogSink::RotateLocked() {
  const std::string& path = options_.path;
  std::fclose(file_);
  file_ = nullptr;
  std::error_code ec;
  if (options_.max_files == 0) {
    std::filesystem::remove(path, ec);
  } else {
    std::filesystem::remove(absl::StrCat(path, ".", options_.max_files), ec);
    for (int i = options_.max_files - 1; i >= 1; --i) {
      std::filesystem::rename(absl::StrCat(path, ".", i),
                              absl::StrCat(path, ".", i + 1), ec);
    }
    std::filesystem::rename(path, absl::StrCat(path, ".1"), ec);
  }
  file_ = std::fopen(path.c_str(), "a");
  size_ = 0;
}

}  // namespace yolohook
