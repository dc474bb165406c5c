#include "server/common/dir_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace yolohook {

absl::StatusOr<std::unique_ptr<DirectoryLock>> DirectoryLock::Acquire(
    const std::string& dir) {
  const std::string path = absl::StrCat(dir, "/yolohookd.lock");
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int error = errno;
    if (error == EROFS || error == EACCES) {
      return absl::FailedPreconditionError(
          absl::StrCat("data directory ", dir, " is read-only (cannot create ",
                       path, ": ", std::strerror(error),
                       "); yolohookd needs to write its job store "
                       "and runs there: give a writable --data_dir"));
    }
    return absl::InternalError(
        absl::StrCat("cannot open ", path, ": ", std::strerror(error)));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    char buffer[32] = {0};
    const ssize_t n = ::pread(fd, buffer, sizeof(buffer) - 1, 0);
    ::close(fd);
    if (error == EWOULDBLOCK) {
      const std::string pid =
          n > 0 ? std::string(absl::StripAsciiWhitespace(buffer)) : "unknown";
      return absl::FailedPreconditionError(absl::StrCat(
          "data directory ", dir, " is in use by another yolohookd (pid ", pid,
          ", holding ", path,
          "): one server per data directory; stop it, or give this one its "
          "own --data_dir"));
    }
    return absl::InternalError(
        absl::StrCat("cannot lock ", path, ": ", std::strerror(error)));
  }
  const std::string pid = absl::StrCat(::getpid(), "\n");
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) !=
                                     static_cast<ssize_t>(pid.size())) {
    // The lock holds even if the pid could not be noted.
  }
  return std::unique_ptr<DirectoryLock>(new DirectoryLock(path, fd));
}

DirectoryLock::~DirectoryLock() {
  ::flock(fd_, LOCK_UN);
  ::close(fd_);
}

}  // namespace yolohook
