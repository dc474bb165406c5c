// Predict sources: files, folders, globs and lists, and the errors that name
// what is wrong.
#include "server/engine/data/sources.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/testing/temp_dir.h"

namespace yolohook {
namespace {

using ::testing::HasSubstr;

void Touch(const std::string& path) { std::ofstream(path) << "x"; }

TEST(SourcesTest, KindsAreKnownByExtension) {
  EXPECT_TRUE(IsImagePath("a/b.JPG"));
  EXPECT_TRUE(IsImagePath("b.webp"));
  EXPECT_FALSE(IsImagePath("b.mp4"));
  EXPECT_TRUE(IsVideoPath("clip.MKV"));
  EXPECT_FALSE(IsVideoPath("notes.txt"));
  EXPECT_FALSE(IsImagePath("jpg"));  // a name, not an extension
}

TEST(SourcesTest, EveryKindOfSourceResolves) {
  testing::TempDir dir;
  std::filesystem::create_directories(dir.Sub("imgs"));
  Touch(dir.Sub("imgs/b.png"));
  Touch(dir.Sub("imgs/a.jpg"));
  Touch(dir.Sub("imgs/c.mp4"));
  Touch(dir.Sub("imgs/readme.md"));

  auto folder = ResolveSource(dir.Sub("imgs"));
  ASSERT_TRUE(folder.ok()) << folder.status();
  EXPECT_EQ(folder->type, "folder");
  ASSERT_EQ(folder->files.size(), 3u);  // sorted, readme.md left out
  EXPECT_EQ(folder->files[0].path, dir.Sub("imgs/a.jpg"));
  EXPECT_TRUE(folder->files[2].video);

  auto glob = ResolveSource(dir.Sub("imgs/*.jpg"));
  ASSERT_TRUE(glob.ok()) << glob.status();
  EXPECT_EQ(glob->type, "glob");
  EXPECT_EQ(glob->files.size(), 1u);

  std::ofstream(dir.Sub("list.txt")) << "# frames\nimgs/a.jpg\n\n"
                                     << dir.Sub("imgs/c.mp4") << "\n";
  auto list = ResolveSource(dir.Sub("list.txt"));
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(list->type, "list");
  ASSERT_EQ(list->files.size(), 2u);
  EXPECT_EQ(list->files[0].path, dir.path() + "/imgs/a.jpg");

  auto video = ResolveSource(dir.Sub("imgs/c.mp4"));
  ASSERT_TRUE(video.ok()) << video.status();
  EXPECT_EQ(video->type, "video");
}

TEST(SourcesTest, ErrorsNameTheSourceAndLine) {
  testing::TempDir dir;
  EXPECT_EQ(ResolveSource("").status().code(),
            absl::StatusCode::kInvalidArgument);
  auto missing = ResolveSource(dir.Sub("nope.jpg"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("nope.jpg"));
  EXPECT_EQ(ResolveSource(dir.Sub("*.png")).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(ResolveSource(dir.path()).status().code(),
            absl::StatusCode::kNotFound);  // holds no images or videos
  Touch(dir.Sub("notes.md"));
  EXPECT_EQ(ResolveSource(dir.Sub("notes.md")).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::ofstream(dir.Sub("list.txt")) << "\nmissing.jpg\n";
  auto list = ResolveSource(dir.Sub("list.txt"));
  EXPECT_EQ(list.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(list.status().message(), HasSubstr("list.txt line 2"));
}

}  // namespace
}  // namespace yolohook
