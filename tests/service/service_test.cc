// The gRPC services against a real server on 127.0.0.1 (a free port), with a
// fake engine: the protocol's guarantees, end to end through the wire.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/service/server.h"
#include "tests/testing/fake_runner.h"
#include "tests/testing/hook_stream.h"
#include "tests/testing/job_calls.h"
#include "tests/testing/server_test.h"
#include "tests/testing/temp_dir.h"
#include "yolohook/v1/info.grpc.pb.h"
#include "yolohook/v1/jobs.grpc.pb.h"
#include "yolohook/v1/predict.grpc.pb.h"

namespace yolohook::service {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using testing::HookStream;

class ServiceTest : public testing::ServerTest {
 protected:
  void SetUp() override { Start(); }

  void Start(size_t queue_limit = 1024) {
    Server::Options options;
    options.data_dir = dir_.path();
    options.reply_timeout = absl::Milliseconds(300);
    options.queue_limit = queue_limit;
    StartServer(options);
  }

  // A channel whose streams get a fixed 64 KiB flow-control window (no BDP
  // probing, which would let it grow to megabytes): once a client stops
  // reading, the server's writes stall after that much.
  std::shared_ptr<grpc::Channel> NarrowChannel() const {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 << 10);
    // Its own connection, not one shared with channel_.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return grpc::CreateCustomChannel(server_->address(),
                                     grpc::InsecureChannelCredentials(), args);
  }

  // Subscribes and returns the ack.
  static v1::Subscribed Subscribe(HookStream& stream,
                                  const v1::Subscribe& subscribe) {
    std::optional<v1::ServerMessage> ack = stream.Subscribe(subscribe);
    EXPECT_TRUE(ack.has_value());
    if (!ack.has_value()) return {};
    EXPECT_TRUE(ack->has_subscribed()) << ack->DebugString();
    return ack->subscribed();
  }

  // Replies to `event` with `mutations`, expecting them applied.
  static void Reply(HookStream& stream, const v1::Event& event,
                    const std::vector<v1::Mutation>& mutations) {
    std::optional<v1::ReplyResult> result = stream.Reply(event, mutations);
    ASSERT_TRUE(result.has_value());
    EXPECT_TRUE(result->applied()) << result->reason();
  }

  // Reads until a subscription ends; returns the seqs of the events of
  // `job_id` seen before, and how it ended.
  static std::pair<std::vector<int64_t>, v1::SubscriptionEnded> ReadUntilEnded(
      HookStream& stream, const std::string& job_id) {
    std::vector<int64_t> seqs;
    while (auto m = stream.Read()) {
      if (m->has_event() && m->event().job_id() == job_id)
        seqs.push_back(m->event().seq());
      if (m->has_subscription_ended()) return {seqs, m->subscription_ended()};
    }
    ADD_FAILURE() << "the subscription did not end; " << seqs.size()
                  << " events seen, the last "
                  << (seqs.empty() ? 0 : seqs.back());
    return {seqs, {}};
  }

  static v1::Box MakeBox(float x1, float y1, float x2, float y2, float conf,
                         int cls) {
    v1::Box b;
    b.set_x1(x1);
    b.set_y1(y1);
    b.set_x2(x2);
    b.set_y2(y2);
    b.set_conf(conf);
    b.set_cls(cls);
    return b;
  }

  v1::Job Submit(v1::Mode mode, const std::map<std::string, std::string>& args,
                 const std::map<std::string, std::string>& labels) {
    return testing::SubmitJob(*jobs_, mode, args, labels);
  }

  v1::Job WaitDone(const std::string& id) {
    return testing::WaitJobDone(*server_, *jobs_, id, absl::Seconds(30));
  }

  // Reads the events of `job_id` until `last` arrives.
  static std::vector<v1::Event> EventsUntil(HookStream& stream,
                                            const std::string& last) {
    std::vector<v1::Event> events;
    while (auto m = stream.Read()) {
      if (!m->has_event()) continue;
      events.push_back(m->event());
      if (m->event().name() == last) break;
    }
    return events;
  }
};

// The catalogue comes from the tables the server enforces: the events in
// Ultralytics' order with what may be changed at each, the arguments with
// their ranges, and the limits the server was started with.
TEST_F(ServiceTest, ServerInfoReportsTheCatalogueAndLimits) {
  grpc::ClientContext context;
  v1::ServerInfo info;
  grpc::Status status =
      info_->GetServerInfo(&context, v1::GetServerInfoRequest(), &info);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(info.api(), "v1");
  EXPECT_FALSE(info.version().empty());
  ASSERT_EQ(info.events_size(), kNumEvents);
  for (int i = 0; i < kNumEvents; ++i) {
    EXPECT_EQ(info.events(i).name(), EventName(AllEvents()[i]));
  }
  const v1::EventInfo& postprocess =
      info.events(static_cast<int>(Event::kOnPredictPostprocessEnd));
  EXPECT_EQ(postprocess.stage(), "predictor");
  EXPECT_THAT(postprocess.mutations(),
              ::testing::ElementsAre("replace_results", "fail_job"));
  EXPECT_THAT(postprocess.modes(), ::testing::ElementsAre(v1::MODE_PREDICT));
  const v1::EventInfo& val_end =
      info.events(static_cast<int>(Event::kOnValEnd));
  EXPECT_THAT(val_end.modes(),
              ::testing::ElementsAre(v1::MODE_TRAIN, v1::MODE_VAL));
  EXPECT_THAT(val_end.mutations(), ::testing::ElementsAre("fail_job"));
  std::map<std::string, v1::ArgumentInfo> args;
  for (const v1::ArgumentInfo& a : info.arguments()) args[a.name()] = a;
  ASSERT_TRUE(args.count("lr0"));
  EXPECT_TRUE(args["lr0"].hyperparameter());
  EXPECT_EQ(args["lr0"].type(), "float");
  EXPECT_EQ(args["lr0"].min(), 0);
  EXPECT_EQ(args["lr0"].max(), 10);
  EXPECT_EQ(args["epochs"].default_value(), "100");
  EXPECT_FALSE(args["epochs"].hyperparameter());
  EXPECT_EQ(args["model"].type(), "string");
  EXPECT_EQ(info.limits().at("queue_limit"), 1024);
  EXPECT_EQ(info.limits().at("default_reply_timeout_ms"), 300);
  EXPECT_EQ(info.limits().at("max_id_bytes"), 128);
  EXPECT_FALSE(info.auth());
}

TEST_F(ServiceTest, ObserverSeesEveryEventInOrderWithGapFreeSeq) {
  HookStream stream(channel_);
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
  HookStream stream(channel_);
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
  HookStream stream(channel_);
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
  HookStream stream(channel_);
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
  HookStream stream(channel_);
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
    HookStream stream(channel_);
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
  Start();
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

TEST_F(ServiceTest, BlockedObserverEndsLaggingAndResumesWithoutLossOrRepeat) {
  Start(/*queue_limit=*/8);
  HookStream stream(NarrowChannel());
  v1::Subscribe sub;
  sub.set_subscription_id("slow");
  (*sub.mutable_match_labels())["run"] = "long";
  Subscribe(stream, sub);

  // The observer stops reading. The job's events (each carrying the job's
  // arguments, here a long name) are megabytes, far more than the stream's
  // flow-control window: the subscription's queue fills.
  stream.Pause();
  const int epochs = 300;
  v1::Job job = Submit(v1::MODE_TRAIN,
                       {{"epochs", absl::StrCat(epochs)},
                        {"name", "long-" + std::string(2000, 'x')}},
                       {{"run", "long"}});
  v1::Job done = WaitDone(job.id());
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  const int64_t last = testing::FakeRunner::TrainEvents(epochs);
  ASSERT_EQ(done.last_seq(), last);

  stream.Resume();
  std::vector<int64_t> seen;
  v1::SubscriptionEnded ended;
  std::tie(seen, ended) = ReadUntilEnded(stream, job.id());
  EXPECT_EQ(ended.subscription_id(), "slow");
  ASSERT_EQ(ended.reason(), v1::END_REASON_LAGGING) << ended.DebugString();
  ASSERT_EQ(ended.resume_seq().count(job.id()), 1u);
  const int64_t resume = ended.resume_seq().at(job.id());
  EXPECT_LT(resume, last);
  std::vector<int64_t> expected;
  for (int64_t s = 1; s < resume; ++s) expected.push_back(s);
  EXPECT_EQ(seen, expected);

  // Resuming from resume_seq, on the same stream or a new one, delivers every
  // remaining event once, in order, then JOBS_DONE.
  for (expected.clear(); static_cast<int64_t>(expected.size()) < last;)
    expected.push_back(static_cast<int64_t>(expected.size()) + 1);
  auto resume_on = [&](HookStream& s, const char* which) {
    SCOPED_TRACE(which);
    v1::Subscribe again;
    again.set_subscription_id("slow");
    again.add_job_ids(job.id());
    again.set_from_seq(resume);
    Subscribe(s, again);
    std::vector<int64_t> rest;
    v1::SubscriptionEnded end;
    std::tie(rest, end) = ReadUntilEnded(s, job.id());
    EXPECT_EQ(end.reason(), v1::END_REASON_JOBS_DONE) << end.DebugString();
    std::vector<int64_t> all = seen;
    all.insert(all.end(), rest.begin(), rest.end());
    EXPECT_EQ(all, expected);
  };
  resume_on(stream, "the same stream");
  HookStream fresh(channel_);
  resume_on(fresh, "a new stream");
}

// A client that acknowledges what it takes gets at most the stream's window
// beyond that, whatever its HTTP/2 window: when it stalls, events wait on the
// server, in the subscription's bounded queue, which ends LAGGING there; the
// job is not held back.
TEST_F(ServiceTest,
       AcknowledgingObserverThatStallsEndsLaggingWhateverItsWindow) {
  Server::Options options;
  options.data_dir = dir_.path();
  options.queue_limit = 8;
  options.stream_window = 16;
  StartServer(options);
  // Default channel settings: BDP probing grows the windows to megabytes.
  HookStream stream(channel_);
  v1::ClientMessage ack;
  ack.mutable_ack()->set_taken(0);
  ASSERT_TRUE(stream.Send(ack));
  v1::Subscribe sub;
  sub.set_subscription_id("stalled");
  (*sub.mutable_match_labels())["run"] = "stall";
  Subscribe(stream, sub);  // message 1

  const int epochs = 50;
  v1::Job job = Submit(v1::MODE_TRAIN, {{"epochs", absl::StrCat(epochs)}},
                       {{"run", "stall"}});
  v1::Job done = WaitDone(job.id());
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(server_->bus().stats().lagging_ended, 1);
  // Unacknowledged, at most the window reached the client: 16 messages, the
  // Subscribed among them, however many events the job fired.
  std::vector<int64_t> seen;
  std::optional<v1::SubscriptionEnded> ended;
  int received = 1;
  while (auto m = stream.Read(absl::Milliseconds(300))) {
    ++received;
    if (m->has_subscription_ended()) {
      ended = m->subscription_ended();
      break;
    }
    ASSERT_TRUE(m->has_event()) << m->DebugString();
    seen.push_back(m->event().seq());
  }
  EXPECT_LE(received, 16);
  EXPECT_GT(testing::FakeRunner::TrainEvents(epochs), 100);

  // Taking them opens the window: the rest of what was queued, then the end.
  if (!ended.has_value()) {
    ack.mutable_ack()->set_taken(received);
    ASSERT_TRUE(stream.Send(ack));
    std::vector<int64_t> rest;
    std::tie(rest, ended) = ReadUntilEnded(stream, job.id());
    seen.insert(seen.end(), rest.begin(), rest.end());
  }
  ASSERT_EQ(ended->reason(), v1::END_REASON_LAGGING) << ended->DebugString();
  const int64_t resume = ended->resume_seq().at(job.id());
  std::vector<int64_t> expected;
  for (int64_t s = 1; s < resume; ++s) expected.push_back(s);
  EXPECT_EQ(seen, expected);
  EXPECT_LE(resume, 16 + 8);

  // An Ack for more than was sent is refused, naming the field.
  ack.mutable_ack()->set_taken(100000);
  ASSERT_TRUE(stream.Send(ack));
  auto error = stream.ReadUntil(
      [](const v1::ServerMessage& m) { return m.has_error(); });
  ASSERT_TRUE(error.has_value());
  EXPECT_THAT(error->error().message(),
              HasSubstr("Ack.taken: 100000 is more than the"));
}

TEST_F(ServiceTest, ObserverResumingWhileTheJobRunsGoesFromReplayToLive) {
  Start(/*queue_limit=*/8);
  // An interceptor holds the job at on_train_end, after thousands of events.
  HookStream holder(channel_);
  v1::Subscribe hold;
  hold.set_subscription_id("hold");
  (*hold.mutable_match_labels())["run"] = "held";
  hold.add_events("on_train_end");
  hold.set_mode(v1::SUBSCRIPTION_MODE_INTERCEPT);
  hold.set_failure_mode(v1::FAILURE_MODE_FAIL_JOB);
  hold.mutable_reply_timeout()->set_seconds(30);
  Subscribe(holder, hold);
  HookStream stream(NarrowChannel());
  v1::Subscribe sub;
  sub.set_subscription_id("slow");
  (*sub.mutable_match_labels())["run"] = "held";
  Subscribe(stream, sub);

  stream.Pause();
  const int epochs = 300;
  v1::Job job = Submit(v1::MODE_TRAIN,
                       {{"epochs", absl::StrCat(epochs)},
                        {"name", "held-" + std::string(2000, 'x')}},
                       {{"run", "held"}});
  auto held = holder.ReadUntil(
      [](const v1::ServerMessage& m) { return m.has_event(); });
  ASSERT_TRUE(held.has_value());
  const int64_t last = testing::FakeRunner::TrainEvents(epochs);
  ASSERT_EQ(held->event().seq(), last - 1);  // teardown follows

  stream.Resume();
  std::vector<int64_t> seen;
  v1::SubscriptionEnded ended;
  std::tie(seen, ended) = ReadUntilEnded(stream, job.id());
  ASSERT_EQ(ended.reason(), v1::END_REASON_LAGGING) << ended.DebugString();
  const int64_t resume = ended.resume_seq().at(job.id());

  // Resume, and release the job while the replay runs: the replay hands over
  // to live delivery without losing or repeating an event.
  v1::Subscribe again;
  again.set_subscription_id("slow");
  again.add_job_ids(job.id());
  again.set_from_seq(resume);
  Subscribe(stream, again);
  Reply(holder, held->event(), {});
  std::vector<int64_t> rest;
  v1::SubscriptionEnded end;
  std::tie(rest, end) = ReadUntilEnded(stream, job.id());
  EXPECT_EQ(end.reason(), v1::END_REASON_JOBS_DONE) << end.DebugString();
  EXPECT_EQ(WaitDone(job.id()).state(), v1::JOB_STATE_SUCCEEDED);
  seen.insert(seen.end(), rest.begin(), rest.end());
  std::vector<int64_t> expected;
  for (int64_t s = 1; s <= last; ++s) expected.push_back(s);
  EXPECT_EQ(seen, expected);
}

TEST_F(ServiceTest,
       InterceptorsChainByPriorityAndPredictReturnsTheCombination) {
  HookStream early(channel_);
  HookStream late(channel_);
  HookStream watcher(channel_);
  v1::Subscribe sub;
  (*sub.mutable_match_labels())["chain"] = "yes";
  sub.add_events("on_predict_postprocess_end");
  sub.set_mode(v1::SUBSCRIPTION_MODE_INTERCEPT);
  sub.set_failure_mode(v1::FAILURE_MODE_FAIL_JOB);
  sub.mutable_reply_timeout()->set_seconds(20);
  // Subscribed in the opposite order of their priorities.
  sub.set_subscription_id("late");
  sub.set_priority(20);
  Subscribe(late, sub);
  sub.set_subscription_id("early");
  sub.set_priority(10);
  Subscribe(early, sub);
  v1::Subscribe watch;
  watch.set_subscription_id("watch");
  (*watch.mutable_match_labels())["chain"] = "yes";
  watch.add_events("on_predict_postprocess_end");
  Subscribe(watcher, watch);

  const v1::Box fake_box = MakeBox(1, 2, 10, 12, 0.9f, 0);
  const v1::Box early_box = MakeBox(3, 4, 20, 24, 0.8f, 1);
  const v1::Box late_box = MakeBox(5, 6, 7, 8, 0.7f, 1);
  auto same = [](const v1::Box& a, const v1::Box& b) {
    return a.x1() == b.x1() && a.y1() == b.y1() && a.x2() == b.x2() &&
           a.y2() == b.y2() && a.conf() == b.conf() && a.cls() == b.cls();
  };
  // Each adds a box to what it sees.
  auto intercept = [&](HookStream& stream, const v1::Box& add,
                       std::vector<v1::Box>* saw) {
    auto m = stream.ReadUntil(
        [](const v1::ServerMessage& x) { return x.has_event(); });
    ASSERT_TRUE(m.has_value());
    ASSERT_TRUE(m->event().reply_required());
    ASSERT_EQ(m->event().predictor().results_size(), 1);
    const v1::Result& seen = m->event().predictor().results(0);
    saw->assign(seen.boxes().begin(), seen.boxes().end());
    v1::Mutation mutation;
    v1::Result* r = mutation.mutable_replace_results()->add_results();
    *r = seen;
    *r->add_boxes() = add;
    Reply(stream, m->event(), {mutation});
  };
  std::vector<v1::Box> early_saw;
  std::vector<v1::Box> late_saw;
  std::thread early_thread([&] { intercept(early, early_box, &early_saw); });
  std::thread late_thread([&] { intercept(late, late_box, &late_saw); });

  v1::PredictRequest request;
  (*request.mutable_labels())["chain"] = "yes";
  v1::Image* image = request.add_images();
  image->set_name("a.jpg");
  image->set_data("fake engine: not decoded");
  v1::PredictResponse response;
  grpc::ClientContext context;
  grpc::Status status = predict_->Predict(&context, request, &response);
  early_thread.join();
  late_thread.join();
  ASSERT_TRUE(status.ok()) << status.error_message();

  // The lower priority ran first; the other saw its box.
  ASSERT_EQ(early_saw.size(), 1u);
  EXPECT_TRUE(same(early_saw[0], fake_box));
  ASSERT_EQ(late_saw.size(), 2u);
  EXPECT_TRUE(same(late_saw[1], early_box));
  const std::vector<v1::Box> combined = {fake_box, early_box, late_box};
  ASSERT_EQ(response.results_size(), 1);
  ASSERT_EQ(response.results(0).boxes_size(), 3);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(same(response.results(0).boxes(i), combined[i]))
        << response.results(0).boxes(i).DebugString();
  }
  auto observed = watcher.ReadUntil(
      [](const v1::ServerMessage& x) { return x.has_event(); });
  ASSERT_TRUE(observed.has_value());
  EXPECT_FALSE(observed->event().reply_required());
  EXPECT_EQ(observed->event().job_id(), response.job_id());
  ASSERT_EQ(observed->event().predictor().results_size(), 1);
  const v1::Result& final_result = observed->event().predictor().results(0);
  ASSERT_EQ(final_result.boxes_size(), 3);
  for (int i = 0; i < 3; ++i)
    EXPECT_TRUE(same(final_result.boxes(i), combined[i]));
}

TEST_F(ServiceTest,
       InterceptorSeesOnlyEventsAfterItsAckAndObserversSeeItsWork) {
  // The job fires its first event, then waits.
  v1::Job job =
      Submit(v1::MODE_TRAIN, {{"epochs", "1"}, {"name", "block-tag"}}, {});
  runner_.AwaitStarted(1);

  HookStream interceptor(channel_);
  v1::Subscribe tag;
  tag.set_subscription_id("tag");
  tag.add_job_ids(job.id());
  tag.set_mode(v1::SUBSCRIPTION_MODE_INTERCEPT);
  tag.set_failure_mode(v1::FAILURE_MODE_FAIL_JOB);
  tag.mutable_reply_timeout()->set_seconds(20);
  v1::Subscribed ack = Subscribe(interceptor, tag);
  ASSERT_EQ(ack.last_seq().count(job.id()), 1u);
  EXPECT_EQ(ack.last_seq().at(job.id()), 1);

  HookStream observer(channel_);
  v1::Subscribe watch;
  watch.set_subscription_id("watch");
  watch.add_job_ids(job.id());
  watch.set_from_seq(1);
  Subscribe(observer, watch);

  // The interceptor logs each event's seq as a metric.
  std::vector<int64_t> intercepted;
  std::thread replies([&] {
    while (true) {
      auto m = interceptor.ReadUntil(
          [](const v1::ServerMessage& x) { return x.has_event(); });
      ASSERT_TRUE(m.has_value());
      ASSERT_TRUE(m->event().reply_required());
      intercepted.push_back(m->event().seq());
      v1::Mutation mutation;
      (*mutation.mutable_log_metrics()->mutable_metrics())["remote/seq"] =
          static_cast<double>(m->event().seq());
      Reply(interceptor, m->event(), {mutation});
      if (m->event().name() == "teardown") return;
    }
  });
  runner_.Release("block-tag");
  std::vector<v1::Event> events = EventsUntil(observer, "teardown");
  replies.join();
  EXPECT_EQ(WaitDone(job.id()).state(), v1::JOB_STATE_SUCCEEDED);

  const int64_t last = testing::FakeRunner::TrainEvents(1);
  std::vector<int64_t> expected;
  for (int64_t s = 2; s <= last; ++s) expected.push_back(s);
  EXPECT_EQ(intercepted, expected);  // never the event fired before the ack
  ASSERT_EQ(events.size(), static_cast<size_t>(last));
  for (const v1::Event& e : events) {
    const auto& logged = e.trainer().logged_metrics();
    if (e.seq() == 1) {
      EXPECT_EQ(logged.count("remote/seq"), 0u);
    } else {
      ASSERT_EQ(logged.count("remote/seq"), 1u) << e.name();
      EXPECT_EQ(logged.at("remote/seq"), static_cast<double>(e.seq()));
    }
  }
}

}  // namespace
}  // namespace yolohook::service
