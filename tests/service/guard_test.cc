// The server's guards through the wire, with a fake engine: paths confined to
// the allowed roots, request limits, the audit line of every reply, and the
// job state lines in the server's log.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/service/server.h"
#include "tests/testing/fake_runner.h"
#include "tests/testing/hook_stream.h"
#include "tests/testing/job_calls.h"
#include "tests/testing/server_test.h"
#include "tests/testing/temp_dir.h"
#include "yolohook/v1/jobs.grpc.pb.h"
#include "yolohook/v1/predict.grpc.pb.h"

namespace yolohook::service {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using testing::HookStream;
using ::testing::StartsWith;

// A PNG header (signature and IHDR) declaring width x height pixels; enough
// for the size check, which reads no further.
std::string PngHeader(uint32_t width, uint32_t height) {
  std::string png("\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR", 16);
  for (uint32_t v : {width, height}) {
    for (int shift = 24; shift >= 0; shift -= 8)
      png.push_back(static_cast<char>((v >> shift) & 0xFF));
  }
  return png;
}

class GuardTest : public testing::ServerTest {
 protected:
  void Start(Server::Options options = {}) {
    options.reply_timeout = absl::Seconds(30);
    StartServer(options);
  }

  grpc::Status Submit(v1::Mode mode,
                      const std::map<std::string, std::string>& args,
                      v1::Job* job) {
    v1::SubmitJobRequest request;
    request.set_mode(mode);
    request.mutable_args()->insert(args.begin(), args.end());
    grpc::ClientContext context;
    return jobs_->SubmitJob(&context, request, job);
  }

  grpc::Status Predict(const std::vector<std::string>& images) {
    v1::PredictRequest request;
    for (size_t i = 0; i < images.size(); ++i) {
      v1::Image* image = request.add_images();
      image->set_name(absl::StrCat("img", i, ".png"));
      image->set_data(images[i]);
    }
    v1::PredictResponse response;
    grpc::ClientContext context;
    return predict_->Predict(&context, request, &response);
  }
};

TEST_F(GuardTest, PathsOutsideTheRootsAreRefused) {
  Server::Options options;
  options.allowed_roots = {dir_.Sub("models")};
  Start(options);
  std::filesystem::create_directories(dir_.Sub("data2"));
  std::filesystem::create_directories(dir_.Sub("outside"));
  std::filesystem::create_directory_symlink(dir_.Sub("outside"),
                                            dir_.Sub("data/link"));
  const std::vector<std::pair<std::string, std::string>> refused = {
      {"data", "../outside/data.yaml"},
      {"data", "/etc/passwd"},
      {"data", dir_.Sub("data2/data.yaml")},
      {"data", "link/data.yaml"},
      {"model", "../models/../outside/best.pt"},
      {"project", "/tmp"},
      {"name", "../../../escape"},
  };
  for (const auto& [key, value] : refused) {
    v1::Job job;
    grpc::Status status = Submit(v1::MODE_VAL, {{key, value}}, &job);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << key << "=" << value;
    EXPECT_THAT(status.error_message(),
                HasSubstr(absl::StrCat(key, "=", value)));
    EXPECT_THAT(status.error_message(), HasSubstr(dir_.Sub("models")));
  }
  // Inside a root: accepted, and recorded resolved.
  v1::Job job;
  grpc::Status status = Submit(
      v1::MODE_VAL,
      {{"data", "sets/data.yaml"}, {"model", dir_.Sub("models/b.pt")}}, &job);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(job.args().at("data"), dir_.Sub("data/sets/data.yaml"));
  EXPECT_EQ(job.args().at("model"), dir_.Sub("models/b.pt"));
  testing::WaitJobDone(*server_, *jobs_, job.id(), absl::Seconds(30));
}

// A dataset whose data.yaml lies inside a root cannot reach outside it, by
// its `path` key or by a symlinked split directory.
TEST_F(GuardTest, DatasetDescriptionsCannotPointOutsideTheRoots) {
  Start();
  namespace fs = std::filesystem;
  auto make_split = [](const fs::path& dir) {
    fs::create_directories(dir);
    std::ofstream(dir / "a.jpg") << "x";
  };
  make_split(dir_.Sub("outside/images/train"));
  make_split(dir_.Sub("outside/images/val"));
  make_split(dir_.Sub("data/inside/images/train"));
  fs::create_directory_symlink(dir_.Sub("outside/images/val"),
                               dir_.Sub("data/inside/images/val"));
  make_split(dir_.Sub("data/clean/images/train"));
  make_split(dir_.Sub("data/clean/images/val"));
  const std::string splits = "train: images/train\nval: images/val\n";
  std::ofstream(dir_.Sub("data/by_path.yaml"))
      << "path: " << dir_.Sub("outside") << "\n"
      << splits << "names: [a]\n";
  std::ofstream(dir_.Sub("data/inside/data.yaml")) << splits << "names: [a]\n";
  std::ofstream(dir_.Sub("data/clean/data.yaml")) << splits << "names: [a]\n";

  for (const std::string data : {"by_path.yaml", "inside/data.yaml"}) {
    v1::Job job;
    grpc::Status status = Submit(v1::MODE_VAL, {{"data", data}}, &job);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << data;
    EXPECT_THAT(status.error_message(),
                HasSubstr(absl::StrCat("data ", data, ": path=")));
    EXPECT_THAT(status.error_message(), HasSubstr(dir_.Sub("outside")));
  }
  v1::Job job;
  grpc::Status status =
      Submit(v1::MODE_VAL, {{"data", "clean/data.yaml"}}, &job);
  ASSERT_TRUE(status.ok()) << status.error_message();
  testing::WaitJobDone(*server_, *jobs_, job.id(), absl::Seconds(30));
}

TEST_F(GuardTest, SubscriptionsPerStreamAreLimitedAndTheStreamStaysUsable) {
  Server::Options options;
  options.max_subscriptions = 2;
  Start(options);
  HookStream stream(channel_);
  for (const char* id : {"a", "b"}) {
    v1::Subscribe sub;
    sub.set_subscription_id(id);
    auto ack = stream.Subscribe(sub);
    ASSERT_TRUE(ack.has_value());
    EXPECT_TRUE(ack->has_subscribed()) << ack->DebugString();
  }
  v1::Subscribe extra;
  extra.set_subscription_id("c");
  auto error = stream.Subscribe(extra);
  ASSERT_TRUE(error.has_value());
  ASSERT_TRUE(error->has_error()) << error->DebugString();
  EXPECT_EQ(error->error().code(),
            static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED));
  EXPECT_THAT(error->error().message(), HasSubstr("--max_subscriptions"));
  // Still open: after an unsubscribe there is room again.
  v1::ClientMessage unsubscribe;
  unsubscribe.mutable_unsubscribe()->set_subscription_id("a");
  ASSERT_TRUE(stream.Send(unsubscribe));
  auto ack = stream.Subscribe(extra);
  ASSERT_TRUE(ack.has_value());
  EXPECT_TRUE(ack->has_subscribed()) << ack->DebugString();
}

TEST_F(GuardTest, QueuedJobsAreLimited) {
  Server::Options options;
  options.max_queued = 1;
  Start(options);
  v1::Job running, queued, refused;
  ASSERT_TRUE(Submit(v1::MODE_TRAIN, {{"name", "block"}}, &running).ok());
  runner_.AwaitStarted(1);
  ASSERT_TRUE(Submit(v1::MODE_VAL, {}, &queued).ok());
  grpc::Status status = Submit(v1::MODE_VAL, {}, &refused);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("--max_queued"));
  runner_.ReleaseAll();
  testing::WaitJobDone(*server_, *jobs_, queued.id(), absl::Seconds(30));
}

TEST_F(GuardTest, ImagesPerRequestAndImageSizeAreLimited) {
  Server::Options options;
  options.max_images = 2;
  options.max_image_pixels = 100 * 100;
  Start(options);
  grpc::Status many = Predict({"x", "x", "x"});
  EXPECT_EQ(many.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(many.error_message(), HasSubstr("--max_images"));
  grpc::Status big = Predict({"x", PngHeader(101, 100)});
  EXPECT_EQ(big.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(big.error_message(),
              HasSubstr("images[1] (\"img1.png\"): 101x100 pixels"));
  EXPECT_THAT(big.error_message(), HasSubstr("--max_image_pixels"));
  EXPECT_TRUE(Predict({"x", PngHeader(100, 100)}).ok());

  // A PredictStream frame too: the stream ends naming the frame.
  grpc::ClientContext context;
  auto stream = predict_->PredictStream(&context);
  v1::Frame frame;
  frame.set_index(5);
  frame.mutable_image()->set_name("f.png");
  frame.mutable_image()->set_data(PngHeader(4000, 3000));
  stream->Write(frame);
  stream->WritesDone();
  v1::FrameResult result;
  while (stream->Read(&result)) {
  }
  grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(),
              HasSubstr("frame 5 (\"f.png\"): 4000x3000 pixels"));
}

TEST_F(GuardTest, MessagesOverTheLimitAreRefused) {
  Server::Options options;
  options.max_message_bytes = 1 << 20;
  Start(options);
  grpc::Status status = Predict({std::string(2 << 20, 'x')});
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("larger than max"));
}

TEST_F(GuardTest, AppliedAndRejectedRepliesAreAudited) {
  Start();
  HookStream stream(channel_);
  v1::Subscribe sub;
  sub.set_subscription_id("stopper");
  sub.add_events("on_train_epoch_end");
  sub.set_mode(v1::SUBSCRIPTION_MODE_INTERCEPT);
  ASSERT_TRUE(stream.Subscribe(sub).has_value());
  v1::Job job;
  ASSERT_TRUE(Submit(v1::MODE_TRAIN, {{"epochs", "3"}}, &job).ok());

  auto first = stream.ReadUntil(
      [](const v1::ServerMessage& m) { return m.has_event(); });
  ASSERT_TRUE(first.has_value());
  v1::Mutation bad;
  (*bad.mutable_set_hyperparameters()->mutable_values())["lr0"] = -1;
  auto rejected = stream.Reply(first->event(), {bad});
  ASSERT_TRUE(rejected.has_value());
  EXPECT_FALSE(rejected->applied());

  auto second = stream.ReadUntil(
      [](const v1::ServerMessage& m) { return m.has_event(); });
  ASSERT_TRUE(second.has_value());
  v1::Mutation stop;
  stop.mutable_stop_training()->set_reason("enough");
  auto applied = stream.Reply(second->event(), {stop});
  ASSERT_TRUE(applied.has_value());
  EXPECT_TRUE(applied->applied()) << applied->reason();
  testing::WaitJobDone(*server_, *jobs_, job.id(), absl::Seconds(30));

  std::vector<std::string> audit;
  for (const std::string& line : LogOf(job.id())) {
    if (absl::StartsWith(line, "audit: ")) audit.push_back(line);
  }
  ASSERT_EQ(audit.size(), 2u);
  EXPECT_THAT(audit[0], StartsWith("audit: client=ipv4:127.0.0.1:"));
  EXPECT_THAT(audit[0],
              HasSubstr(absl::StrCat(
                  " event=on_train_epoch_end seq=", first->event().seq(),
                  " subscription=stopper rejected: ")));
  EXPECT_THAT(audit[1],
              HasSubstr(absl::StrCat(
                  " event=on_train_epoch_end seq=", second->event().seq(),
                  " subscription=stopper applied: "
                  "stop_training=true (\"enough\")")));
}

TEST_F(GuardTest, JobStateChangesAreLogged) {
  Start();
  v1::Job blocked, failing, fine;
  ASSERT_TRUE(Submit(v1::MODE_TRAIN, {{"name", "block"}}, &blocked).ok());
  runner_.AwaitStarted(1);
  ASSERT_TRUE(Submit(v1::MODE_TRAIN, {{"name", "fail"}}, &failing).ok());
  ASSERT_TRUE(Submit(v1::MODE_VAL, {}, &fine).ok());
  grpc::ClientContext context;
  v1::CancelJobRequest cancel;
  cancel.set_id(blocked.id());
  v1::Job cancelled;
  ASSERT_TRUE(jobs_->CancelJob(&context, cancel, &cancelled).ok());
  testing::WaitJobDone(*server_, *jobs_, fine.id(), absl::Seconds(30));

  std::vector<std::string> b = LogOf(blocked.id());
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(b[0], "train QUEUED, position 1");
  EXPECT_EQ(b[1], "train RUNNING");
  EXPECT_THAT(b[2], StartsWith("train CANCELLED after "));
  EXPECT_THAT(b[2], HasSubstr(": CancelJob by ipv4:127.0.0.1:"));
  EXPECT_THAT(LogOf(failing.id()),
              Contains(::testing::AllOf(StartsWith("train FAILED after "),
                                        HasSubstr("dataset exploded"))));
  std::vector<std::string> f = LogOf(fine.id());
  ASSERT_EQ(f.size(), 3u);
  EXPECT_THAT(f[0], StartsWith("val QUEUED, position "));
  EXPECT_EQ(f[1], "val RUNNING");
  EXPECT_THAT(f[2], StartsWith("val SUCCEEDED in "));
  EXPECT_THAT(f[2], HasSubstr("mAP50 0.5"));
}

}  // namespace
}  // namespace yolohook::service
