// The yolohook command's server mode against a real server on 127.0.0.1 with
// the fake engine: exit codes, what it prints, how it reads predict sources.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "client/cli/remote.h"
#include "client/cpp/client.h"
#include "server/service/server.h"
#include "tests/testing/fake_runner.h"
#include "tests/testing/temp_dir.h"

namespace yolohook::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream(path, std::ios::binary) << content;
}

std::vector<std::string> Names(const std::vector<v1::Image>& images) {
  std::vector<std::string> out;
  for (const v1::Image& image : images) out.push_back(image.name());
  return out;
}

class CliRemoteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    service::Server::Options options;
    options.listen = "127.0.0.1:0";
    options.data_dir = dir_.Sub("server");
    options.runner = &runner_;
    auto server = service::Server::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    flags_.server = server_->address();
  }

  testing::TempDir dir_;
  testing::FakeRunner runner_;
  std::unique_ptr<service::Server> server_;
  RemoteFlags flags_;
};

TEST_F(CliRemoteTest, TrainFollowsTheJobAndExitsByItsState) {
  ::testing::internal::CaptureStdout();
  const int rc = RunRemoteJob(flags_, Mode::kTrain, {{"epochs", "2"}});
  const std::string out = ::testing::internal::GetCapturedStdout();
  EXPECT_EQ(rc, 0) << out;
  EXPECT_THAT(out, HasSubstr("box_loss"));
  EXPECT_THAT(out, HasSubstr("2/2"));
  EXPECT_THAT(out, HasSubstr("train succeeded"));
}

TEST_F(CliRemoteTest, FailedJobExitsWithOne) {
  Client::Options options;
  options.target = server_->address();
  Client interceptor(options);
  CallbackOptions intercept;
  intercept.mode = CallbackOptions::kIntercept;
  intercept.match_labels["app"] = "fail";
  ASSERT_TRUE(interceptor
                  .AddCallback(
                      "on_train_start",
                      [](EventContext& ctx) { ctx.Fail("no thanks"); },
                      intercept)
                  .ok());
  flags_.labels["app"] = "fail";
  ::testing::internal::CaptureStdout();
  const int rc = RunRemoteJob(flags_, Mode::kTrain, {{"epochs", "2"}});
  ::testing::internal::GetCapturedStdout();
  EXPECT_EQ(rc, 1);
}

TEST_F(CliRemoteTest, PredictUploadsLocalImages) {
  const std::string images = dir_.Sub("images");
  std::filesystem::create_directories(images);
  WriteFile(images + "/b.jpg", "bytes");
  WriteFile(images + "/a.png", "bytes");
  ::testing::internal::CaptureStdout();
  const int rc = RunRemoteJob(flags_, Mode::kPredict, {{"source", images}});
  const std::string out = ::testing::internal::GetCapturedStdout();
  EXPECT_EQ(rc, 0) << out;
  EXPECT_THAT(out, HasSubstr("a.png: 32x32 1 circle"));
  EXPECT_THAT(out, HasSubstr("2 images, 2 detections"));
}

TEST_F(CliRemoteTest, PredictRejectsVideosAndMissingSources) {
  WriteFile(dir_.Sub("clip.mp4"), "bytes");
  auto video = LoadSourceImages(dir_.Sub("clip.mp4"));
  EXPECT_EQ(video.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(video.status().message(), HasSubstr("video"));
  EXPECT_THAT(video.status().message(), HasSubstr("source="));
  EXPECT_EQ(LoadSourceImages(dir_.Sub("missing.jpg")).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(RunRemoteJob(flags_, Mode::kPredict, {}), 1);
}

TEST_F(CliRemoteTest, SourcesAreFoldersGlobsAndLists) {
  WriteFile(dir_.Sub("b.jpg"), "b");
  WriteFile(dir_.Sub("a.jpg"), "a");
  WriteFile(dir_.Sub("notes.md"), "not an image");
  WriteFile(dir_.Sub("list.txt"), "# images\nb.jpg\n\na.jpg\n");
  auto list = LoadSourceImages(dir_.Sub("list.txt"));
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_THAT(Names(*list), ElementsAre(dir_.Sub("b.jpg"), dir_.Sub("a.jpg")));
  auto glob = LoadSourceImages(dir_.Sub("*.jpg"));
  ASSERT_TRUE(glob.ok()) << glob.status();
  EXPECT_THAT(Names(*glob), ElementsAre(dir_.Sub("a.jpg"), dir_.Sub("b.jpg")));
  auto folder = LoadSourceImages(dir_.path());
  ASSERT_TRUE(folder.ok()) << folder.status();
  EXPECT_EQ(folder->size(), 2u);
  EXPECT_EQ((*folder)[0].data(), "a");
}

TEST_F(CliRemoteTest, JobsWatchAndCancel) {
  Client::Options options;
  options.target = server_->address();
  Client client(options);
  auto job = client.Submit("train", {{"epochs", "1"}});
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(client.Wait(job->id(), absl::Seconds(30)).ok());

  ::testing::internal::CaptureStdout();
  EXPECT_EQ(RunJobs(flags_, {"state=succeeded"}), 0);
  std::string out = ::testing::internal::GetCapturedStdout();
  EXPECT_THAT(out, HasSubstr(job->id()));
  EXPECT_EQ(RunJobs(flags_, {"state=bogus"}), 1);

  flags_.events = "on_train_end";
  ::testing::internal::CaptureStdout();
  EXPECT_EQ(RunWatch(flags_, {job->id()}), 0);
  out = ::testing::internal::GetCapturedStdout();
  EXPECT_THAT(out, HasSubstr("\"name\":\"on_train_end\""));
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1);

  flags_.events = "on_train_edn";
  EXPECT_EQ(RunWatch(flags_, {job->id()}), 1);
  EXPECT_EQ(RunCancel(flags_, {job->id()}), 1);  // already finished
  EXPECT_EQ(RunCancel(flags_, {}), 1);
}

}  // namespace
}  // namespace yolohook::cli
