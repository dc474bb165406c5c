#include "server/jobs/engine_runner.h"

#include <atomic>
#include <filesystem>
#include <map>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/callbacks/callbacks.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/tiny_shapes.h"

namespace yolohook::jobs {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Key;
using ::testing::SizeIs;
using ::testing::StartsWith;

std::set<std::string> Kinds(const JobRecord& job) {
  std::set<std::string> kinds;
  for (const Artifact& artifact : job.artifacts) {
    EXPECT_TRUE(std::filesystem::is_regular_file(artifact.path))
        << artifact.path;
    kinds.insert(artifact.kind);
  }
  return kinds;
}

class EngineRunnerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new yolohook::testing::TempDir();
    ASSERT_TRUE(yolohook::testing::MakeTinyShapes(dir_->Sub("shapes")).ok());
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }

  static JobRecord Job(Mode mode, std::map<std::string, std::string> args) {
    args.emplace("imgsz", "64");
    args.emplace("threads", "2");
    args.emplace("workers", "1");
    args.emplace("verbose", "false");
    JobRecord job;
    job.id = "job-test";
    job.mode = mode;
    job.args = std::move(args);
    return job;
  }

  static yolohook::testing::TempDir* dir_;
};

yolohook::testing::TempDir* EngineRunnerTest::dir_ = nullptr;

TEST_F(EngineRunnerTest, TrainExportAndPredictFillTheRecord) {
  EngineRunner runner({dir_->Sub("data")});

  // Train one tiny epoch; runs land under the runner's data_dir.
  JobRecord train = Job(Mode::kTrain, {{"data", dir_->Sub("shapes/data.yaml")},
                                       {"epochs", "1"},
                                       {"batch", "4"},
                                       {"nbs", "4"},
                                       {"warmup_epochs", "0"}});
  Callbacks callbacks;
  std::set<std::string> events;
  callbacks.AddForAll(
      [&events](EventContext& ctx) { events.emplace(EventName(ctx.event)); });
  engine::RunOptions run;
  run.callbacks = &callbacks;
  run.log = [](absl::string_view) {};
  ASSERT_TRUE(runner.Run(train, run).ok());
  EXPECT_THAT(train.save_dir, StartsWith(dir_->Sub("data/runs/detect/train")));
  EXPECT_THAT(train.metrics, Contains(Key("metrics/mAP50-95(B)")));
  const std::set<std::string> kinds = Kinds(train);
  EXPECT_EQ(kinds, (std::set<std::string>{"weights_best", "weights_last",
                                          "results_csv", "results_png"}));
  EXPECT_THAT(events, Contains("on_train_end"));
  const std::string best = train.save_dir + "/weights/best.pt";

  JobRecord exported = Job(Mode::kExport, {{"model", best}});
  ASSERT_TRUE(runner.Run(exported, {}).ok());
  ASSERT_THAT(exported.artifacts, SizeIs(1));
  EXPECT_EQ(exported.artifacts[0].kind, "onnx");
  EXPECT_TRUE(absl::EndsWith(exported.artifacts[0].path, "best.onnx"));
  EXPECT_TRUE(std::filesystem::is_regular_file(exported.artifacts[0].path));

  JobRecord predict =
      Job(Mode::kPredict, {{"model", best},
                           {"source", dir_->Sub("shapes/images/val")},
                           {"save", "false"}});
  ASSERT_TRUE(runner.Run(predict, {}).ok());
  EXPECT_THAT(predict.results, SizeIs(4));
  EXPECT_THAT(predict.artifacts, IsEmpty());
}

TEST_F(EngineRunnerTest, ErrorsComeBackAsStatuses) {
  EngineRunner runner({dir_->Sub("data")});
  JobRecord bad = Job(Mode::kVal, {{"batch", "lots"}});
  absl::Status status = runner.Run(bad, {});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("batch"));

  JobRecord missing =
      Job(Mode::kVal, {{"model", dir_->Sub("nope.pt")},
                       {"data", dir_->Sub("shapes/data.yaml")}});
  status = runner.Run(missing, {});
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr("nope.pt"));
}

TEST_F(EngineRunnerTest, CancelFlagCancelsTheRun) {
  EngineRunner runner({dir_->Sub("data")});
  JobRecord train = Job(Mode::kTrain, {{"data", dir_->Sub("shapes/data.yaml")},
                                       {"epochs", "2"},
                                       {"batch", "4"},
                                       {"name", "cancelled"}});
  std::atomic<bool> cancel{true};
  engine::RunOptions run;
  run.cancel = &cancel;
  EXPECT_EQ(runner.Run(train, run).code(), absl::StatusCode::kCancelled);
}

}  // namespace
}  // namespace yolohook::jobs
