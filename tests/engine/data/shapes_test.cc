#include "server/engine/data/shapes.h"

#include <chrono>
#include <filesystem>
#include <iostream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/engine/data/dataset_yaml.h"
#include "server/engine/data/labels.h"
#include "tests/engine/data/test_util.h"

namespace yolohook::data {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::SizeIs;

ShapesOptions Small(uint32_t seed = 3) {
  ShapesOptions o;
  o.train_images = 40;
  o.val_images = 10;
  o.image_size = 128;
  o.seed = seed;
  return o;
}

// Relative path → bytes of every file under `dir`.
std::map<std::string, std::string> Files(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    files[fs::relative(entry.path(), dir).string()] =
        testing::ReadBytes(entry.path().string());
  }
  return files;
}

TEST(GenerateShapesTest, DeterministicAcrossDirectories) {
  const std::string root = testing::MakeTempDir();
  ASSERT_TRUE(GenerateShapes(root + "/one", Small()).ok());
  ASSERT_TRUE(GenerateShapes(root + "/two/", Small()).ok());
  const auto one = Files(root + "/one");
  const auto two = Files(root + "/two");
  EXPECT_THAT(one, SizeIs(2 * 50 + 1));
  EXPECT_TRUE(one == two);
  EXPECT_EQ(one.count("images/train/00039.jpg"), 1u);
  EXPECT_EQ(one.count("labels/val/00009.txt"), 1u);

  ASSERT_TRUE(GenerateShapes(root + "/three", Small(4)).ok());
  EXPECT_NE(testing::ReadBytes(root + "/one/images/train/00000.jpg"),
            testing::ReadBytes(root + "/three/images/train/00000.jpg"));
  // Nothing is left beside the datasets.
  std::set<std::string> entries;
  for (const auto& e : fs::directory_iterator(root)) {
    entries.insert(e.path().filename().string());
  }
  EXPECT_EQ(entries, (std::set<std::string>{"one", "two", "three"}));
}

TEST(GenerateShapesTest, LoadsAndVerifiesAsARealDataset) {
  const std::string dir = testing::MakeTempDir() + "/shapes";
  ASSERT_TRUE(GenerateShapes(dir, Small()).ok());
  absl::StatusOr<DatasetSpec> spec = LoadDatasetYaml(dir + "/data.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_THAT(spec->names, ElementsAreArray(ShapesClassNames()));
  EXPECT_THAT(spec->names, SizeIs(6));
  EXPECT_THAT(spec->train, SizeIs(40));
  EXPECT_THAT(spec->val, SizeIs(10));

  VerifyReport report;
  absl::StatusOr<std::vector<ImageRecord>> records =
      VerifyDataset(spec->train, 6, 2, &report);
  ASSERT_TRUE(records.ok()) << records.status();
  EXPECT_EQ(report.corrupt, 0);
  EXPECT_EQ(report.missing, 0);
  EXPECT_EQ(report.duplicates, 0);
  EXPECT_THAT(report.warnings, ::testing::IsEmpty());
  EXPECT_EQ(report.found + report.empty, 40);
  EXPECT_GE(report.found, 35);

  std::set<int> classes;
  int objects = 0;
  for (const ImageRecord& r : *records) {
    EXPECT_GE(r.width, 102);
    EXPECT_LE(r.width, 154);
    EXPECT_GE(r.height, 102);
    EXPECT_LE(r.height, 154);
    EXPECT_LE(r.labels.size(), 6u);
    for (const Label& l : r.labels) {
      classes.insert(l.cls);
      ++objects;
      EXPECT_GE(l.xc - l.w / 2, -1e-6);
      EXPECT_LE(l.xc + l.w / 2, 1 + 1e-6);
      EXPECT_GE(l.yc - l.h / 2, -1e-6);
      EXPECT_LE(l.yc + l.h / 2, 1 + 1e-6);
      // Shapes span about 5% to 45% of the short side (rotation can add
      // to the box).
      const double side = std::max(l.w * r.width, l.h * r.height);
      EXPECT_GE(side, 0.03 * std::min(r.width, r.height));
      EXPECT_LE(side, 0.7 * std::max(r.width, r.height));
    }
  }
  EXPECT_EQ(classes, (std::set<int>{0, 1, 2, 3, 4, 5}));
  EXPECT_GE(objects, 40 * 2);
}

TEST(GenerateShapesTest, IdempotentOnceDataYamlExists) {
  const std::string dir = testing::MakeTempDir() + "/shapes";
  ASSERT_TRUE(GenerateShapes(dir, Small()).ok());
  fs::remove(dir + "/images/train/00000.jpg");
  ASSERT_TRUE(GenerateShapes(dir, Small(9)).ok());
  EXPECT_FALSE(fs::exists(dir + "/images/train/00000.jpg"));
}

TEST(GenerateShapesTest, ConcurrentCallersBothSucceed) {
  const std::string root = testing::MakeTempDir();
  absl::Status a, b;
  std::thread t1([&] { a = GenerateShapes(root + "/shapes", Small()); });
  std::thread t2([&] { b = GenerateShapes(root + "/shapes", Small()); });
  t1.join();
  t2.join();
  EXPECT_TRUE(a.ok()) << a;
  EXPECT_TRUE(b.ok()) << b;
  EXPECT_THAT(Files(root + "/shapes"), SizeIs(2 * 50 + 1));
  int entries = 0;
  for (const auto& e : fs::directory_iterator(root)) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1);
}

TEST(GenerateShapesTest, RejectsBadOptionsAndForeignDirectories) {
  const std::string root = testing::MakeTempDir();
  ShapesOptions bad = Small();
  bad.val_images = 0;
  EXPECT_EQ(GenerateShapes(root + "/x", bad).code(),
            absl::StatusCode::kInvalidArgument);
  testing::WriteText(root + "/busy/notes.txt", "mine");
  const absl::Status busy = GenerateShapes(root + "/busy", Small());
  EXPECT_EQ(busy.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(busy.message(), HasSubstr(root + "/busy"));
}

TEST(ResolveDataYamlTest, ShapesGeneratesTheDefaultDatasetOnce) {
  const std::string root = testing::MakeTempDir();
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::string> yaml = ResolveDataYaml("shapes", root);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  ASSERT_TRUE(yaml.ok()) << yaml.status();
  std::cout << "default shapes dataset generated in " << seconds << " s\n";
  EXPECT_EQ(*yaml, root + "/datasets/shapes/data.yaml");
  absl::StatusOr<DatasetSpec> spec = LoadDatasetYaml(*yaml);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_THAT(spec->train, SizeIs(512));
  EXPECT_THAT(spec->val, SizeIs(128));
  absl::StatusOr<std::string> again = ResolveDataYaml("shapes", root);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *yaml);
}

}  // namespace
}  // namespace yolohook::data
