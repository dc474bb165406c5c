// The yolohook command's server mode against a real server on 127.0.0.1 with
// the fake engine: exit codes, what it prints, how it reads predict sources.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <opencv2/core.hpp>
#include <opencv2/videoio.hpp>
#include <string>
#include <vector>

#include "client/cli/remote.h"
#include "client/cpp/client.h"
#include "server/service/server.h"
#include "tests/client/stream_runner.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/test_certs.h"

namespace yolohook::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream(path, std::ios::binary) << content;
}

// A small MJPG video of `frames` 32x32 frames.
void WriteVideo(const std::string& path, int frames) {
  cv::VideoWriter writer(path, cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), 10,
                         cv::Size(32, 32));
  ASSERT_TRUE(writer.isOpened()) << path;
  for (int i = 0; i < frames; ++i)
    writer.write(cv::Mat(32, 32, CV_8UC3, cv::Scalar(i * 20, 100, 200)));
}

int CountOf(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos;
       at = text.find(what, at + 1))
    ++n;
  return n;
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
  testing::StreamRunner runner_;  // streams; FakeRunner for other jobs
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

TEST_F(CliRemoteTest, PredictStreamsVideoFramesByStride) {
  const std::string video = dir_.Sub("clip.avi");
  WriteVideo(video, 7);
  ::testing::internal::CaptureStdout();
  const int rc = RunRemoteJob(flags_, Mode::kPredict,
                              {{"source", video}, {"vid_stride", "3"}});
  const std::string out = ::testing::internal::GetCapturedStdout();
  EXPECT_EQ(rc, 0) << out;
  // Frames 1, 4 and 7 of 7, one line each.
  EXPECT_THAT(out,
              HasSubstr("video 1/1 (frame 1/7) " + video + ": 32x32 1 circle"));
  EXPECT_THAT(out, HasSubstr("video 1/1 (frame 4/7) " + video));
  EXPECT_THAT(out, HasSubstr("video 1/1 (frame 7/7) " + video));
  EXPECT_EQ(CountOf(out, "video 1/1 (frame "), 3) << out;
  EXPECT_THAT(out, HasSubstr("3 frames of " + video + ", 3 detections"));
}

TEST_F(CliRemoteTest, PredictMixesImagesAndVideos) {
  const std::string media = dir_.Sub("media");
  std::filesystem::create_directories(media);
  WriteFile(media + "/a.jpg", "bytes");
  WriteVideo(media + "/b.avi", 2);
  WriteVideo(media + "/c.avi", 3);
  ::testing::internal::CaptureStdout();
  const int rc = RunRemoteJob(flags_, Mode::kPredict, {{"source", media}});
  const std::string out = ::testing::internal::GetCapturedStdout();
  EXPECT_EQ(rc, 0) << out;
  EXPECT_THAT(out, HasSubstr("a.jpg: 32x32 1 circle"));
  EXPECT_THAT(out, HasSubstr("1 images, 1 detections"));
  EXPECT_EQ(CountOf(out, "video 1/2 (frame "), 2) << out;
  EXPECT_EQ(CountOf(out, "video 2/2 (frame "), 3) << out;
}

TEST_F(CliRemoteTest, PredictRejectsBadVideosStridesAndMissingSources) {
  WriteFile(dir_.Sub("clip.mp4"), "not a video");
  auto source = LoadPredictSource(dir_.Sub("clip.mp4"));
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_THAT(source->videos, ElementsAre(dir_.Sub("clip.mp4")));
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(
      RunRemoteJob(flags_, Mode::kPredict, {{"source", dir_.Sub("clip.mp4")}}),
      1);
  EXPECT_EQ(
      RunRemoteJob(flags_, Mode::kPredict,
                   {{"source", dir_.Sub("clip.mp4")}, {"vid_stride", "0"}}),
      1);
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(err, HasSubstr("clip.mp4 cannot be opened"));
  EXPECT_THAT(err, HasSubstr("vid_stride=0"));
  EXPECT_EQ(LoadPredictSource(dir_.Sub("missing.jpg")).status().code(),
            absl::StatusCode::kNotFound);
  WriteFile(dir_.Sub("notes.md"), "text");
  EXPECT_EQ(LoadPredictSource(dir_.Sub("notes.md")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RunRemoteJob(flags_, Mode::kPredict, {}), 1);
}

TEST_F(CliRemoteTest, SourcesAreFoldersGlobsAndLists) {
  WriteFile(dir_.Sub("b.jpg"), "b");
  WriteFile(dir_.Sub("a.jpg"), "a");
  WriteFile(dir_.Sub("c.mp4"), "c");
  WriteFile(dir_.Sub("notes.md"), "not an image");
  WriteFile(dir_.Sub("list.txt"), "# images\nb.jpg\n\nc.mp4\na.jpg\n");
  auto list = LoadPredictSource(dir_.Sub("list.txt"));
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_THAT(Names(list->images),
              ElementsAre(dir_.Sub("b.jpg"), dir_.Sub("a.jpg")));
  EXPECT_THAT(list->videos, ElementsAre(dir_.Sub("c.mp4")));
  auto glob = LoadPredictSource(dir_.Sub("*.jpg"));
  ASSERT_TRUE(glob.ok()) << glob.status();
  EXPECT_THAT(Names(glob->images),
              ElementsAre(dir_.Sub("a.jpg"), dir_.Sub("b.jpg")));
  EXPECT_TRUE(glob->videos.empty());
  auto folder = LoadPredictSource(dir_.path());
  ASSERT_TRUE(folder.ok()) << folder.status();
  ASSERT_EQ(folder->images.size(), 2u);
  EXPECT_EQ(folder->images[0].data(), "a");
  EXPECT_THAT(folder->videos, ElementsAre(dir_.Sub("c.mp4")));
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

  // A running job: cancel prints the state it ended in.
  auto running = client.Submit("train", {{"name", "block-cancel"}});
  ASSERT_TRUE(running.ok()) << running.status();
  runner_.fake().AwaitStarted(2);
  ::testing::internal::CaptureStdout();
  EXPECT_EQ(RunCancel(flags_, {running->id()}), 0);
  out = ::testing::internal::GetCapturedStdout();
  // (The in-process server's own log line about the job comes first.)
  EXPECT_TRUE(absl::EndsWith(out, "\njob " + running->id() + " cancelled\n"))
      << out;
}

TEST(CliAuthTest, TokensAndTlsFilesReachTheServer) {
  testing::TempDir dir;
  auto certs = testing::MakeTestCerts(dir.path());
  ASSERT_TRUE(certs.ok()) << certs.status();
  WriteFile(dir.Sub("tokens.csv"),
            "op-token,ci,operator\nview-token,dash,viewer\n");
  WriteFile(dir.Sub("op.token"), "op-token\n");
  testing::StreamRunner runner;
  service::Server::Options options;
  options.listen = "127.0.0.1:0";
  options.data_dir = dir.Sub("server");
  options.runner = &runner;
  options.token_file = dir.Sub("tokens.csv");
  options.tls_cert = certs->server_cert;
  options.tls_key = certs->server_key;
  auto server = service::Server::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();

  RemoteFlags flags;
  flags.server = (*server)->address();
  flags.tls_ca = certs->ca;
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(RunJobs(flags, {}), 1);  // no token
  EXPECT_THAT(::testing::internal::GetCapturedStderr(),
              HasSubstr("missing bearer token"));

  flags.token = "view-token";
  ::testing::internal::CaptureStdout();
  EXPECT_EQ(RunJobs(flags, {}), 0);
  ::testing::internal::GetCapturedStdout();
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(RunCancel(flags, {"job-1"}), 1);
  EXPECT_THAT(::testing::internal::GetCapturedStderr(),
              HasSubstr("needs role operator"));

  // The token file wins over the token.
  flags.token_file = dir.Sub("op.token");
  ::testing::internal::CaptureStdout();
  EXPECT_EQ(RunRemoteJob(flags, Mode::kTrain, {{"epochs", "1"}}), 0);
  ::testing::internal::GetCapturedStdout();

  flags.tls_ca.clear();  // plaintext against a TLS server
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(RunJobs(flags, {}), 1);
  ::testing::internal::GetCapturedStderr();
}

}  // namespace
}  // namespace yolohook::cli
