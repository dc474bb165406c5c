// PredictStream with the real engine: one job per stream, a result per frame
// in frame order with what interceptors replaced, backpressure both ways, and
// clear ends for bad arguments, bad frames and cancellation.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/service/server.h"
#include "tests/testing/hook_stream.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/tiny_shapes.h"
#include "yolohook/v1/predict.grpc.pb.h"

namespace yolohook::service {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// The number of PredictStream frames the server's latency histogram counted.
int64_t FramesTimed(Server& server) {
  const std::string prefix =
      "yolohook_predict_latency_seconds_count{rpc=\"PredictStream\"} ";
  const std::string text = server.metrics().Render();
  size_t at = text.find(prefix);
  if (at == std::string::npos) return -1;
  return std::stoll(text.substr(at + prefix.size()));
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class PredictStreamTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    ASSERT_TRUE(testing::MakeTinyShapes(dir_->Sub("shapes")).ok());
    Server::Options options;
    options.listen = "127.0.0.1:0";
    options.data_dir = dir_->path();
    options.threads = 2;
    auto server = Server::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
    auto job =
        server_->manager().Submit(Mode::kTrain,
                                  {{"data", dir_->Sub("shapes") + "/data.yaml"},
                                   {"imgsz", "64"},
                                   {"batch", "4"},
                                   {"epochs", "1"},
                                   {"verbose", "false"}},
                                  {});
    ASSERT_TRUE(job.ok()) << job.status();
    auto done = server_->manager().Wait(job->id, absl::Seconds(300));
    ASSERT_TRUE(done.ok()) << done.status();
    ASSERT_EQ(done->state, jobs::JobState::kSucceeded) << done->error;
    for (const jobs::Artifact& a : done->artifacts) {
      if (a.kind == "weights_best") weights_ = new std::string(a.path);
    }
    ASSERT_NE(weights_, nullptr);
    for (const auto& e :
         fs::directory_iterator(dir_->Sub("shapes") + "/images/val")) {
      frames_.push_back(ReadFile(e.path().string()));
    }
  }
  static void TearDownTestSuite() {
    delete server_;
    delete weights_;
    delete dir_;
  }

  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    channel_ = grpc::CreateChannel(server_->address(),
                                   grpc::InsecureChannelCredentials());
    predict_ = v1::PredictService::NewStub(channel_);
  }

  // A frame; the first of a stream carries the arguments and labels.
  static v1::Frame MakeFrame(int64_t index, const std::string& data,
                             const std::string& label = "") {
    v1::Frame frame;
    frame.set_index(index);
    frame.mutable_image()->set_name(absl::StrCat("cam0_", index, ".jpg"));
    frame.mutable_image()->set_data(data);
    (*frame.mutable_args())["model"] = *weights_;
    (*frame.mutable_args())["imgsz"] = "64";
    (*frame.mutable_args())["conf"] = "0.0001";
    (*frame.mutable_args())["verbose"] = "false";
    if (!label.empty()) (*frame.mutable_labels())["stream"] = label;
    return frame;
  }

  static testing::TempDir* dir_;
  static Server* server_;
  static std::string* weights_;
  static std::vector<std::string> frames_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::PredictService::Stub> predict_;
};

testing::TempDir* PredictStreamTest::dir_ = nullptr;
Server* PredictStreamTest::server_ = nullptr;
std::string* PredictStreamTest::weights_ = nullptr;
std::vector<std::string> PredictStreamTest::frames_;

TEST_F(PredictStreamTest, ResultsFollowFrameOrderWithInterceptorsApplied) {
  // An interceptor tags each frame's single box with the stream's frame
  // number (track_id), so results show which frame they belong to.
  testing::HookStream hook(channel_);
  v1::ClientMessage subscribe;
  v1::Subscribe* s = subscribe.mutable_subscribe();
  s->set_subscription_id("tag");
  (*s->mutable_match_labels())["stream"] = "tagged";
  s->add_events("on_predict_postprocess_end");
  s->set_mode(v1::SUBSCRIPTION_MODE_INTERCEPT);
  s->set_include_images(true);
  ASSERT_TRUE(hook.Send(subscribe));
  ASSERT_TRUE(hook.ReadUntil(
      [](const v1::ServerMessage& m) { return m.has_subscribed(); }));
  int frames_attached = 0;  // events whose frames came as JPEG
  std::thread replier([&] {
    while (auto m = hook.Read(absl::Seconds(60))) {
      if (!m->has_event()) continue;
      const v1::Event& e = m->event();
      if (e.predictor().images_size() > 0 &&
          e.predictor().images_size() == e.predictor().results_size() &&
          e.predictor().images(0).data().rfind("\xff\xd8", 0) == 0) {
        ++frames_attached;
      }
      v1::ClientMessage reply;
      v1::Reply* r = reply.mutable_reply();
      r->set_subscription_id("tag");
      r->set_job_id(e.job_id());
      r->set_seq(e.seq());
      v1::ReplaceResults* replace =
          r->add_mutations()->mutable_replace_results();
      for (int i = 0; i < e.predictor().results_size(); ++i) {
        v1::Result* result = replace->add_results();
        *result = e.predictor().results(i);
        result->clear_boxes();
        v1::Box* box = result->add_boxes();
        box->set_x2(8);
        box->set_y2(8);
        box->set_conf(0.9f);
        box->set_track_id(e.predictor().frame_indices(i));
      }
      if (!hook.Send(reply)) return;
    }
  });

  const int kFrames = 12;  // more than the read-ahead bound
  const int64_t timed_before = FramesTimed(*server_);
  grpc::ClientContext context;
  auto stream = predict_->PredictStream(&context);
  // Write every frame before reading any result: the server must keep
  // reading and predicting while results wait for the client.
  for (int i = 0; i < kFrames; ++i) {
    ASSERT_TRUE(stream->Write(
        MakeFrame(100 + i, frames_[i % frames_.size()], "tagged")));
  }
  ASSERT_TRUE(stream->WritesDone());
  std::vector<v1::FrameResult> results;
  v1::FrameResult result;
  while (stream->Read(&result)) results.push_back(result);
  grpc::Status status = stream->Finish();
  hook.Close();
  replier.join();
  ASSERT_TRUE(status.ok()) << status.error_message();

  ASSERT_EQ(results.size(), static_cast<size_t>(kFrames));
  EXPECT_EQ(frames_attached, kFrames);  // include_images: each frame as JPEG
  for (int i = 0; i < kFrames; ++i) {
    EXPECT_EQ(results[i].index(), 100 + i);
    EXPECT_EQ(results[i].job_id(), results[0].job_id());
    EXPECT_EQ(results[i].result().path(),
              absl::StrCat("cam0_", 100 + i, ".jpg"));
    ASSERT_EQ(results[i].result().boxes_size(), 1) << i;
    EXPECT_EQ(results[i].result().boxes(0).track_id(), i);
  }
  auto job = server_->manager().Get(results[0].job_id());
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state, jobs::JobState::kSucceeded);
  EXPECT_EQ(job->labels.at("stream"), "tagged");
  EXPECT_TRUE(job->results.empty());  // a stream's results are not stored
  EXPECT_EQ(FramesTimed(*server_) - timed_before, kFrames);
}

TEST_F(PredictStreamTest, EmptyStreamEndsWithoutAJob) {
  grpc::ClientContext context;
  auto stream = predict_->PredictStream(&context);
  ASSERT_TRUE(stream->WritesDone());
  v1::FrameResult result;
  EXPECT_FALSE(stream->Read(&result));
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(PredictStreamTest, BadArgumentsAndBadFramesEndTheStreamWithTheReason) {
  {
    grpc::ClientContext context;
    auto stream = predict_->PredictStream(&context);
    v1::Frame frame = MakeFrame(0, frames_[0]);
    (*frame.mutable_args())["conff"] = "0.5";
    stream->Write(frame);
    stream->WritesDone();
    v1::FrameResult result;
    EXPECT_FALSE(stream->Read(&result));
    grpc::Status status = stream->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("conff"));
  }
  {
    grpc::ClientContext context;
    auto stream = predict_->PredictStream(&context);
    stream->Write(MakeFrame(0, frames_[0]));
    stream->Write(MakeFrame(1, "not a jpeg"));
    stream->WritesDone();
    std::vector<v1::FrameResult> results;
    v1::FrameResult result;
    while (stream->Read(&result)) results.push_back(result);
    grpc::Status status = stream->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::ABORTED);
    EXPECT_THAT(status.error_message(), HasSubstr("frame 1 ('cam0_1.jpg')"));
    ASSERT_EQ(results.size(), 1u);  // the good frame's result came first
    EXPECT_EQ(results[0].index(), 0);
  }
}

TEST_F(PredictStreamTest, CancellingEitherSideEndsTheJobAndTheStream) {
  // The client cancels: the job becomes CANCELLED.
  std::string job_id;
  {
    grpc::ClientContext context;
    auto stream = predict_->PredictStream(&context);
    ASSERT_TRUE(stream->Write(MakeFrame(0, frames_[0])));
    v1::FrameResult result;
    ASSERT_TRUE(stream->Read(&result));
    job_id = result.job_id();
    context.TryCancel();
    while (stream->Read(&result)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  auto job = server_->manager().Wait(job_id, absl::Seconds(60));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state, jobs::JobState::kCancelled);

  // CancelJob while the stream waits for its next frame: the job does not
  // wait for it, and the stream ends CANCELLED.
  grpc::ClientContext context;
  auto stream = predict_->PredictStream(&context);
  ASSERT_TRUE(stream->Write(MakeFrame(0, frames_[0])));
  v1::FrameResult result;
  ASSERT_TRUE(stream->Read(&result));
  job_id = result.job_id();
  ASSERT_TRUE(server_->manager().Cancel(job_id).ok());
  while (stream->Read(&result)) {
  }
  grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_THAT(status.error_message(), HasSubstr(job_id));
  job = server_->manager().Get(job_id);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state, jobs::JobState::kCancelled);
}

}  // namespace
}  // namespace yolohook::service
