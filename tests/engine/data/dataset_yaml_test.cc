#include "server/engine/data/dataset_yaml.h"

#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/data/test_util.h"

namespace yolohook::data {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

class DatasetYamlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = testing::MakeTempDir();
    const cv::Mat img = testing::Solid(8, 8);
    testing::WriteImage(Path("images/train/b.png"), img);
    testing::WriteImage(Path("images/train/a.jpg"), img);
    testing::WriteImage(Path("images/train/nested/c.JPEG"), img);
    testing::WriteText(Path("images/train/readme.md"), "not an image");
    testing::WriteImage(Path("images/val/d.bmp"), img);
    std::filesystem::create_directories(Path("images/empty"));
  }

  std::string Path(const std::string& relative) const {
    return root_ + "/" + relative;
  }

  // Writes data.yaml at `relative` and loads it.
  absl::StatusOr<DatasetSpec> Load(const std::string& yaml,
                                   const std::string& relative = "data.yaml") {
    testing::WriteText(Path(relative), yaml);
    return LoadDatasetYaml(Path(relative));
  }

  std::string root_;
};

TEST_F(DatasetYamlTest, DirectoriesAndNamesAsList) {
  absl::StatusOr<DatasetSpec> spec = Load(
      "path: .\ntrain: images/train\nval: images/val\nnames: [cat, dog]\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->yaml_path, Path("data.yaml"));
  EXPECT_EQ(spec->root, root_);
  EXPECT_THAT(spec->train, ElementsAre(Path("images/train/a.jpg"),
                                       Path("images/train/b.png"),
                                       Path("images/train/nested/c.JPEG")));
  EXPECT_THAT(spec->val, ElementsAre(Path("images/val/d.bmp")));
  EXPECT_THAT(spec->test, IsEmpty());
  EXPECT_THAT(spec->names, ElementsAre("cat", "dog"));
}

TEST_F(DatasetYamlTest, NamesAsMapInAnyOrderAndMatchingNc) {
  absl::StatusOr<DatasetSpec> spec = Load(
      "train: images/train\nval: images/val\nnc: 3\n"
      "names:\n  2: bird\n  0: cat\n  1: dog\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_THAT(spec->names, ElementsAre("cat", "dog", "bird"));
}

TEST_F(DatasetYamlTest, PathIsRelativeToTheYamlDirectory) {
  absl::StatusOr<DatasetSpec> spec =
      Load("path: ../\ntrain: images/train\nval: images/val\nnames: [a]\n",
           "configs/data.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->root, root_);
  EXPECT_EQ(spec->val, std::vector<std::string>{Path("images/val/d.bmp")});
}

TEST_F(DatasetYamlTest, AbsolutePathIsKept) {
  absl::StatusOr<DatasetSpec> spec =
      Load("path: " + root_ +
               "\ntrain: images/train/a.jpg\nval: images/val\nnames: [a]\n",
           "elsewhere/deeper/data.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->root, root_);
  EXPECT_THAT(spec->train, ElementsAre(Path("images/train/a.jpg")));
}

TEST_F(DatasetYamlTest, DefaultPathIsTheYamlDirectory) {
  testing::WriteImage(Path("sub/images/x.png"), testing::Solid(8, 8));
  absl::StatusOr<DatasetSpec> spec =
      Load("train: images\nval: images\nnames: [a]\n", "sub/data.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->root, Path("sub"));
  EXPECT_THAT(spec->train, ElementsAre(Path("sub/images/x.png")));
}

TEST_F(DatasetYamlTest, SplitAsTxtListRelativeToRoot) {
  testing::WriteText(Path("lists/train.txt"),
                     "./images/train/a.jpg\n"
                     "images/train/b.png\n\n"
                     "  " +
                         Path("images/val/d.bmp") +
                         "  \n"
                         "images/train/a.jpg\n"
                         "notes.md\n");
  absl::StatusOr<DatasetSpec> spec =
      Load("train: lists/train.txt\nval: images/val\nnames: [a]\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_THAT(spec->train, ElementsAre(Path("images/train/a.jpg"),
                                       Path("images/train/b.png"),
                                       Path("images/val/d.bmp")));
}

TEST_F(DatasetYamlTest, SplitAsYamlListIsMergedAndDeduplicated) {
  testing::WriteText(Path("val.txt"), "images/val/d.bmp\n");
  absl::StatusOr<DatasetSpec> spec = Load(
      "train: [images/train/nested, images/val, val.txt]\n"
      "val: images/val\ntest: [images/train/a.jpg]\nnames: [a]\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_THAT(spec->train, ElementsAre(Path("images/train/nested/c.JPEG"),
                                       Path("images/val/d.bmp")));
  EXPECT_THAT(spec->test, ElementsAre(Path("images/train/a.jpg")));
}

TEST_F(DatasetYamlTest, MissingYamlIsNotFound) {
  absl::StatusOr<DatasetSpec> spec = LoadDatasetYaml(Path("nope.yaml"));
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(spec.status().message(), HasSubstr(Path("nope.yaml")));
}

TEST_F(DatasetYamlTest, MissingValNamesFileAndKey) {
  absl::StatusOr<DatasetSpec> spec = Load("train: images/train\nnames: [a]\n");
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(spec.status().message(), HasSubstr(Path("data.yaml")));
  EXPECT_THAT(spec.status().message(), HasSubstr("'val'"));
}

TEST_F(DatasetYamlTest, MissingNamesIsAnError) {
  absl::StatusOr<DatasetSpec> spec =
      Load("train: images/train\nval: images/val\n");
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(spec.status().message(), HasSubstr("'names'"));
}

TEST_F(DatasetYamlTest, MissingDirectoryIsNotFound) {
  absl::StatusOr<DatasetSpec> spec =
      Load("train: images/train\nval: images/missing\nnames: [a]\n");
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(spec.status().message(), HasSubstr(Path("data.yaml")));
  EXPECT_THAT(spec.status().message(), HasSubstr("'val'"));
  EXPECT_THAT(spec.status().message(), HasSubstr(Path("images/missing")));
}

TEST_F(DatasetYamlTest, BadNamesAreInvalid) {
  for (const std::string names :
       {"names: {0: a, 2: b}", "names: cat", "names: []", "names: {x: a}",
        "names: [[a, b]]", "names: [a, b]\nnc: 3"}) {
    SCOPED_TRACE(names);
    absl::StatusOr<DatasetSpec> spec =
        Load("train: images/train\nval: images/val\n" + names + "\n");
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(spec.status().message(), HasSubstr(Path("data.yaml")));
    EXPECT_THAT(spec.status().message(),
                ::testing::AnyOf(HasSubstr("'names'"), HasSubstr("'nc'")));
  }
}

TEST_F(DatasetYamlTest, EmptySplitIsInvalid) {
  absl::StatusOr<DatasetSpec> spec =
      Load("train: images/train\nval: images/empty\nnames: [a]\n");
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(spec.status().message(), HasSubstr("'val'"));
  EXPECT_THAT(spec.status().message(), HasSubstr("no images"));
}

TEST_F(DatasetYamlTest, NotYamlIsInvalid) {
  absl::StatusOr<DatasetSpec> broken =
      Load("train: [images/train\nval: {\n", "broken.yaml");
  EXPECT_EQ(broken.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(broken.status().message(), HasSubstr(Path("broken.yaml")));
  EXPECT_THAT(broken.status().message(), HasSubstr("line"));

  absl::StatusOr<DatasetSpec> prose = Load("just some words\n", "prose.yaml");
  EXPECT_EQ(prose.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(prose.status().message(), HasSubstr(Path("prose.yaml")));
}

TEST(LabelPathForTest, FollowsUltralyticsRule) {
  EXPECT_EQ(LabelPathFor("/d/images/train/a.jpg"), "/d/labels/train/a.txt");
  EXPECT_EQ(LabelPathFor("/x/images/y/images/z.png"),
            "/x/images/y/labels/z.txt");
  EXPECT_EQ(LabelPathFor("/d/v1.2/img.jpeg"), "/d/v1.2/img.txt");
  EXPECT_EQ(LabelPathFor("/d/images/noext"), "/d/labels/noext.txt");
}

TEST(ResolveDataYamlTest, ExistingFileOrNotFound) {
  const std::string dir = testing::MakeTempDir();
  testing::WriteText(dir + "/my.yaml", "names: [a]\n");
  absl::StatusOr<std::string> found = ResolveDataYaml(dir + "/my.yaml", dir);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(*found, dir + "/my.yaml");

  absl::StatusOr<std::string> missing = ResolveDataYaml(dir + "/no.yaml", dir);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr(dir + "/no.yaml"));
}

}  // namespace
}  // namespace yolohook::data
