// Test helpers: a temporary directory removed at the end of the test, and a
// small generated dataset.
#ifndef YOLOHOOK_TESTS_TESTING_TEMP_DIR_H_
#define YOLOHOOK_TESTS_TESTING_TEMP_DIR_H_

#include <cstdlib>
#include <filesystem>
#include <string>

namespace yolohook::testing {

// A fresh directory under $TMPDIR; removed with its contents on destruction.
class TempDir {
 public:
  TempDir() {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "yolohook_test_XXXXXX")
            .string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace yolohook::testing

#endif  // YOLOHOOK_TESTS_TESTING_TEMP_DIR_H_
