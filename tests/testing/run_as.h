// Runs a check as an unprivileged user, for tests of permission errors that
// root (which CI runs as) would never see.
#ifndef YOLOHOOK_TESTS_TESTING_RUN_AS_H_
#define YOLOHOOK_TESTS_TESTING_RUN_AS_H_

#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <string>

namespace yolohook::testing {

// Runs `check` in a child process and returns the string it returned
// ("child failed: ..." when it could not run); with `as_nobody`, as user and
// group nobody (65534) when the test runs as root. The child only runs
// `check` and exits, so the parent's threads do not matter.
inline std::string RunInChild(const std::function<std::string()>& check,
                              bool as_nobody = false) {
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) return "child failed: pipe";
  const pid_t pid = ::fork();
  if (pid < 0) return "child failed: fork";
  if (pid == 0) {
    ::close(pipe_fds[0]);
    if (as_nobody && ::geteuid() == 0 &&
        (::setgid(65534) != 0 || ::setuid(65534) != 0)) {
      _exit(2);
    }
    const std::string out = check();
    const ssize_t written = ::write(pipe_fds[1], out.data(), out.size());
    _exit(written == static_cast<ssize_t>(out.size()) ? 0 : 3);
  }
  ::close(pipe_fds[1]);
  std::string out;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(pipe_fds[0], buffer, sizeof(buffer))) > 0)
    out.append(buffer, static_cast<size_t>(n));
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return "child failed: exit " + std::to_string(WEXITSTATUS(status)) + " " +
           out;
  }
  return out;
}

// RunInChild as nobody.
inline std::string RunAsNobody(const std::function<std::string()>& check) {
  return RunInChild(check, /*as_nobody=*/true);
}

}  // namespace yolohook::testing

#endif  // YOLOHOOK_TESTS_TESTING_RUN_AS_H_
