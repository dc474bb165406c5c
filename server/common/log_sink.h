// Where yolohookd's log lines go: standard output, or a file rotated by size so
// that a server running for months keeps a bounded log; plain text or one JSON
// object per line.
#ifndef YOLOHOOK_SERVER_COMMON_LOG_SINK_H_
#define YOLOHOOK_SERVER_COMMON_LOG_SINK_H_

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace yolohook {

// Writes log records, one line each. A record's control characters
// (newlines among them) are escaped, so that no text inside a record (a
// client's string, say) can start a line of its own. Thread-safe: records of
// concurrent writers never interleave.
class LogSink {
 public:
  struct Options {
    // The file to append to ("" = standard output, never rotated).
    std::string path;
    // The file is rotated when a record would take it past this size
    // (bytes; 0 = never): path becomes path.1, path.1 becomes path.2, ...
    int64_t max_bytes = 64 << 20;
    // Rotated files kept besides the current one (path.1 ... path.N); older
    // ones are deleted. At most (max_files + 1) * max_bytes on disk.
    int max_files = 3;
    // One JSON object per line: {"time": ..., "job": ..., "msg": ...}, with
    // "job" when the record starts with "[<job id>] ".
    bool json = false;
    // The clock for JSON timestamps (tests inject one). Null: absl::Now.
    std::function<absl::Time()> now;
  };

  // Opens (creating or appending to) options.path. Errors naming the path:
  // INVALID_ARGUMENT for max_bytes < 0 or max_files < 0; the file's open
  // error (FAILED_PRECONDITION when the directory is read-only).
  static absl::StatusOr<std::unique_ptr<LogSink>> Open(Options options);
  ~LogSink();
  LogSink(const LogSink&) = delete;
  LogSink& operator=(const LogSink&) = delete;

  // Writes one record (a trailing newline is added; one inside is escaped).
  // A write that fails (disk full) is dropped and counted.
  void Write(absl::string_view record) ABSL_LOCKS_EXCLUDED(mu_);

  // Records that could not be written.
  int64_t dropped() const ABSL_LOCKS_EXCLUDED(mu_);

  // The record as Write puts it in the log, without the newline.
  std::string Format(absl::string_view record) const;

 private:
  explicit LogSink(Options options) : options_(std::move(options)) {}
  void RotateLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  mutable absl::Mutex mu_;
  std::FILE* file_ ABSL_GUARDED_BY(mu_) = nullptr;  // stdout when path is ""
  int64_t size_ ABSL_GUARDED_BY(mu_) = 0;           // bytes in the file
  int64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace yolohook

#endif  // YOLOHOOK_SERVER_COMMON_LOG_SINK_H_
