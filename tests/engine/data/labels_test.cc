#include "server/engine/data/labels.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/engine/data/dataset_yaml.h"
#include "tests/engine/data/test_util.h"

namespace yolohook::data {
namespace {

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

MATCHER_P5(IsLabel, cls, xc, yc, w, h, "") {
  return arg.cls == cls && std::abs(arg.xc - xc) < 1e-5 &&
         std::abs(arg.yc - yc) < 1e-5 && std::abs(arg.w - w) < 1e-5 &&
         std::abs(arg.h - h) < 1e-5;
}

class VerifyDatasetTest : public ::testing::Test {
 protected:
  void SetUp() override { root_ = testing::MakeTempDir(); }

  // Writes images/<name>.png (40x30) and, unless `labels` is null, its label
  // file; returns the image path.
  std::string AddImage(const std::string& name, const char* labels) {
    const std::string image = absl::StrCat(root_, "/images/", name, ".png");
    testing::WriteImage(image, testing::Solid(40, 30));
    if (labels != nullptr) testing::WriteText(LabelPathFor(image), labels);
    return image;
  }

  absl::StatusOr<std::vector<ImageRecord>> Verify(
      const std::vector<std::string>& images, int threads = 2) {
    return VerifyDataset(images, /*nc=*/3, threads, &report_);
  }

  std::string root_;
  VerifyReport report_;
};

TEST_F(VerifyDatasetTest, GoodLabels) {
  const std::string a =
      AddImage("a", "0 0.5 0.5 0.2 0.4\n2 0.25 0.75 0.1 0.1\n");
  const std::string b = AddImage("b", "1 0.1 0.2 0.2 0.4\n\n");
  absl::StatusOr<std::vector<ImageRecord>> records = Verify({a, b});
  ASSERT_TRUE(records.ok()) << records.status();
  ASSERT_THAT(*records, SizeIs(2));
  EXPECT_EQ((*records)[0].image, a);
  EXPECT_EQ((*records)[0].width, 40);
  EXPECT_EQ((*records)[0].height, 30);
  EXPECT_THAT((*records)[0].labels,
              ElementsAre(IsLabel(0, 0.5f, 0.5f, 0.2f, 0.4f),
                          IsLabel(2, 0.25f, 0.75f, 0.1f, 0.1f)));
  EXPECT_THAT((*records)[1].labels,
              ElementsAre(IsLabel(1, 0.1f, 0.2f, 0.2f, 0.4f)));
  EXPECT_EQ(report_.found, 2);
  EXPECT_EQ(report_.missing + report_.empty + report_.corrupt, 0);
  EXPECT_THAT(report_.warnings, IsEmpty());
}

TEST_F(VerifyDatasetTest, MissingLabelFileIsABackground) {
  const std::string a = AddImage("a", nullptr);
  absl::StatusOr<std::vector<ImageRecord>> records = Verify({a});
  ASSERT_TRUE(records.ok()) << records.status();
  ASSERT_THAT(*records, SizeIs(1));
  EXPECT_THAT((*records)[0].labels, IsEmpty());
  EXPECT_EQ(report_.missing, 1);
  EXPECT_EQ(report_.found, 0);
  // Backgrounds are images too: one image, which is a background.
  EXPECT_EQ(report_.Summary(), "1 images, 1 backgrounds, 0 corrupt");
}

TEST_F(VerifyDatasetTest, EmptyLabelFileIsABackground) {
  const std::string a = AddImage("a", " \n\n");
  absl::StatusOr<std::vector<ImageRecord>> records = Verify({a});
  ASSERT_TRUE(records.ok()) << records.status();
  EXPECT_THAT((*records)[0].labels, IsEmpty());
  EXPECT_EQ(report_.empty, 1);
  EXPECT_EQ(report_.missing, 0);
}

// Each corrupt label file skips its image with a warning naming the label
// file, the line and the reason.
TEST_F(VerifyDatasetTest, CorruptLabelsAreSkippedWithFileAndLine) {
  struct Case {
    const char* name;
    const char* labels;
    int line;
    const char* reason;
  };
  const Case cases[] = {
      {"class_range", "0 0.5 0.5 0.2 0.2\n3 0.5 0.5 0.2 0.2\n", 2,
       "class id 3"},
      {"negative_class", "-1 0.5 0.5 0.2 0.2\n", 1, "class id -1"},
      {"fractional_class", "1.5 0.5 0.5 0.2 0.2\n", 1, "class id 1.5"},
      {"four_columns", "0 0.5 0.5 0.2\n", 1, "expected 5 columns"},
      {"six_columns", "\n0 0.5 0.5 0.2 0.2 0.9\n", 2, "expected 5 columns"},
      {"non_numeric", "0 0.5 abc 0.2 0.2\n", 1, "'abc' is not a number"},
      {"out_of_bounds", "0 0.5 0.5 0.2 0.2\n1 1.2 0.5 0.2 0.2\n", 2,
       "xc=1.2 outside [0, 1]"},
      {"negative_coordinate", "0 0.5 -0.01 0.2 0.2\n", 1, "yc=-0.01"},
      {"zero_width", "0 0.5 0.5 0 0.2\n", 1, "width and height must be > 0"},
  };
  std::vector<std::string> images = {AddImage("good", "0 0.5 0.5 0.2 0.2\n")};
  for (const Case& c : cases) images.push_back(AddImage(c.name, c.labels));
  absl::StatusOr<std::vector<ImageRecord>> records = Verify(images, 3);
  ASSERT_TRUE(records.ok()) << records.status();
  ASSERT_THAT(*records, SizeIs(1));
  EXPECT_EQ((*records)[0].image, images[0]);
  EXPECT_EQ(report_.found, 1);
  EXPECT_EQ(report_.corrupt, static_cast<int>(std::size(cases)));
  ASSERT_THAT(report_.warnings, SizeIs(std::size(cases)));
  for (size_t i = 0; i < std::size(cases); ++i) {
    SCOPED_TRACE(cases[i].name);
    const std::string label_file = LabelPathFor(images[i + 1]);
    EXPECT_THAT(
        report_.warnings[i],
        AllOf(HasSubstr("ignoring corrupt image/label"),
              HasSubstr(absl::StrCat(label_file, ":", cases[i].line, ":")),
              HasSubstr(cases[i].reason)));
  }
}

TEST_F(VerifyDatasetTest, CoordinatesWithinToleranceAreClipped) {
  const std::string a =
      AddImage("a", "0 1.0005 0.5 0.2 0.2\n1 0.9 0.5 0.4 0.2\n");
  absl::StatusOr<std::vector<ImageRecord>> records = Verify({a});
  ASSERT_TRUE(records.ok()) << records.status();
  // [0.9005, 1.1005] → [0.9005, 1] and [0.7, 1.1] → [0.7, 1].
  EXPECT_THAT((*records)[0].labels,
              ElementsAre(IsLabel(0, 0.95025f, 0.5f, 0.0995f, 0.2f),
                          IsLabel(1, 0.85f, 0.5f, 0.3f, 0.2f)));
}

TEST_F(VerifyDatasetTest, CorruptImageBytesAreSkipped) {
  const std::string good = AddImage("good", "0 0.5 0.5 0.2 0.2\n");
  const std::string bad = root_ + "/images/bad.jpg";
  testing::WriteText(bad, "\xff\xd8\xff\xe0 definitely not a jpeg");
  testing::WriteText(LabelPathFor(bad), "0 0.5 0.5 0.2 0.2\n");
  const std::string gone = root_ + "/images/gone.jpg";
  absl::StatusOr<std::vector<ImageRecord>> records = Verify({bad, good, gone});
  ASSERT_TRUE(records.ok()) << records.status();
  ASSERT_THAT(*records, SizeIs(1));
  EXPECT_EQ((*records)[0].image, good);
  EXPECT_EQ(report_.corrupt, 2);
  ASSERT_THAT(report_.warnings, SizeIs(2));
  EXPECT_THAT(report_.warnings[0],
              AllOf(HasSubstr(bad), HasSubstr("cannot decode")));
  EXPECT_THAT(report_.warnings[1],
              AllOf(HasSubstr(gone), HasSubstr("cannot read")));
}

TEST_F(VerifyDatasetTest, DuplicateRowsAreRemovedWithAWarning) {
  const std::string a =
      AddImage("a",
               "0 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n0 0.5 0.5 0.2 0.2\n"
               "0 0.50 0.5 0.2 0.20\n");
  absl::StatusOr<std::vector<ImageRecord>> records = Verify({a});
  ASSERT_TRUE(records.ok()) << records.status();
  EXPECT_THAT((*records)[0].labels,
              ElementsAre(IsLabel(0, 0.5f, 0.5f, 0.2f, 0.2f),
                          IsLabel(1, 0.3f, 0.3f, 0.1f, 0.1f)));
  EXPECT_EQ(report_.duplicates, 2);
  EXPECT_EQ(report_.found, 1);
  EXPECT_EQ(report_.corrupt, 0);
  const std::string label_file = LabelPathFor(a);
  EXPECT_THAT(report_.warnings,
              ElementsAre(HasSubstr(label_file + ":3: duplicate of line 1"),
                          HasSubstr(label_file + ":4: duplicate of line 1")));
}

TEST_F(VerifyDatasetTest, CountsAndOrderWithManyThreads) {
  std::vector<std::string> images;
  for (int i = 0; i < 24; ++i) {
    const char* labels = i % 4 == 0   ? nullptr
                         : i % 4 == 1 ? ""
                         : i % 4 == 2 ? "1 0.5 0.5 0.5 0.5\n"
                                      : "7 0.5 0.5 0.5 0.5\n";
    images.push_back(AddImage(absl::StrCat("img", i), labels));
  }
  absl::StatusOr<std::vector<ImageRecord>> records = Verify(images, 4);
  ASSERT_TRUE(records.ok()) << records.status();
  EXPECT_EQ(report_.missing, 6);
  EXPECT_EQ(report_.empty, 6);
  EXPECT_EQ(report_.found, 6);
  EXPECT_EQ(report_.corrupt, 6);
  ASSERT_THAT(*records, SizeIs(18));
  for (size_t i = 0, j = 0; i < images.size(); ++i) {
    if (i % 4 == 3) continue;
    EXPECT_EQ((*records)[j++].image, images[i]);
  }
  // Warnings come in input order too.
  ASSERT_THAT(report_.warnings, SizeIs(6));
  EXPECT_THAT(report_.warnings[0], HasSubstr("img3.txt:1:"));
  EXPECT_THAT(report_.warnings[5], HasSubstr("img23.txt:1:"));
}

TEST_F(VerifyDatasetTest, NoValidImageIsAnError) {
  const std::string a = AddImage("a", "5 0.5 0.5 0.2 0.2\n");
  absl::StatusOr<std::vector<ImageRecord>> records = Verify({a});
  EXPECT_EQ(records.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(records.status().message(),
              AllOf(HasSubstr("no valid image"), HasSubstr(LabelPathFor(a)),
                    HasSubstr("class id 5")));
  EXPECT_EQ(report_.corrupt, 1);

  EXPECT_EQ(VerifyDataset({}, 3, 1, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ParseLabelsTest, AcceptsTabsCarriageReturnsAndIntegralFloats) {
  std::vector<std::string> warnings;
  absl::StatusOr<std::vector<Label>> labels =
      ParseLabels("1.0\t0.5 0.5 0.2 0.2\r\n", 2, "x.txt", &warnings);
  ASSERT_TRUE(labels.ok()) << labels.status();
  EXPECT_THAT(*labels, ElementsAre(IsLabel(1, 0.5f, 0.5f, 0.2f, 0.2f)));
  EXPECT_THAT(warnings, IsEmpty());
  EXPECT_THAT(
      ParseLabels("0 nan 0.5 0.2 0.2", 2, "x.txt", nullptr).status().message(),
      HasSubstr("x.txt:1: column 2 'nan' is not a number"));
}

}  // namespace
}  // namespace yolohook::data
