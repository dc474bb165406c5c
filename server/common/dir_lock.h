// An exclusive lock on a directory, held for the life of a process: one
// yolohookd per data directory (two servers on one SQLite store would each
// take the other's running jobs for interrupted ones and run them again).
#ifndef YOLOHOOK_SERVER_COMMON_DIR_LOCK_H_
#define YOLOHOOK_SERVER_COMMON_DIR_LOCK_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace yolohook {

// Holds flock(LOCK_EX) on <dir>/yolohookd.lock, which names the holder's pid.
// The kernel releases the lock when the process ends, however it ends (a
// SIGKILL leaves no stale lock). Thread-compatible.
class DirectoryLock {
 public:
  // Locks `dir` (which must exist). Errors: FAILED_PRECONDITION naming the
  // directory and the pid of the process holding it, or saying the directory
  // is read-only; INTERNAL for other I/O errors.
  static absl::StatusOr<std::unique_ptr<DirectoryLock>> Acquire(
      const std::string& dir);
  ~DirectoryLock();
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;

  const std::string& path() const { return path_; }

 private:
  DirectoryLock(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}

  const std::string path_;
  const int fd_;
};

}  // namespace yolohook

#endif  // YOLOHOOK_SERVER_COMMON_DIR_LOCK_H_
