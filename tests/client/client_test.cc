// The C++ client against a real server on 127.0.0.1 (a free port) with the
// fake engine: jobs, remote callbacks written like the engine's, reconnects.
#include "client/cpp/client.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <opencv2/imgcodecs.hpp>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "client/cpp/keep_confident.h"
#include "server/events/event_bus.h"
#include "server/service/server.h"
#include "server/wire/conversions.h"
#include "tests/testing/fake_runner.h"
#include "tests/testing/temp_dir.h"

namespace yolohook {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

// What a callback saw, for assertions from the test thread.
class Recorder {
 public:
  void Add(const v1::Event& event) {
    absl::MutexLock lock(&mu_);
    seqs_.push_back(event.seq());
    names_.push_back(event.name());
  }
  // Waits until `n` events were recorded.
  bool WaitFor(size_t n, absl::Duration timeout = absl::Seconds(30)) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return seqs_.size() >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
  }
  std::vector<int64_t> seqs() const {
    absl::MutexLock lock(&mu_);
    return seqs_;
  }
  std::vector<std::string> names() const {
    absl::MutexLock lock(&mu_);
    return names_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<int64_t> seqs_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> names_ ABSL_GUARDED_BY(mu_);
};

std::vector<int64_t> OneTo(int64_t n) {
  std::vector<int64_t> out;
  for (int64_t i = 1; i <= n; ++i) out.push_back(i);
  return out;
}

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StartServer("127.0.0.1:0");
    client_ = NewClient();
  }

  void TearDown() override {
    client_.reset();
    server_.reset();
  }

  void StartServer(const std::string& listen, size_t queue_limit = 1024) {
    service::Server::Options options;
    options.listen = listen;
    options.queue_limit = queue_limit;
    options.data_dir = dir_.path();
    options.runner = &runner_;
    options.reply_timeout = absl::Seconds(10);
    auto server = service::Server::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }

  std::unique_ptr<Client> NewClient(size_t max_pending = 4096) {
    Client::Options options;
    options.target = server_->address();
    options.max_pending_events = max_pending;
    options.reconnect_initial_backoff = absl::Milliseconds(50);
    options.reconnect_max_backoff = absl::Milliseconds(500);
    options.subscribe_timeout = absl::Seconds(3);
    options.on_error = [this](const absl::Status& status) {
      absl::MutexLock lock(&errors_mu_);
      errors_.push_back(std::string(status.message()));
    };
    return std::make_unique<Client>(options);
  }

  v1::Job Train(const std::map<std::string, std::string>& args,
                const std::map<std::string, std::string>& labels) {
    auto job = client_->Submit("train", args, labels);
    EXPECT_TRUE(job.ok()) << job.status();
    if (!job.ok()) return v1::Job();
    auto done = client_->Wait(job->id(), absl::Seconds(30));
    EXPECT_TRUE(done.ok()) << done.status();
    return done.ok() ? *done : v1::Job();
  }

  static v1::Image FakeImage(const std::string& name) {
    v1::Image image;
    image.set_name(name);
    image.set_data("not decoded by the fake engine");
    return image;
  }

  static CallbackOptions Intercept(const std::string& app) {
    CallbackOptions o;
    o.mode = CallbackOptions::kIntercept;
    o.match_labels["app"] = app;
    return o;
  }

  std::vector<std::string> errors() {
    absl::MutexLock lock(&errors_mu_);
    return errors_;
  }

  // Whether an error containing `text` is reported within `timeout` (the
  // server's answer to a reply may reach the client after the job ended).
  bool AwaitError(const std::string& text,
                  absl::Duration timeout = absl::Seconds(10)) {
    absl::MutexLock lock(&errors_mu_);
    auto reported = [this, &text]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(errors_mu_) {
      for (const std::string& e : errors_) {
        if (e.find(text) != std::string::npos) return true;
      }
      return false;
    };
    return errors_mu_.AwaitWithTimeout(absl::Condition(&reported), timeout);
  }

  testing::TempDir dir_;
  testing::FakeRunner runner_;
  std::unique_ptr<service::Server> server_;
  std::unique_ptr<Client> client_;
  absl::Mutex errors_mu_;
  std::vector<std::string> errors_ ABSL_GUARDED_BY(errors_mu_);
};

TEST_F(ClientTest, SubmitGetListCancel) {
  v1::Job done = Train({{"epochs", "1"}}, {{"team", "a"}});
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.mode(), v1::MODE_TRAIN);
  EXPECT_GT(done.last_seq(), 0);

  auto got = client_->Get(done.id());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->id(), done.id());

  Client::ListQuery query;
  query.labels["team"] = "a";
  auto listed = client_->List(query);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_THAT(listed->jobs(), SizeIs(1));
  EXPECT_EQ(listed->jobs(0).id(), done.id());
  query.labels["team"] = "b";
  listed = client_->List(query);
  ASSERT_TRUE(listed.ok());
  EXPECT_THAT(listed->jobs(), IsEmpty());

  // A finished job cannot be cancelled; the server's message comes through.
  auto cancelled = client_->Cancel(done.id());
  EXPECT_EQ(cancelled.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(cancelled.status().message(), HasSubstr(done.id()));

  // Hold a job in its first event so that the next one stays queued.
  absl::Notification held, release;
  ASSERT_TRUE(client_
                  ->AddCallback(
                      "on_train_start",
                      [&](EventContext&) {
                        held.Notify();
                        release.WaitForNotification();
                      },
                      Intercept("hold"))
                  .ok());
  auto first = client_->Submit("train", {{"epochs", "1"}}, {{"app", "hold"}});
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(held.WaitForNotificationWithTimeout(absl::Seconds(30)));
  auto second = client_->Submit("train", {{"epochs", "1"}});
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->state(), v1::JOB_STATE_QUEUED);
  auto cancel = client_->Cancel(second->id());
  ASSERT_TRUE(cancel.ok()) << cancel.status();
  EXPECT_EQ(cancel->state(), v1::JOB_STATE_CANCELLED);
  release.Notify();
  auto finished = client_->Wait(first->id(), absl::Seconds(30));
  ASSERT_TRUE(finished.ok()) << finished.status();
  EXPECT_EQ(finished->state(), v1::JOB_STATE_SUCCEEDED);
}

TEST_F(ClientTest, ErrorsCarryTheServersCodeAndMessage) {
  auto unknown = client_->Get("no-such-job");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  auto bad_arg = client_->Submit("train", {{"epoch", "3"}});
  EXPECT_EQ(bad_arg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_arg.status().message(), HasSubstr("epochs"));
  auto bad_mode = client_->Submit("fly", {});
  EXPECT_EQ(bad_mode.status().code(), absl::StatusCode::kInvalidArgument);

  Client::Options options;
  options.target = "127.0.0.1:1";
  options.rpc_timeout = absl::Seconds(5);
  Client nowhere(options);
  auto down = nowhere.Get("x");
  EXPECT_EQ(down.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(down.status().message(), HasSubstr("127.0.0.1:1"));
}

TEST_F(ClientTest, OversizedRequestsNameTheLimits) {
  Client::Options options;
  options.target = server_->address();
  options.max_message_bytes = 1 << 20;
  Client small(options);
  v1::Image image;
  image.set_name("big.jpg");
  image.set_data(std::string(2 << 20, 'x'));
  auto predicted = small.Predict({}, {image});
  EXPECT_EQ(predicted.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(predicted.status().message(), HasSubstr("--max_message_mb"));
  EXPECT_THAT(predicted.status().message(), HasSubstr("max_message_bytes"));
}

TEST_F(ClientTest, SubscribingWithoutAServerFailsAndStopReturns) {
  Client::Options options;
  options.target = "127.0.0.1:1";
  options.subscribe_timeout = absl::Milliseconds(300);
  options.on_error = [](const absl::Status&) {};
  Client nowhere(options);
  absl::Status s = nowhere.AddCallback("on_train_end", [](EventContext&) {});
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(s.message(), HasSubstr("127.0.0.1:1"));
  nowhere.Stop();  // returns although the stream still waits to connect
}

TEST_F(ClientTest, UnknownEventNameIsRejected) {
  absl::Status s =
      client_->AddCallback("on_train_epoch_ennd", [](EventContext&) {});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("on_train_epoch_ennd"));
  EXPECT_EQ(client_->AddCallback("on_train_end", nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ClientTest, UnknownJobIsRejectedByTheServer) {
  CallbackOptions o;
  o.job_ids = {"no-such-job"};
  absl::Status s = client_->AddCallback(
      "on_train_end", [](EventContext&) {}, o);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
}

TEST_F(ClientTest, ObserverSeesEveryEventOfAJobInOrder) {
  Recorder live;
  CallbackOptions o;
  o.match_labels["app"] = "observe";
  ASSERT_TRUE(client_
                  ->Subscribe(
                      {},
                      [&](EventContext& ctx) {
                        const v1::Event* e = Client::CurrentEvent();
                        ASSERT_NE(e, nullptr);
                        EXPECT_EQ(EventName(ctx.event), e->name());
                        EXPECT_EQ(StageOf(ctx.event) == Stage::kTrainer,
                                  ctx.trainer != nullptr);
                        // Observers cannot change anything.
                        if (ctx.trainer != nullptr) ctx.trainer->stop = true;
                        live.Add(*e);
                      },
                      o)
                  .ok());
  v1::Job job = Train({{"epochs", "2"}}, {{"app", "observe"}});
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.metrics().at("epochs_completed"), 2);
  ASSERT_TRUE(live.WaitFor(static_cast<size_t>(job.last_seq())));
  EXPECT_EQ(live.seqs(), OneTo(job.last_seq()));
  const std::vector<std::string> names = live.names();
  EXPECT_EQ(names.front(), "on_pretrain_routine_start");
  EXPECT_EQ(names.back(), "teardown");

  // A replay of the finished job ends by itself once delivered.
  Recorder replay;
  CallbackOptions r;
  r.job_ids = {job.id()};
  r.from_seq = 1;
  auto sub = client_->Subscribe(
      {}, [&](EventContext&) { replay.Add(*Client::CurrentEvent()); }, r);
  ASSERT_TRUE(sub.ok()) << sub.status();
  EXPECT_TRUE(client_->WaitEnded(*sub, absl::Seconds(30)).ok());
  EXPECT_EQ(replay.seqs(), OneTo(job.last_seq()));
  EXPECT_EQ(replay.names(), names);
}

TEST_F(ClientTest, UnsubscribedCallbackSeesNoMoreEvents) {
  Recorder seen;
  CallbackOptions o;
  o.match_labels["app"] = "unsub";
  auto sub = client_->Subscribe(
      {"on_train_end"},
      [&](EventContext&) { seen.Add(*Client::CurrentEvent()); }, o);
  ASSERT_TRUE(sub.ok()) << sub.status();
  Train({{"epochs", "1"}}, {{"app", "unsub"}});
  ASSERT_TRUE(seen.WaitFor(1));
  ASSERT_TRUE(client_->Unsubscribe(*sub).ok());
  EXPECT_TRUE(client_->WaitEnded(*sub, absl::Seconds(30)).ok());
  Train({{"epochs", "1"}}, {{"app", "unsub"}});
  EXPECT_THAT(seen.seqs(), SizeIs(1));
  EXPECT_EQ(client_->Unsubscribe("cb999").code(), absl::StatusCode::kNotFound);
}

TEST_F(ClientTest, InterceptorReplacesPredictResults) {
  ASSERT_TRUE(
      client_
          ->AddCallback(
              "on_predict_postprocess_end",
              [](EventContext& ctx) {
                for (Result& r : ctx.predictor->results) {
                  r.boxes[0].conf = 0.42f;
                  r.boxes.push_back(Box{3, 4, 5, 6, 0.3f, 1, std::nullopt});
                }
              },
              Intercept("edit"))
          .ok());
  auto response = client_->Predict({}, {FakeImage("a.jpg"), FakeImage("b.jpg")},
                                   {{"app", "edit"}});
  ASSERT_TRUE(response.ok()) << response.status();
  ASSERT_THAT(response->results(), SizeIs(2));
  for (const v1::Result& r : response->results()) {
    ASSERT_THAT(r.boxes(), SizeIs(2));
    EXPECT_FLOAT_EQ(r.boxes(0).conf(), 0.42f);
    EXPECT_EQ(r.boxes(1).cls(), 1);
  }
  // Jobs without the label are left alone.
  auto plain = client_->Predict({}, {FakeImage("c.jpg")});
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_THAT(plain->results(0).boxes(), SizeIs(1));
}

TEST_F(ClientTest, InterceptorStopsTraining) {
  ASSERT_TRUE(client_
                  ->AddCallback(
                      "on_train_epoch_end",
                      [](EventContext& ctx) { ctx.trainer->stop = true; },
                      Intercept("stop"))
                  .ok());
  v1::Job job = Train({{"epochs", "5"}}, {{"app", "stop"}});
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.metrics().at("epochs_completed"), 1);
}

TEST_F(ClientTest, InterceptorSetsHyperparametersAndLogsMetrics) {
  Recorder updates;
  CallbackOptions o;
  o.match_labels["app"] = "hyp";
  ASSERT_TRUE(client_
                  ->AddCallback(
                      "on_params_update",
                      [&](EventContext& ctx) {
                        EXPECT_DOUBLE_EQ(ctx.trainer->hyperparameters["lr0"],
                                         0.005);
                        updates.Add(*Client::CurrentEvent());
                      },
                      o)
                  .ok());
  ASSERT_TRUE(client_
                  ->AddCallback(
                      "on_train_epoch_end",
                      [](EventContext& ctx) {
                        ctx.trainer->hyperparameters["lr0"] = 0.005;
                        ctx.trainer->logged_metrics["custom/score"] = 7;
                      },
                      Intercept("hyp"))
                  .ok());
  v1::Job job = Train({{"epochs", "2"}}, {{"app", "hyp"}});
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_DOUBLE_EQ(job.metrics().at("lr0"), 0.005);
  EXPECT_DOUBLE_EQ(job.metrics().at("custom/score"), 7);
  EXPECT_TRUE(updates.WaitFor(1));
}

TEST_F(ClientTest, InterceptorFailsTheJob) {
  ASSERT_TRUE(client_
                  ->AddCallback(
                      "on_train_start",
                      [](EventContext& ctx) { ctx.Fail("dataset too small"); },
                      Intercept("fail"))
                  .ok());
  v1::Job job = Train({{"epochs", "2"}}, {{"app", "fail"}});
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_THAT(job.error(), HasSubstr("dataset too small"));
}

TEST_F(ClientTest, RejectedReplyIsReportedAndTheClientGoesOn) {
  ASSERT_TRUE(client_
                  ->AddCallback(
                      "on_train_epoch_end",
                      [](EventContext& ctx) {
                        ctx.trainer->hyperparameters["lr0"] = -1;
                      },
                      Intercept("bad"))
                  .ok());
  v1::Job job = Train({{"epochs", "1"}}, {{"app", "bad"}});
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.metrics().count("lr0"), 0u);
  EXPECT_TRUE(AwaitError("not applied"));
  EXPECT_EQ(Train({{"epochs", "1"}}, {}).state(), v1::JOB_STATE_SUCCEEDED);
}

TEST_F(ClientTest, ResumesAfterServerRestartWithoutLossOrDuplicates) {
  v1::Job job = Train({{"epochs", "400"}}, {});
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  ASSERT_GT(job.last_seq(), 100);

  // A slow observer with a short client-side queue: most events are still
  // on the server when it goes away.
  std::unique_ptr<Client> slow = NewClient(/*max_pending=*/2);
  absl::Notification release;
  Recorder seen;
  CallbackOptions o;
  o.job_ids = {job.id()};
  o.from_seq = 1;
  auto sub = slow->Subscribe(
      {},
      [&](EventContext&) {
        release.WaitForNotification();
        seen.Add(*Client::CurrentEvent());
      },
      o);
  ASSERT_TRUE(sub.ok()) << sub.status();

  const std::string listen = server_->address();
  server_.reset();
  StartServer(listen);
  release.Notify();

  ASSERT_TRUE(slow->WaitEnded(*sub, absl::Seconds(60)).ok());
  EXPECT_EQ(seen.seqs(), OneTo(job.last_seq()));
  slow.reset();
  bool reconnected = false;
  for (const std::string& e : errors()) {
    reconnected |= e.find("reconnecting") != std::string::npos;
  }
  EXPECT_TRUE(reconnected);
}

TEST_F(ClientTest, LaggingObserverResumesWithoutLossOrDuplicates) {
  // Subscriptions may queue only 8 events on the server: a slow observer of
  // a running job falls behind, is ended as lagging, and resumes.
  server_.reset();
  StartServer("127.0.0.1:0", /*queue_limit=*/8);
  client_ = NewClient();
  auto job = client_->Submit("train", {{"epochs", "400"}});
  ASSERT_TRUE(job.ok()) << job.status();
  std::unique_ptr<Client> slow = NewClient(/*max_pending=*/2);
  absl::Notification release;
  Recorder seen;
  CallbackOptions o;
  o.job_ids = {job->id()};
  o.from_seq = 1;
  auto sub = slow->Subscribe(
      {},
      [&](EventContext&) {
        release.WaitForNotification();
        seen.Add(*Client::CurrentEvent());
      },
      o);
  ASSERT_TRUE(sub.ok()) << sub.status();
  auto done = client_->Wait(job->id(), absl::Seconds(60));
  ASSERT_TRUE(done.ok()) << done.status();
  release.Notify();
  ASSERT_TRUE(slow->WaitEnded(*sub, absl::Seconds(60)).ok());
  EXPECT_EQ(seen.seqs(), OneTo(done->last_seq()));
}

TEST_F(ClientTest, KeepConfidentReplacesResults) {
  KeepConfidentOptions keep;
  keep.min_conf = 0.95f;
  ASSERT_TRUE(ParseRename("circle=ball", keep.renames).ok());
  std::vector<std::string> lines;
  absl::Mutex mu;
  ASSERT_TRUE(
      client_
          ->AddCallback(
              "on_predict_postprocess_end",
              [&](EventContext& ctx) {
                auto changed = KeepConfident(keep, ctx.predictor->results);
                absl::MutexLock lock(&mu);
                lines.insert(lines.end(), changed.begin(), changed.end());
              },
              Intercept("demo"))
          .ok());
  auto response = client_->Predict({}, {FakeImage("a.jpg")}, {{"app", "demo"}});
  ASSERT_TRUE(response.ok()) << response.status();
  ASSERT_THAT(response->results(), SizeIs(1));
  EXPECT_THAT(response->results(0).boxes(), IsEmpty());
  EXPECT_EQ(response->results(0).names().at(0), "ball");
  absl::MutexLock lock(&mu);
  EXPECT_THAT(lines, ElementsAre("a.jpg: kept 0 of 1 boxes (conf >= 0.95), "
                                 "circle -> ball"));
}

TEST(RemoteStateTest, ChangesBecomeMutations) {
  TrainerState t;
  t.epoch = 3;
  t.hyperparameters = {{"lr0", 0.01}, {"momentum", 0.9}};
  t.logged_metrics = {{"a", 1}};
  EventContext ctx;
  ctx.event = Event::kOnTrainEpochEnd;
  ctx.trainer = &t;
  const v1::Event event =
      wire::ToWire("job", 7, absl::Now(), ctx, {{"epochs", "5"}}, nullptr);

  RemoteEventState before, after;
  ASSERT_TRUE(StateFromEvent(event, before).ok());
  ASSERT_TRUE(StateFromEvent(event, after).ok());
  ASSERT_NE(after.ctx.trainer, nullptr);
  EXPECT_EQ(after.ctx.trainer->epoch, 3);
  EXPECT_EQ(after.ctx.trainer->args.at("epochs"), "5");
  EXPECT_THAT(DiffMutations(before, after), IsEmpty());

  after.ctx.trainer->stop = true;
  after.ctx.trainer->hyperparameters["lr0"] = 0.02;
  after.ctx.trainer->logged_metrics["b"] = 2;
  after.ctx.Fail("enough");
  std::vector<v1::Mutation> m = DiffMutations(before, after);
  ASSERT_THAT(m, SizeIs(4));
  EXPECT_TRUE(m[0].has_stop_training());
  ASSERT_THAT(m[1].set_hyperparameters().values(), SizeIs(1));
  EXPECT_DOUBLE_EQ(m[1].set_hyperparameters().values().at("lr0"), 0.02);
  ASSERT_THAT(m[2].log_metrics().metrics(), SizeIs(1));
  EXPECT_DOUBLE_EQ(m[2].log_metrics().metrics().at("b"), 2);
  EXPECT_EQ(m[3].fail_job().reason(), "enough");
}

TEST(RemoteStateTest, PredictorFramesAreDecoded) {
  cv::Mat image(6, 8, CV_8UC3, cv::Scalar(255, 0, 0));  // blue in BGR
  std::vector<uint8_t> jpeg;
  ASSERT_TRUE(cv::imencode(".png", image, jpeg));
  v1::Event event;
  event.set_name("on_predict_postprocess_end");
  v1::PredictorState* p = event.mutable_predictor();
  p->add_paths("a.png");
  v1::Image* frame = p->add_images();
  frame->set_name("a.png");
  frame->set_data(std::string(jpeg.begin(), jpeg.end()));
  Result r;
  r.path = "a.png";
  r.names = {"circle"};
  r.boxes.push_back(Box{1, 1, 2, 2, 0.5f, 0, std::nullopt});
  *p->add_results() = wire::ToWire(r);

  RemoteEventState before, after;
  ASSERT_TRUE(StateFromEvent(event, before).ok());
  ASSERT_TRUE(StateFromEvent(event, after).ok());
  ASSERT_THAT(after.predictor.frames, SizeIs(1));
  const FrameView& view = after.predictor.frames[0];
  EXPECT_EQ(view.width, 8);
  EXPECT_EQ(view.height, 6);
  ASSERT_NE(view.bgr, nullptr);
  EXPECT_EQ(view.bgr[0], 255);
  EXPECT_EQ(view.bgr[2], 0);

  after.ctx.predictor->results[0].boxes.clear();
  std::vector<v1::Mutation> m = DiffMutations(before, after);
  ASSERT_THAT(m, SizeIs(1));
  ASSERT_THAT(m[0].replace_results().results(), SizeIs(1));
  EXPECT_THAT(m[0].replace_results().results(0).boxes(), IsEmpty());

  event.set_name("on_predict_edn");
  EXPECT_EQ(StateFromEvent(event, after).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(KeepConfidentTest, KeepsConfidentBoxesAndReportsOnlyChanges) {
  Result r;
  r.path = "x.jpg";
  r.names = {"circle", "square"};
  r.boxes = {Box{0, 0, 1, 1, 0.9f, 0, std::nullopt},
             Box{0, 0, 1, 1, 0.2f, 1, std::nullopt}};
  std::vector<Result> results = {r, r};
  results[1].boxes.resize(1);
  KeepConfidentOptions keep;
  keep.min_conf = 0.5f;
  EXPECT_THAT(KeepConfident(keep, results),
              ElementsAre("x.jpg: kept 1 of 2 boxes (conf >= 0.5)"));
  EXPECT_THAT(results[0].boxes, SizeIs(1));
  std::map<std::string, std::string> renames;
  EXPECT_EQ(ParseRename("circle", renames).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseRename("=ball", renames).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace yolohook
