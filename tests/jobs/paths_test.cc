#include "server/jobs/paths.h"

#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"

namespace yolohook {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

TEST(IsWithinTest, ComparesWholeComponents) {
  EXPECT_TRUE(IsWithin("/data", "/data"));
  EXPECT_TRUE(IsWithin("/data/a/b", "/data"));
  EXPECT_TRUE(IsWithin("/data/a", "/data/"));
  EXPECT_TRUE(IsWithin("/anything", "/"));
  EXPECT_FALSE(IsWithin("/data2", "/data"));
  EXPECT_FALSE(IsWithin("/data2/x", "/data"));
  EXPECT_FALSE(IsWithin("/dat", "/data"));
  EXPECT_FALSE(IsWithin("/", "/data"));
}

class PathPolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = dir_.Sub("data");
    models_ = dir_.Sub("models");
    fs::create_directories(data_ + "/sets/shapes");
    fs::create_directories(models_);
    fs::create_directories(dir_.Sub("data2"));
    fs::create_directories(dir_.Sub("outside"));
    std::ofstream(data_ + "/sets/shapes/data.yaml") << "names: [a]\n";
    std::ofstream(dir_.Sub("outside/secret.yaml")) << "names: [b]\n";
    absl::StatusOr<PathPolicy> policy = PathPolicy::Create(data_, {models_});
    ASSERT_TRUE(policy.ok()) << policy.status();
    policy_.emplace(*policy);
  }

  // The refusal of `args`, expected INVALID_ARGUMENT.
  std::string Refusal(Mode mode,
                      const std::map<std::string, std::string>& args) {
    absl::StatusOr<std::map<std::string, std::string>> out =
        policy_->ConfineArgs(mode, args);
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(out.status().message());
  }

  testing::TempDir dir_;
  std::string data_;
  std::string models_;
  std::optional<PathPolicy> policy_;
};

TEST_F(PathPolicyTest, RelativePathsStartAtTheDataDirectory) {
  auto out = policy_->ConfineArgs(
      Mode::kVal, {{"data", "sets/shapes/data.yaml"}, {"epochs", "3"}});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->at("data"), data_ + "/sets/shapes/data.yaml");
  EXPECT_EQ(out->at("epochs"), "3");
  // Paths that do not exist yet are fine inside a root.
  auto later = policy_->Resolve("model", models_ + "/new/best.pt");
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_EQ(*later, models_ + "/new/best.pt");
}

TEST_F(PathPolicyTest, DotDotEscapesAreRefused) {
  const std::string message =
      Refusal(Mode::kVal, {{"data", "../outside/secret.yaml"}});
  EXPECT_THAT(message, HasSubstr("data=../outside/secret.yaml"));
  EXPECT_THAT(message, HasSubstr(dir_.Sub("outside/secret.yaml")));
  EXPECT_THAT(message, HasSubstr(data_ + ", " + models_));
  EXPECT_THAT(message, HasSubstr("--allowed_roots"));
  // Also through a directory that does not exist.
  EXPECT_THAT(Refusal(Mode::kVal, {{"data", "nope/../../outside/x.yaml"}}),
              HasSubstr("data=nope/../../outside/x.yaml"));
}

TEST_F(PathPolicyTest, AbsolutePathsOutsideAreRefused) {
  EXPECT_THAT(Refusal(Mode::kPredict, {{"model", "/etc/passwd"}}),
              HasSubstr("model=/etc/passwd is outside"));
  EXPECT_THAT(Refusal(Mode::kTrain, {{"project", "/tmp"}}),
              HasSubstr("project=/tmp"));
  EXPECT_THAT(Refusal(Mode::kTrain, {{"data_dir", "/"}}),
              HasSubstr("data_dir=/"));
  EXPECT_THAT(Refusal(Mode::kTrain, {{"resume", "/root/last.pt"}}),
              HasSubstr("resume=/root/last.pt"));
}

TEST_F(PathPolicyTest, SiblingWithTheSamePrefixIsOutside) {
  // data2 starts with the characters of data but is not inside it.
  EXPECT_THAT(Refusal(Mode::kVal, {{"data", dir_.Sub("data2/data.yaml")}}),
              HasSubstr("is outside"));
  EXPECT_THAT(Refusal(Mode::kVal, {{"data", "../data2/data.yaml"}}),
              HasSubstr("is outside"));
}

TEST_F(PathPolicyTest, SymlinksPointingOutAreRefused) {
  fs::create_directory_symlink(dir_.Sub("outside"), data_ + "/link");
  EXPECT_THAT(Refusal(Mode::kVal, {{"data", "link/secret.yaml"}}),
              HasSubstr("resolves to " + dir_.Sub("outside/secret.yaml")));
  // A missing directory folded away by `..` does not hide the link.
  EXPECT_THAT(Refusal(Mode::kTrain, {{"project", "missing/../link/runs"}}),
              HasSubstr("project=missing/../link/runs"));
  // A link to a file outside, inside a folder given as source.
  fs::create_directories(data_ + "/images");
  std::ofstream(dir_.Sub("outside/x.jpg")) << "jpeg";
  fs::create_symlink(dir_.Sub("outside/x.jpg"), data_ + "/images/x.jpg");
  EXPECT_THAT(Refusal(Mode::kPredict, {{"source", "images"}}),
              HasSubstr("source images: file"));
  // A symlink that stays inside is fine, and resolved.
  fs::create_directory_symlink(data_ + "/sets", data_ + "/alias");
  auto inside =
      policy_->ConfineArgs(Mode::kVal, {{"data", "alias/shapes/data.yaml"}});
  ASSERT_TRUE(inside.ok()) << inside.status();
  EXPECT_EQ(inside->at("data"), data_ + "/sets/shapes/data.yaml");
}

TEST_F(PathPolicyTest, SourceListsAreCheckedFileByFile) {
  std::ofstream(data_ + "/list.txt") << dir_.Sub("outside/x.jpg") << "\n";
  std::ofstream(dir_.Sub("outside/x.jpg")) << "jpeg";
  EXPECT_THAT(Refusal(Mode::kPredict, {{"source", "list.txt"}}),
              HasSubstr(dir_.Sub("outside/x.jpg")));
  EXPECT_THAT(Refusal(Mode::kPredict, {{"source", "../outside/*.jpg"}}),
              HasSubstr("source=../outside/*.jpg"));
}

TEST_F(PathPolicyTest, RunNamesStayInsideTheProject) {
  EXPECT_THAT(Refusal(Mode::kTrain, {{"name", "../../../../escape"}}),
              HasSubstr("name=../../../../escape"));
  EXPECT_THAT(Refusal(Mode::kTrain, {{"name", "/tmp/escape"}}),
              HasSubstr("name=/tmp/escape"));
  auto plain = policy_->ConfineArgs(Mode::kTrain, {{"name", "exp"}});
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->count("project"), 0u);
  EXPECT_EQ(plain->at("name"), "exp");
  // A name that climbs but stays inside becomes project + a plain name.
  auto climbing = policy_->ConfineArgs(Mode::kTrain, {{"name", "../other"}});
  ASSERT_TRUE(climbing.ok()) << climbing.status();
  EXPECT_EQ(climbing->at("project"), data_ + "/runs");
  EXPECT_EQ(climbing->at("name"), "other");
}

TEST_F(PathPolicyTest, BuiltinNamesStay) {
  auto out = policy_->ConfineArgs(
      Mode::kTrain,
      {{"data", "shapes"}, {"model", "yolov8s.yaml"}, {"resume", "false"}});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->at("data"), "shapes");
  EXPECT_EQ(out->at("model"), "yolov8s.yaml");
  EXPECT_EQ(out->at("resume"), "false");
  auto pt = policy_->ConfineArgs(Mode::kTrain, {{"model", "yolov8n.pt"}});
  ASSERT_TRUE(pt.ok());
  EXPECT_EQ(pt->at("model"), "yolov8n.pt");
  // Outside train, a .pt is a file to open, under the data directory.
  auto val = policy_->ConfineArgs(Mode::kVal, {{"model", "yolov8n.pt"}});
  ASSERT_TRUE(val.ok());
  EXPECT_EQ(val->at("model"), data_ + "/yolov8n.pt");
  // A bad argument is still explained as MakeConfig does.
  EXPECT_THAT(Refusal(Mode::kTrain, {{"epoch", "3"}}), HasSubstr("epochs"));
}

TEST_F(PathPolicyTest, ExtraRootsAllowModelsThere) {
  auto out =
      policy_->ConfineArgs(Mode::kPredict, {{"model", models_ + "/best.pt"}});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->at("model"), models_ + "/best.pt");
  EXPECT_EQ(PathPolicy::Create(data_, {""}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace yolohook
