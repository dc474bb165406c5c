#include "server/common/dir_lock.h"

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/run_as.h"
#include "tests/testing/temp_dir.h"

namespace yolohook {
namespace {

using ::testing::HasSubstr;

TEST(DirectoryLockTest, ASecondHolderIsRefusedNamingTheDirectoryAndPid) {
  testing::TempDir dir;
  absl::StatusOr<std::unique_ptr<DirectoryLock>> first =
      DirectoryLock::Acquire(dir.path());
  ASSERT_TRUE(first.ok()) << first.status();
  // Another process: flock conflicts across processes (and open files).
  const std::string message = testing::RunInChild([&dir] {
    absl::StatusOr<std::unique_ptr<DirectoryLock>> second =
        DirectoryLock::Acquire(dir.path());
    return std::string(second.status().message());
  });
  EXPECT_THAT(message, HasSubstr(dir.path()));
  EXPECT_THAT(message, HasSubstr(absl::StrCat("pid ", ::getpid())));
  EXPECT_THAT(message, HasSubstr("one server per data directory"));
  // Released with the holder: the next one gets it.
  first->reset();
  EXPECT_TRUE(DirectoryLock::Acquire(dir.path()).ok());
}

TEST(DirectoryLockTest, AKilledHolderLeavesNoStaleLock) {
  testing::TempDir dir;
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto lock = DirectoryLock::Acquire(dir.path());
    ::pause();
    _exit(0);
  }
  // Wait until the child holds it, then SIGKILL it.
  for (int i = 0; i < 500; ++i) {
    if (!DirectoryLock::Acquire(dir.path()).ok()) break;
    ::usleep(10000);
  }
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  EXPECT_TRUE(DirectoryLock::Acquire(dir.path()).ok());
}

TEST(DirectoryLockTest, AReadOnlyDirectoryIsNamedAsSuch) {
  testing::TempDir dir;
  std::filesystem::permissions(dir.path(), std::filesystem::perms::all);
  const std::string ro = dir.Sub("ro");
  std::filesystem::create_directories(ro);
  std::filesystem::permissions(ro, std::filesystem::perms::all &
                                       ~std::filesystem::perms::owner_write &
                                       ~std::filesystem::perms::group_write &
                                       ~std::filesystem::perms::others_write);
  const std::string message = testing::RunAsNobody([&ro] {
    return std::string(DirectoryLock::Acquire(ro).status().message());
  });
  EXPECT_THAT(message,
              HasSubstr(absl::StrCat("data directory ", ro, " is read-only")));
}

}  // namespace
}  // namespace yolohook
