// The gRPC services against a real server on 127.0.0.1 (a free port), with a
// fake engine: the protocol's guarantees, end to end through the wire.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "server/service/server.h"
#include "tests/testing/callback_stream.h"
#include "tests/testing/fake_runner.h"
#include "tests/testing/temp_dir.h"
#include "yolohook/v1/jobs.grpc.pb.h"
#include "yolohook/v1/predict.grpc.pb.h"

namespace yolohook::service {
namespace {

using testing::CallbackStream;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(); }

  void StartServer() {
    Server::Options options;
    options.listen = "127.0.0.1:0";
    options.data_dir = dir_.path();
    options.runner = &runner_;
    options.reply_timeout = absl::Milliseconds(300);
    auto server = Server::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    channel_ = grpc::CreateChannel(server_->address(),
                                   grpc::InsecureChannelCredentials());
    jobs_ = v1::JobService::NewStub(channel_);
    predict_ = v1::PredictService::NewStub(channel_);
  }

  // Subscribes and waits for the ack (skipping events of earlier
  // subscriptions).
  static void Subscribe(CallbackStream& stream, v1::Subscribe subscribe) {
    v1::ClientMessage m;
    *m.mutable_subscribe() = subscribe;
    ASSERT_TRUE(stream.Send(m));
    auto ack = stream.ReadUntil([](const v1::ServerMessage& m) {
      return m.has_subscribed() || m.has_error();
    });
    ASSERT_TRUE(ack.has_value());
    ASSERT_TRUE(ack->has_subscribed()) << ack->DebugString();
    EXPECT_EQ(ack->subscribed().subscription_id(), subscribe.subscription_id());
  }

  v1::Job Submit(v1::Mode mode, std::map<std::string, std::string> args,
                 std::map<std::string, std::string> labels) {
    v1::SubmitJobRequest request;
    request.set_mode(mode);
    request.mutable_args()->insert(args.begin(), args.end());
    request.mutable_labels()->insert(labels.begin(), labels.end());
    v1::Job job;
    grpc::ClientContext context;
    grpc::Status status = jobs_->SubmitJob(&context, request, &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return job;
  }

  v1::Job WaitDone(const std::string& id) {
    auto done = server_->manager().Wait(id, absl::Seconds(30));
    EXPECT_TRUE(done.ok()) << done.status();
    v1::Job job;
    grpc::ClientContext context;
    v1::GetJobRequest request;
    request.set_id(id);
    EXPECT_TRUE(jobs_->GetJob(&context, request, &job).ok());
    return job;
  }

  // Reads the events of `job_id` until `last` arrives.
  static std::vector<v1::Event> EventsUntil(CallbackStream& stream,
                                            const std::string& last) {
    std::vector<v1::Event> events;
    while (auto m = stream.Read()) {
      if (!m->has_event()) continue;
      events.push_back(m->event());
      if (m->event().name() == last) break;
    }
    return events;
  }

  testing::TempDir dir_;
  testing::FakeRunner runner_;
  std::unique_ptr<Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::JobService::Stub> jobs_;
  std::unique_ptr<v1::PredictService::Stub> predict_;
};

TEST_F(ServiceTest, ObserverSeesEveryEventInOrderWithGapFreeSeq) {
  CallbackStream stream(channel_);
  v1::Subscribe sub;
  sub.set_subscription_id("watch");
  (*sub.mutable_match_labels())["team"] = "a";
  Subscribe(stream, sub);
  v1::Job job = Submit(v1::MODE_TRAIN, {{"epochs", "2"}}, {{"team", "a"}});

  std::vector<v1::Event> events = EventsUntil(stream, "teardown");
  std::vector<std::string> names;
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].seq(), static_cast<int64_t>(i + 1));
    EXPECT_EQ(events[i].job_id(), job.id());
    EXPECT_EQ(events[i].subscription_id(), "watch");
    EXPECT_FALSE(events[i].reply_required());
    names.push_back(events[i].name());
  }
  std::vector<std::string> expected = {
      "on_pretrain_routine_start", "on_pretrain_routine_end", "on_train_start"};
  for (int epoch = 0; epoch < 2; ++epoch) {
    expected.insert(
        expected.end(),
        {"on_train_epoch_start", "on_train_batch_start", "on_train_batch_end",
         "on_train_batch_start", "on_train_batch_end", "on_train_epoch_end",
         "on_fit_epoch_end"});
  }
  expected.insert(expected.end(), {"on_train_end", "teardown"});
  EXPECT_THAT(names, ElementsAreArray(expected));
  ASSERT_TRUE(events[0].has_trainer());
  EXPECT_EQ(events[0].trainer().epochs(), 2);
  EXPECT_EQ(events[0].args().at("epochs"), "2");

  v1::Job done = WaitDone(job.id());
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.last_seq(), static_cast<int64_t>(events.size()));
}

TEST_F(ServiceTest, InterceptorStopsTrainingAfterTheEpoch) {
  CallbackStream stream(channel_);
  v1::Subscribe sub;
  sub.set_subscription_id("stopper");
  (*sub.mutable_match_labels())["run"] = "stop";
  sub.add_events("on_train_epoch_end");
  sub.set_mode(v1::SUBSCRIPTION_MODE_INTERCEPT);
  Subscribe(stream, sub);
  v1::Job job = Submit(v1::MODE_TRAIN, {{"epochs", "5"}}, {{"run", "stop"}});

  auto event = stream.ReadUntil(
      [](const v1::ServerMessage& m) { return m.has_event(); });
  ASSERT_TRUE(event.has_value());
  EXPECT_TRUE(event->event().reply_required());
  EXPECT_EQ(event->event().trainer().epoch(), 0);
  v1::ClientMessage reply;
  reply.mutable_reply()->set_subscription_id("stopper");
  reply.mutable_reply()->set_job_id(job.id());
  reply.mutable_reply()->set_seq(event->event().seq());
  reply.mutable_reply()->add_mutations()->mutable_stop_training()->set_reason(
      "enough");
  ASSERT_TRUE(stream.Send(reply));
  auto result = stream.ReadUntil(
      [](const v1::ServerMessage& m) { return m.has_reply_result(); });
  ASSERT_TRUE(result.has_value());
  EXPECT_TRUE(result->reply_result().applied())
      << result->reply_result().reason();

  v1::Job done = WaitDone(job.id());
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.metrics().at("epochs_completed"), 1);
}

TEST_F(ServiceTest, ReplacedResultsAreWhatPredictReturns) {
  CallbackStream stream(channel_);
  v1::Subscribe sub;
  sub.set_subscription_id("filter");
  sub.add_events("on_predict_batch_end");
  sub.set_mode(v1::SUBSCRIPTION_MODE_INTERCEPT);
  Subscribe(stream, sub);

  std::thread interceptor([&] {
    for (int i = 0; i < 2; ++i) {
      auto m = stream.ReadUntil(
          [](const v1::ServerMessage& x) { return x.has_event(); });
      ASSERT_TRUE(m.has_value());
      const v1::Event& e = m->event();
      ASSERT_EQ(e.predictor().results_size(), 1);
      v1::ClientMessage reply;
      reply.mutable_reply()->set_subscription_id("filter");
      reply.mutable_reply()->set_job_id(e.job_id());
      reply.mutable_reply()->set_seq(e.seq());
      v1::Result* r = reply.mutable_reply()
                          ->add_mutations()
                          ->mutable_replace_results()
                          ->add_results();
      *r = e.predictor().results(0);
      r->mutable_boxes(0)->set_cls(1);
      r->mutable_boxes(0)->set_conf(0.42f);
      ASSERT_TRUE(stream.Send(reply));
    }
  });
  v1::PredictRequest request;
  for (const char* name : {"a.jpg", "b.jpg"}) {
    v1::Image* image = request.add_images();
    image->set_name(name);
    image->set_data("fake engine: not decoded");
  }
  v1::PredictResponse response;
  grpc::ClientContext context;
  grpc::Status status = predict_->Predict(&context, request, &response);
  interceptor.join();
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.results_size(), 2);
  for (const v1::Result& r : response.results()) {
    ASSERT_EQ(r.boxes_size(), 1);
    EXPECT_EQ(r.boxes(0).cls(), 1);
    EXPECT_FLOAT_EQ(r.boxes(0).conf(), 0.42f);
  }
  EXPECT_EQ(response.results(1).path(), "b.jpg");
}

TEST_F(ServiceTest, BadRepliesAreRejectedWithReasonsAndTheStreamStaysOpen) {
  CallbackStream stream(channel_);
  v1::Subscribe sub;
  sub.set_subscription_id("bad");
  sub.add_events("on_train_epoch_end");
  sub.set_mode(v1::SUBSCRIPTION_MODE_INTERCEPT);
  sub.mutable_reply_timeout()->set_seconds(10);
  Subscribe(stream, sub);

  // A reply to a seq that awaits nothing.
  v1::ClientMessage spurious;
  spurious.mutable_reply()->set_subscription_id("bad");
  spurious.mutable_reply()->set_job_id("job-none");
  spurious.mutable_reply()->set_seq(999);
  ASSERT_TRUE(stream.Send(spurious));
  auto rejected = stream.ReadUntil(
      [](const v1::ServerMessage& m) { return m.has_reply_result(); });
  ASSERT_TRUE(rejected.has_value());
  EXPECT_FALSE(rejected->reply_result().applied());
  EXPECT_FALSE(rejected->reply_result().reason().empty());
  v1::Job job = Submit(v1::MODE_TRAIN, {{"epochs", "1"}}, {});

  // An unknown hyperparameter: rejected, nothing applied, the job goes on.
  auto event = stream.ReadUntil(
      [](const v1::ServerMessage& m) { return m.has_event(); });
  ASSERT_TRUE(event.has_value());
  v1::ClientMessage reply;
  reply.mutable_reply()->set_subscription_id("bad");
  reply.mutable_reply()->set_job_id(job.id());
  reply.mutable_reply()->set_seq(event->event().seq());
  (*reply.mutable_reply()
        ->add_mutations()
        ->mutable_set_hyperparameters()
        ->mutable_values())["lr"] = 0.1;
  ASSERT_TRUE(stream.Send(reply));
  auto result = stream.ReadUntil(
      [](const v1::ServerMessage& m) { return m.has_reply_result(); });
  ASSERT_TRUE(result.has_value());
  EXPECT_FALSE(result->reply_result().applied());
  EXPECT_THAT(result->reply_result().reason(), HasSubstr("lr0"));

  // A malformed subscription: an error on the stream, which stays usable.
  v1::ClientMessage bad_sub;
  bad_sub.mutable_subscribe()->set_subscription_id("typo");
  bad_sub.mutable_subscribe()->add_events("on_epoch_end");
  ASSERT_TRUE(stream.Send(bad_sub));
  auto error = stream.ReadUntil(
      [](const v1::ServerMessage& m) { return m.has_error(); });
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->error().subscription_id(), "typo");
  EXPECT_THAT(error->error().message(), HasSubstr("on_epoch_end"));

  EXPECT_EQ(WaitDone(job.id()).state(), v1::JOB_STATE_SUCCEEDED);
}

TEST_F(ServiceTest, SilentInterceptorIsPassedOrFailsTheJobByItsFailureMode) {
  CallbackStream stream(channel_);
  v1::Subscribe sub;
  sub.set_subscription_id("silent");
  (*sub.mutable_match_labels())["mode"] = "continue";
  sub.add_events("on_train_start");
  sub.set_mode(v1::SUBSCRIPTION_MODE_INTERCEPT);
  sub.set_failure_mode(v1::FAILURE_MODE_CONTINUE);
  Subscribe(stream, sub);
  v1::Job passed =
      Submit(v1::MODE_TRAIN, {{"epochs", "1"}}, {{"mode", "continue"}});
  EXPECT_EQ(WaitDone(passed.id()).state(), v1::JOB_STATE_SUCCEEDED);

  v1::Subscribe strict = sub;
  strict.set_subscription_id("strict");
  (*strict.mutable_match_labels())["mode"] = "fail";
  strict.set_failure_mode(v1::FAILURE_MODE_FAIL_JOB);
  Subscribe(stream, strict);
  v1::Job failed =
      Submit(v1::MODE_TRAIN, {{"epochs", "1"}}, {{"mode", "fail"}});
  v1::Job done = WaitDone(failed.id());
  EXPECT_EQ(done.state(), v1::JOB_STATE_FAILED);
  EXPECT_THAT(done.error(), HasSubstr("strict"));
  EXPECT_THAT(done.error(), HasSubstr("on_train_start"));
}

TEST_F(ServiceTest, LateObserverReplaysFromSeqAndRestartKeepsHistory) {
  v1::Job job = Submit(v1::MODE_TRAIN, {{"epochs", "1"}}, {});
  v1::Job done = WaitDone(job.id());
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);

  auto replay_all = [&](int64_t from) {
    CallbackStream stream(channel_);
    v1::Subscribe sub;
    sub.set_subscription_id("late");
    sub.add_job_ids(job.id());
    sub.set_from_seq(from);
    Subscribe(stream, sub);
    std::vector<int64_t> seqs;
    while (auto m = stream.Read(absl::Seconds(10))) {
      if (m->has_event()) seqs.push_back(m->event().seq());
      if (m->has_subscription_ended()) break;
    }
    return seqs;
  };
  std::vector<int64_t> expected;
  for (int64_t s = 3; s <= done.last_seq(); ++s) expected.push_back(s);
  EXPECT_EQ(replay_all(3), expected);

  // A new server on the same data directory keeps the job and its events.
  server_->Shutdown();
  server_.reset();
  StartServer();
  v1::Job again = WaitDone(job.id());
  EXPECT_EQ(again.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(replay_all(3), expected);
}

TEST_F(ServiceTest, BadSubmissionsAreExplained) {
  v1::SubmitJobRequest request;
  request.set_mode(v1::MODE_TRAIN);
  (*request.mutable_args())["epoch"] = "3";
  v1::Job job;
  grpc::ClientContext context;
  grpc::Status status = jobs_->SubmitJob(&context, request, &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("did you mean 'epochs'"));

  grpc::ClientContext get_context;
  v1::GetJobRequest get;
  get.set_id("job-missing");
  EXPECT_EQ(jobs_->GetJob(&get_context, get, &job).error_code(),
            grpc::StatusCode::NOT_FOUND);

  grpc::ClientContext predict_context;
  v1::PredictResponse response;
  EXPECT_EQ(predict_->Predict(&predict_context, v1::PredictRequest(), &response)
                .error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

}  // namespace
}  // namespace yolohook::service
