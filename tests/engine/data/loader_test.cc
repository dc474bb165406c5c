#include "server/engine/data/loader.h"

#include <filesystem>
#include <memory>
#include <numeric>
#include <opencv2/imgproc.hpp>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/data/test_util.h"

namespace yolohook::data {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;

class DataLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = testing::MakeTempDir();
    std::vector<ImageRecord> records;
    for (int i = 0; i < 10; ++i) {
      ImageRecord r;
      r.width = 40 + 5 * i;
      r.height = 70 - 3 * i;
      r.image = absl::StrCat(dir, "/img", i, ".png");
      cv::Mat image = testing::Solid(r.width, r.height,
                                     cv::Scalar(20 * i, 100, 200 - 15 * i));
      cv::circle(image, cv::Point(r.width / 2, r.height / 2), 8,
                 cv::Scalar(0, 255, 0), cv::FILLED);
      testing::WriteImage(r.image, image);
      r.labels.push_back(
          {i % 2, 0.5f, 0.5f, 16.0f / r.width, 16.0f / r.height});
      records.push_back(r);
    }
    records_ = records;
    dataset_ = std::make_unique<DetectionDataset>(
        records, std::vector<std::string>{"a", "b"},
        DetectionDataset::Options{32, true, false});
  }

  // All batches of one epoch as (image bytes, label values) per sample.
  std::vector<std::string> Epoch(DataLoader& loader, int epoch) {
    std::vector<std::string> out;
    loader.StartEpoch(epoch, AugmentOptions());
    while (true) {
      absl::StatusOr<std::optional<Batch>> batch = loader.Next();
      EXPECT_TRUE(batch.ok()) << batch.status();
      if (!batch.ok() || !batch->has_value()) break;
      for (const Sample& s : (*batch)->samples) {
        std::string bytes(reinterpret_cast<const char*>(s.image.data),
                          s.image.total() * s.image.elemSize());
        for (const Label& l : s.labels) {
          absl::StrAppend(&bytes, "|", l.cls, ",", l.xc, ",", l.yc, ",", l.w,
                          ",", l.h);
        }
        absl::StrAppend(&bytes, "|", s.path);
        out.push_back(std::move(bytes));
      }
    }
    return out;
  }

  std::vector<ImageRecord> records_;
  std::unique_ptr<DetectionDataset> dataset_;
};

TEST_F(DataLoaderTest, BatchCountAndSizes) {
  DataLoader::Options options;
  options.batch_size = 4;
  options.workers = 2;
  DataLoader loader(dataset_.get(), options);
  EXPECT_EQ(loader.num_batches(), 3u);
  loader.StartEpoch(0, AugmentOptions());
  std::vector<size_t> sizes;
  for (int64_t expected = 0; expected < 3; ++expected) {
    absl::StatusOr<std::optional<Batch>> batch = loader.Next();
    ASSERT_TRUE(batch.ok()) << batch.status();
    ASSERT_TRUE(batch->has_value());
    EXPECT_EQ((*batch)->index, expected);
    sizes.push_back((*batch)->samples.size());
    for (size_t k = 0; k < (*batch)->samples.size(); ++k) {
      const Sample& s = (*batch)->samples[k];
      EXPECT_EQ(s.path, records_[expected * 4 + k].image);  // no shuffle
      EXPECT_EQ(s.image.size(), cv::Size(32, 32));
    }
  }
  EXPECT_THAT(sizes, ::testing::ElementsAre(4, 4, 2));
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<std::optional<Batch>> end = loader.Next();
    ASSERT_TRUE(end.ok());
    EXPECT_FALSE(end->has_value());
  }
}

TEST_F(DataLoaderTest, SameBytesWhateverTheWorkers) {
  std::vector<std::vector<std::string>> runs;
  for (int workers : {0, 1, 3}) {
    DataLoader::Options options;
    options.batch_size = 3;
    options.workers = workers;
    options.prefetch = 2;
    options.shuffle = true;
    options.augment = true;
    options.seed = 7;
    DataLoader loader(dataset_.get(), options);
    std::vector<std::string> both = Epoch(loader, 0);
    std::vector<std::string> second = Epoch(loader, 1);
    both.insert(both.end(), second.begin(), second.end());
    runs.push_back(both);
  }
  ASSERT_THAT(runs[0], SizeIs(20));
  EXPECT_TRUE(runs[0] == runs[1]);
  EXPECT_TRUE(runs[0] == runs[2]);
  // Augmentation differs between epochs.
  EXPECT_FALSE(
      std::equal(runs[0].begin(), runs[0].begin() + 10, runs[0].begin() + 10));
}

TEST_F(DataLoaderTest, ShuffleChangesWithEpochAndSeed) {
  DataLoader::Options options;
  options.shuffle = true;
  options.workers = 0;
  DataLoader loader(dataset_.get(), options);
  loader.StartEpoch(0, AugmentOptions());
  const std::vector<size_t> epoch0 = loader.order();
  loader.StartEpoch(1, AugmentOptions());
  const std::vector<size_t> epoch1 = loader.order();
  loader.StartEpoch(0, AugmentOptions());
  EXPECT_EQ(loader.order(), epoch0);
  EXPECT_NE(epoch0, epoch1);
  std::vector<size_t> sorted = epoch1;
  std::sort(sorted.begin(), sorted.end());
  std::vector<size_t> identity(10);
  std::iota(identity.begin(), identity.end(), size_t{0});
  EXPECT_EQ(sorted, identity);

  options.seed = 1;
  DataLoader other(dataset_.get(), options);
  other.StartEpoch(0, AugmentOptions());
  EXPECT_NE(other.order(), epoch0);

  options.shuffle = false;
  DataLoader ordered(dataset_.get(), options);
  ordered.StartEpoch(3, AugmentOptions());
  EXPECT_EQ(ordered.order(), identity);
}

TEST_F(DataLoaderTest, WithoutAugmentSamplesAreLetterboxed) {
  DataLoader::Options options;
  options.batch_size = 10;
  options.workers = 1;
  options.augment = false;
  DataLoader loader(dataset_.get(), options);
  loader.StartEpoch(0, AugmentOptions());
  absl::StatusOr<std::optional<Batch>> batch = loader.Next();
  ASSERT_TRUE(batch.ok() && batch->has_value());
  for (const Sample& s : (*batch)->samples) {
    ASSERT_THAT(s.labels, SizeIs(1));
    EXPECT_NEAR(s.labels[0].xc, 0.5, 0.02);  // centred, not moved
    EXPECT_NEAR(s.labels[0].yc, 0.5, 0.02);
  }
}

TEST_F(DataLoaderTest, DeletedFileGivesAnErrorNamingIt) {
  for (int workers : {0, 2}) {
    SCOPED_TRACE(workers);
    DataLoader::Options options;
    options.batch_size = 2;
    options.workers = workers;
    DataLoader loader(dataset_.get(), options);
    std::filesystem::rename(records_[3].image, records_[3].image + ".moved");
    loader.StartEpoch(0, AugmentOptions());
    absl::StatusOr<std::optional<Batch>> first = loader.Next();
    ASSERT_TRUE(first.ok()) << first.status();
    absl::StatusOr<std::optional<Batch>> second = loader.Next();
    EXPECT_EQ(second.status().code(), absl::StatusCode::kNotFound);
    EXPECT_THAT(second.status().message(), HasSubstr(records_[3].image));
    absl::StatusOr<std::optional<Batch>> third = loader.Next();
    ASSERT_TRUE(third.ok()) << third.status();
    ASSERT_TRUE(third->has_value());
    EXPECT_EQ((*third)->index, 2);
    std::filesystem::rename(records_[3].image + ".moved", records_[3].image);
  }
}

TEST_F(DataLoaderTest, NextBeforeStartEpochFails) {
  DataLoader loader(dataset_.get(), DataLoader::Options());
  EXPECT_EQ(loader.Next().status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(DataLoaderTest, RestartingAnEpochMidwayStartsOver) {
  DataLoader::Options options;
  options.batch_size = 1;
  options.workers = 3;
  options.prefetch = 2;
  DataLoader loader(dataset_.get(), options);
  loader.StartEpoch(0, AugmentOptions());
  ASSERT_TRUE(loader.Next().ok());
  ASSERT_TRUE(loader.Next().ok());
  loader.StartEpoch(1, AugmentOptions());
  int count = 0;
  while (true) {
    absl::StatusOr<std::optional<Batch>> batch = loader.Next();
    ASSERT_TRUE(batch.ok()) << batch.status();
    if (!batch->has_value()) break;
    EXPECT_EQ((*batch)->index, count);
    ++count;
  }
  EXPECT_EQ(count, 10);
}

TEST_F(DataLoaderTest, DestructorMidEpochDoesNotHang) {
  for (int taken : {0, 1, 3}) {
    DataLoader::Options options;
    options.batch_size = 1;
    options.workers = 3;
    options.prefetch = 1;
    auto loader = std::make_unique<DataLoader>(dataset_.get(), options);
    loader->StartEpoch(0, AugmentOptions());
    for (int i = 0; i < taken; ++i) ASSERT_TRUE(loader->Next().ok());
    loader.reset();  // joins workers blocked on the prefetch bound
  }
  DataLoader never_started(dataset_.get(), DataLoader::Options());
}

}  // namespace
}  // namespace yolohook::data
