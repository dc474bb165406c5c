// Client::PredictStream against a real server on 127.0.0.1 (a free port) with
// a fake engine: results in frame order with their indices, interceptors'
// replacements, no deadlock when many frames go out before any result is
// read, the server's errors as Finish's status, cancellation.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/cpp/client.h"
#include "server/service/server.h"
#include "tests/client/stream_runner.h"
#include "tests/testing/temp_dir.h"

namespace yolohook {
namespace {

using ::testing::HasSubstr;

class PredictStreamClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    service::Server::Options options;
    options.listen = "127.0.0.1:0";
    options.data_dir = dir_.path();
    options.runner = &runner_;
    options.reply_timeout = absl::Seconds(10);
    auto server = service::Server::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    Client::Options client_options;
    client_options.target = server_->address();
    client_ = std::make_unique<Client>(client_options);
  }

  void TearDown() override {
    client_.reset();
    server_.reset();
  }

  // Every result left in the stream.
  static std::vector<v1::FrameResult> Drain(FrameStream& stream) {
    std::vector<v1::FrameResult> out;
    v1::FrameResult r;
    while (stream.Next(&r)) out.push_back(r);
    return out;
  }

  testing::TempDir dir_;
  testing::StreamRunner runner_;
  std::unique_ptr<service::Server> server_;
  std::unique_ptr<Client> client_;
};

TEST_F(PredictStreamClientTest, ResultsComeInFrameOrderWithTheirIndices) {
  auto stream = client_->PredictStream({{"conf", "0.25"}}, {{"cam", "0"}});
  std::vector<v1::FrameResult> results;
  // Read while sending, on another thread, as a video client does.
  std::thread reader([&] { results = Drain(*stream); });
  for (int64_t i = 0; i < 5; ++i) {
    ASSERT_TRUE(stream->Send(i * 3, absl::StrCat("f", i * 3, ".jpg"), "jpeg"));
  }
  EXPECT_TRUE(stream->Finish().ok());
  reader.join();
  ASSERT_EQ(results.size(), 5u);
  for (int64_t i = 0; i < 5; ++i) {
    EXPECT_EQ(results[i].index(), i * 3);
    EXPECT_EQ(results[i].result().path(), absl::StrCat("f", i * 3, ".jpg"));
    ASSERT_EQ(results[i].result().boxes_size(), 1);
    EXPECT_EQ(results[i].job_id(), results[0].job_id());
  }
  auto job = client_->Wait(results[0].job_id(), absl::Seconds(30));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job->args().at("conf"), "0.25");
  EXPECT_EQ(job->labels().at("cam"), "0");
  EXPECT_TRUE(stream->Finish().ok());  // the same status again
  EXPECT_FALSE(stream->Send(99, "late.jpg", "jpeg"));
}

TEST_F(PredictStreamClientTest, InterceptorsReplacedResultsArrive) {
  CallbackOptions intercept;
  intercept.mode = CallbackOptions::kIntercept;
  intercept.match_labels["stream"] = "tagged";
  ASSERT_TRUE(client_
                  ->AddCallback(
                      "on_predict_postprocess_end",
                      [](EventContext& ctx) {
                        for (Result& r : ctx.predictor->results) {
                          for (Box& b : r.boxes) b.cls = 1;
                          r.boxes.push_back(Box{0, 0, 4, 4, 0.5f, 1, 7});
                        }
                      },
                      intercept)
                  .ok());
  auto stream = client_->PredictStream({}, {{"stream", "tagged"}});
  for (int64_t i = 0; i < 3; ++i) ASSERT_TRUE(stream->Send(i, "f.jpg", "jpeg"));
  ASSERT_TRUE(stream->Finish().ok());
  std::vector<v1::FrameResult> results = Drain(*stream);
  ASSERT_EQ(results.size(), 3u);
  for (int64_t i = 0; i < 3; ++i) {
    EXPECT_EQ(results[i].index(), i);
    const v1::Result& r = results[i].result();
    ASSERT_EQ(r.boxes_size(), 2);
    EXPECT_EQ(r.boxes(0).cls(), 1);
    EXPECT_EQ(r.boxes(1).track_id(), 7);
  }
}

TEST_F(PredictStreamClientTest, ManyFramesSentBeforeAnyResultIsRead) {
  // The server holds only a few frames and results; the client's reader
  // thread keeps taking results while nobody calls Next.
  auto stream = client_->PredictStream({});
  const std::string frame(16 << 10, 'x');
  constexpr int kFrames = 300;
  for (int64_t i = 0; i < kFrames; ++i)
    ASSERT_TRUE(stream->Send(i, "f.jpg", frame)) << i;
  ASSERT_TRUE(stream->Finish().ok());
  std::vector<v1::FrameResult> results = Drain(*stream);
  ASSERT_EQ(results.size(), static_cast<size_t>(kFrames));
  for (int64_t i = 0; i < kFrames; ++i) EXPECT_EQ(results[i].index(), i);
}

TEST_F(PredictStreamClientTest, ServerErrorsAreTheFinishStatus) {
  {
    auto stream = client_->PredictStream({{"conff", "0.5"}});
    stream->Send(0, "f.jpg", "jpeg");
    const absl::Status status = stream->Finish();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(status.message(), HasSubstr("conff"));
    EXPECT_TRUE(Drain(*stream).empty());
  }
  {
    auto stream = client_->PredictStream({});
    ASSERT_TRUE(stream->Send(0, "good.jpg", "jpeg"));
    stream->Send(1, "broken.jpg", "bad");
    // Sends after the end fail rather than block.
    while (stream->Send(2, "more.jpg", "jpeg")) {
    }
    const absl::Status status = stream->Finish();
    EXPECT_EQ(status.code(), absl::StatusCode::kAborted);
    EXPECT_THAT(status.message(), HasSubstr("frame 1 ('broken.jpg')"));
    std::vector<v1::FrameResult> results = Drain(*stream);
    ASSERT_FALSE(results.empty());  // the good frame's result came first
    EXPECT_EQ(results[0].index(), 0);
  }
}

TEST_F(PredictStreamClientTest, UnreachableServerIsUnavailable) {
  Client::Options options;
  options.target = "127.0.0.1:1";
  Client nowhere(options);
  auto stream = nowhere.PredictStream({});
  stream->Send(0, "f.jpg", "jpeg");
  const absl::Status status = stream->Finish();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(status.message(), HasSubstr("127.0.0.1:1"));
}

TEST_F(PredictStreamClientTest, CancelEndsTheJob) {
  auto stream = client_->PredictStream({});
  ASSERT_TRUE(stream->Send(0, "f.jpg", "jpeg"));
  v1::FrameResult first;
  ASSERT_TRUE(stream->Next(&first));  // the job now waits for frame 1
  stream->Cancel();
  EXPECT_TRUE(Drain(*stream).empty());
  EXPECT_FALSE(stream->Send(1, "f.jpg", "jpeg"));
  EXPECT_EQ(stream->Finish().code(), absl::StatusCode::kCancelled);
  auto job = client_->Wait(first.job_id(), absl::Seconds(30));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::JOB_STATE_CANCELLED);
}

TEST_F(PredictStreamClientTest, DestroyingAnUnfinishedStreamCancelsItsJob) {
  std::string job_id;
  {
    auto stream = client_->PredictStream({});
    ASSERT_TRUE(stream->Send(0, "f.jpg", "jpeg"));
    v1::FrameResult first;
    ASSERT_TRUE(stream->Next(&first));
    job_id = first.job_id();
  }
  auto job = client_->Wait(job_id, absl::Seconds(30));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::JOB_STATE_CANCELLED);
}

}  // namespace
}  // namespace yolohook
