#include "server/events/event_bus.h"

#include <limits>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/wire/conversions.h"

namespace yolohook::events {
namespace {

using ::testing::HasSubstr;
using MessagePtr = std::shared_ptr<const v1::ServerMessage>;

// A clock that moves only when told.
class FakeClock {
 public:
  absl::Time Now() {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  std::function<absl::Time()> Fn() {
    return [this] { return Now(); };
  }

 private:
  absl::Mutex mu_;
  absl::Time now_ = absl::FromUnixSeconds(1000);
};

// An in-memory EventLog; Compact drops old events like a store would.
class FakeLog : public EventLog {
 public:
  absl::Status Append(const std::vector<const EventRecord*>& events) override {
    absl::MutexLock lock(&mu_);
    for (const EventRecord* event : events) {
      EventRecord stored = *event;
      stored.with_images = nullptr;
      events_[event->job_id][event->seq] = std::move(stored);
    }
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<EventRecord>> Read(const std::string& job_id,
                                                int64_t from_seq,
                                                int64_t limit) override {
    absl::MutexLock lock(&mu_);
    ++reads_;
    std::vector<EventRecord> out;
    auto& job = events_[job_id];
    for (auto it = job.lower_bound(from_seq);
         it != job.end() && static_cast<int64_t>(out.size()) < limit; ++it) {
      out.push_back(it->second);
    }
    return out;
  }
  absl::StatusOr<int64_t> LastSeq(const std::string& job_id) override {
    absl::MutexLock lock(&mu_);
    auto it = events_.find(job_id);
    return it == events_.end() || it->second.empty()
               ? 0
               : it->second.rbegin()->first;
  }
  void Compact(const std::string& job_id, int64_t below) {
    absl::MutexLock lock(&mu_);
    auto& job = events_[job_id];
    job.erase(job.begin(), job.lower_bound(below));
  }
  int reads() {
    absl::MutexLock lock(&mu_);
    return reads_;
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, std::map<int64_t, EventRecord>> events_;
  int reads_ = 0;
};

// What the bus hands a transport, parsed as a client would.
MessagePtr Parse(const OutgoingPtr& outgoing) {
  if (outgoing == nullptr) return nullptr;
  return std::make_shared<const v1::ServerMessage>(outgoing->Parse());
}

// A client stream that counts on_ready calls and waits on them.
class Client {
 public:
  explicit Client(EventBus& bus)
      : stream_(bus.Connect(
            [this] {
              absl::MutexLock lock(&mu_);
              ++ready_;
            },
            "test-client")) {}

  Stream& stream() { return *stream_; }

  // The next message, waiting (up to 10 s) for on_ready when none is queued.
  MessagePtr Await() {
    for (int i = 0; i < 1000; ++i) {
      int before;
      {
        absl::MutexLock lock(&mu_);
        before = ready_;
      }
      if (MessagePtr m = Parse(stream_->Next())) return m;
      absl::MutexLock lock(&mu_);
      auto changed = [this, before]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return ready_ > before;
      };
      mu_.AwaitWithTimeout(absl::Condition(&changed), absl::Seconds(10));
    }
    return nullptr;
  }

  // Waits for the next event message.
  v1::Event AwaitEvent() {
    while (MessagePtr m = Await()) {
      if (m->has_event()) return m->event();
    }
    ADD_FAILURE() << "no event arrived";
    return v1::Event();
  }

  std::vector<MessagePtr> Drain() {
    std::vector<MessagePtr> out;
    while (MessagePtr m = Parse(stream_->Next())) out.push_back(std::move(m));
    return out;
  }

  int ready() {
    absl::MutexLock lock(&mu_);
    return ready_;
  }

 private:
  absl::Mutex mu_;
  int ready_ ABSL_GUARDED_BY(mu_) = 0;
  std::shared_ptr<Stream> stream_;
};

v1::Subscribe Sub(const std::string& id, std::vector<std::string> job_ids = {},
                  std::vector<std::string> events = {}) {
  v1::Subscribe s;
  s.set_subscription_id(id);
  for (auto& j : job_ids) s.add_job_ids(j);
  for (auto& e : events) s.add_events(e);
  return s;
}

v1::Subscribe Intercept(const std::string& id, absl::Duration timeout,
                        v1::FailureMode mode = v1::FAILURE_MODE_CONTINUE,
                        int priority = 0) {
  v1::Subscribe s = Sub(id, {}, {"on_train_epoch_end", "on_predict_batch_end"});
  s.set_mode(v1::SUBSCRIPTION_MODE_INTERCEPT);
  *s.mutable_reply_timeout() = wire::ToDurationProto(timeout);
  s.set_failure_mode(mode);
  s.set_priority(priority);
  return s;
}

// Publishes trainer events on the job's thread.
struct TrainerJob {
  TrainerState state;
  EventContext ctx;
  TrainerJob() {
    ctx.event = Event::kOnTrainEpochEnd;
    ctx.trainer = &state;
  }
};

// (job, seq) of every event among `messages`.
std::vector<std::pair<std::string, int64_t>> Seqs(
    const std::vector<MessagePtr>& messages) {
  std::vector<std::pair<std::string, int64_t>> out;
  for (const auto& m : messages) {
    if (m->has_event()) out.emplace_back(m->event().job_id(), m->event().seq());
  }
  return out;
}

std::vector<std::pair<std::string, int64_t>> Range(const std::string& job,
                                                   int64_t from, int64_t to) {
  std::vector<std::pair<std::string, int64_t>> out;
  for (int64_t s = from; s <= to; ++s) out.emplace_back(job, s);
  return out;
}

v1::Reply ReplyTo(const v1::Event& event, std::vector<v1::Mutation> mutations) {
  v1::Reply r;
  r.set_subscription_id(event.subscription_id());
  r.set_job_id(event.job_id());
  r.set_seq(event.seq());
  for (auto& m : mutations) *r.add_mutations() = m;
  return r;
}

v1::Mutation Stop() {
  v1::Mutation m;
  m.mutable_stop_training()->set_reason("enough");
  return m;
}

v1::Mutation Log(const std::string& name, double value) {
  v1::Mutation m;
  (*m.mutable_log_metrics()->mutable_metrics())[name] = value;
  return m;
}

class EventBusTest : public ::testing::Test {
 protected:
  EventBus::Options Opts() {
    EventBus::Options o;
    o.now = clock_.Fn();
    return o;
  }
  FakeClock clock_;
};

TEST_F(EventBusTest, SeqIsGapFreePerJobAndObserverSeesAllInOrder) {
  EventBus bus(Opts());
  Client client(bus);
  ASSERT_TRUE(client.stream().Subscribe(Sub("all")).ok());
  bus.StartJob("a", {}, {{"epochs", "3"}});
  bus.StartJob("b", {}, {});
  TrainerJob job;
  EXPECT_EQ(bus.LastSeq("a"), 0);
  std::vector<int64_t> a, b;
  for (int i = 0; i < 5; ++i) {
    a.push_back(bus.Publish("a", job.ctx));
    if (i < 3) b.push_back(bus.Publish("b", job.ctx));
  }
  EXPECT_EQ(a, (std::vector<int64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(b, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(bus.LastSeq("a"), 5);
  EXPECT_EQ(bus.LastSeq("b"), 3);
  EXPECT_GT(client.ready(), 0);
  std::vector<MessagePtr> got = client.Drain();
  ASSERT_FALSE(got.empty());
  ASSERT_TRUE(got[0]->has_subscribed());
  EXPECT_EQ(got[0]->subscribed().events_size(), kNumEvents);
  std::vector<int64_t> seen_a, seen_b;
  for (const auto& m : got) {
    if (!m->has_event()) continue;
    EXPECT_EQ(m->event().subscription_id(), "all");
    EXPECT_EQ(m->event().name(), "on_train_epoch_end");
    (m->event().job_id() == "a" ? seen_a : seen_b).push_back(m->event().seq());
    if (m->event().job_id() == "a") {
      EXPECT_EQ(m->event().args().at("epochs"), "3");
    }
  }
  EXPECT_EQ(seen_a, a);
  EXPECT_EQ(seen_b, b);
  EXPECT_EQ(bus.stats().events_published, 8);
  EXPECT_EQ(bus.stats().messages_queued, 8);
}

TEST_F(EventBusTest, FiltersByEventNameAndSelectsJobs) {
  EventBus bus(Opts());
  bus.StartJob("a", {{"team", "x"}}, {});
  bus.StartJob("b", {{"team", "y"}}, {});
  Client client(bus);
  ASSERT_TRUE(
      client.stream().Subscribe(Sub("by_name", {}, {"on_train_start"})).ok());
  ASSERT_TRUE(client.stream().Subscribe(Sub("by_id", {"b"})).ok());
  v1::Subscribe by_label = Sub("by_label");
  (*by_label.mutable_match_labels())["team"] = "x";
  ASSERT_TRUE(client.stream().Subscribe(by_label).ok());
  ASSERT_TRUE(client.stream().Subscribe(Sub("all")).ok());
  bus.StartJob("c", {{"team", "x"}}, {});  // after subscribing

  TrainerJob job;
  job.ctx.event = Event::kOnTrainStart;
  bus.Publish("a", job.ctx);  // a1 start
  job.ctx.event = Event::kOnTrainEpochEnd;
  bus.Publish("b", job.ctx);  // b1 epoch end
  bus.Publish("c", job.ctx);  // c1 epoch end

  std::map<std::string, std::vector<std::pair<std::string, int64_t>>> by_sub;
  for (const auto& m : client.Drain()) {
    if (m->has_subscribed()) {
      if (m->subscribed().subscription_id() == "by_id") {
        EXPECT_EQ(m->subscribed().last_seq().at("b"), 0);
        EXPECT_EQ(m->subscribed().first_retained_seq().at("b"), 1);
        EXPECT_EQ(m->subscribed().last_seq().count("a"), 0u);
      }
      if (m->subscribed().subscription_id() == "by_name") {
        EXPECT_THAT(m->subscribed().events(),
                    ::testing::ElementsAre("on_train_start"));
      }
      continue;
    }
    if (m->has_event()) {
      by_sub[m->event().subscription_id()].emplace_back(m->event().job_id(),
                                                        m->event().seq());
    }
  }
  using P = std::pair<std::string, int64_t>;
  EXPECT_EQ(by_sub["by_name"], (std::vector<P>{{"a", 1}}));
  EXPECT_EQ(by_sub["by_id"], (std::vector<P>{{"b", 1}}));
  EXPECT_EQ(by_sub["by_label"], (std::vector<P>{{"a", 1}, {"c", 1}}));
  EXPECT_EQ(by_sub["all"], (std::vector<P>{{"a", 1}, {"b", 1}, {"c", 1}}));
}

TEST_F(EventBusTest, SubscribeErrors) {
  EventBus::Options o = Opts();
  o.max_subscriptions_per_stream = 2;
  EventBus bus(o);
  bus.StartJob("a", {}, {});
  Client client(bus);
  Stream& s = client.stream();
  EXPECT_EQ(s.Subscribe(Sub("")).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(s.Subscribe(Sub("x")).ok());
  absl::Status dup = s.Subscribe(Sub("x"));
  EXPECT_EQ(dup.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(dup.message()), HasSubstr("\"x\": duplicate"));
  absl::Status name = s.Subscribe(Sub("y", {}, {"on_train_epoch_ned"}));
  EXPECT_EQ(name.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(name.message()), HasSubstr("on_train_epoch_ned"));
  v1::Subscribe from = Sub("y");
  from.set_from_seq(1);
  EXPECT_THAT(std::string(s.Subscribe(from).message()),
              HasSubstr("from_seq requires job_ids"));
  v1::Subscribe negative = Sub("y");
  negative.mutable_reply_timeout()->set_seconds(-1);
  EXPECT_THAT(std::string(s.Subscribe(negative).message()),
              HasSubstr("negative reply_timeout"));
  absl::Status missing = s.Subscribe(Sub("y", {"nope"}));
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.message()), HasSubstr("job \"nope\""));
  ASSERT_TRUE(s.Subscribe(Sub("y")).ok());
  absl::Status full = s.Subscribe(Sub("z"));
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(full.message()), HasSubstr("\"z\""));
  EXPECT_EQ(s.Unsubscribe("nope").code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(s.Unsubscribe("y").ok());
  std::vector<MessagePtr> got = client.Drain();
  ASSERT_FALSE(got.empty());
  ASSERT_TRUE(got.back()->has_subscription_ended());
  EXPECT_EQ(got.back()->subscription_ended().reason(),
            v1::END_REASON_UNSUBSCRIBED);
  EXPECT_TRUE(s.Subscribe(Sub("z")).ok());  // room again
}

TEST_F(EventBusTest, InterceptorReplyStopsTraining) {
  EventBus bus(Opts());
  bus.StartJob("a", {}, {});
  Client interceptor(bus);
  ASSERT_TRUE(
      interceptor.stream().Subscribe(Intercept("i", absl::Seconds(30))).ok());
  TrainerJob job;
  std::thread t([&] { bus.Publish("a", job.ctx); });
  const v1::Event event = interceptor.AwaitEvent();
  EXPECT_TRUE(event.reply_required());
  EXPECT_EQ(event.subscription_id(), "i");
  EXPECT_EQ(event.seq(), 1);
  EXPECT_EQ(wire::FromTimestamp(event.deadline()),
            clock_.Now() + absl::Seconds(30));
  const v1::ReplyResult result =
      interceptor.stream().Reply(ReplyTo(event, {Stop()}));
  t.join();
  EXPECT_TRUE(result.applied()) << result.reason();
  EXPECT_TRUE(job.state.stop);
  EXPECT_FALSE(job.ctx.fail_reason.has_value());
  EXPECT_EQ(bus.stats().replies_applied, 1);
}

TEST_F(EventBusTest, StatsCountSentEventsRejectedMutationsAndRoundTrips) {
  EventBus::Options options = Opts();
  absl::Mutex mu;
  std::vector<absl::Duration> round_trips;
  options.on_round_trip = [&](absl::Duration d) {
    absl::MutexLock lock(&mu);
    round_trips.push_back(d);
  };
  EventBus bus(options);
  bus.StartJob("a", {}, {});
  Client interceptor(bus);
  Client observer(bus);
  ASSERT_TRUE(
      interceptor.stream().Subscribe(Intercept("i", absl::Seconds(30))).ok());
  ASSERT_TRUE(observer.stream().Subscribe(Sub("o", {"a"})).ok());
  EXPECT_EQ(bus.stats().intercept_subscriptions, 1);
  EXPECT_EQ(bus.stats().observer_subscriptions, 1);
  EXPECT_EQ(bus.stats().events_sent, 0);

  TrainerJob job;
  std::thread t([&] { bus.Publish("a", job.ctx); });
  const v1::Event first = interceptor.AwaitEvent();
  // Not finite: rejected, and the round trip ends.
  EXPECT_FALSE(
      interceptor.stream()
          .Reply(ReplyTo(first,
                         {Log("x", std::numeric_limits<double>::infinity())}))
          .applied());
  t.join();
  std::thread t2([&] { bus.Publish("a", job.ctx); });
  const v1::Event second = interceptor.AwaitEvent();
  EXPECT_TRUE(interceptor.stream().Reply(ReplyTo(second, {Stop()})).applied());
  t2.join();
  // A spurious reply is rejected but is no round trip and no bad mutation.
  EXPECT_FALSE(interceptor.stream().Reply(ReplyTo(second, {})).applied());
  observer.AwaitEvent();
  observer.AwaitEvent();

  BusStats stats = bus.stats();
  EXPECT_EQ(stats.events_sent, 4);  // two to the interceptor, two observed
  EXPECT_EQ(stats.replies_applied, 1);
  EXPECT_EQ(stats.replies_rejected, 2);
  EXPECT_EQ(stats.mutations_rejected, 1);
  {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(round_trips.size(), 2u);
    for (absl::Duration d : round_trips) EXPECT_GE(d, absl::ZeroDuration());
  }
  ASSERT_TRUE(observer.stream().Unsubscribe("o").ok());
  EXPECT_EQ(bus.stats().observer_subscriptions, 0);
  interceptor.stream().Close();
  EXPECT_EQ(bus.stats().intercept_subscriptions, 0);
}

TEST_F(EventBusTest, InterceptorReplacesResults) {
  EventBus bus(Opts());
  bus.StartJob("p", {}, {});
  Client interceptor(bus);
  ASSERT_TRUE(
      interceptor.stream().Subscribe(Intercept("i", absl::Seconds(30))).ok());
  PredictorState state;
  state.paths = {"a.jpg"};
  Result r;
  r.path = "a.jpg";
  r.names = {"circle"};
  r.boxes = {Box{0, 0, 1, 1, 0.5f, 0, std::nullopt}};
  state.results = {r};
  EventContext ctx;
  ctx.event = Event::kOnPredictBatchEnd;
  ctx.predictor = &state;
  std::thread t([&] { bus.Publish("p", ctx); });
  const v1::Event event = interceptor.AwaitEvent();
  ASSERT_EQ(event.predictor().results_size(), 1);
  v1::Mutation m;
  v1::Result* replaced = m.mutable_replace_results()->add_results();
  replaced->set_path("a.jpg");
  v1::Box* box = replaced->add_boxes();
  box->set_x1(2);
  box->set_y1(3);
  box->set_x2(4);
  box->set_y2(5);
  box->set_conf(0.75f);
  // A rejected reply changes nothing and ends the round trip.
  v1::Mutation bad = m;
  bad.mutable_replace_results()->mutable_results(0)->mutable_boxes(0)->set_cls(
      3);
  EXPECT_FALSE(interceptor.stream().Reply(ReplyTo(event, {m, bad})).applied());
  t.join();
  EXPECT_FLOAT_EQ(state.results[0].boxes[0].x1, 0);
  EXPECT_EQ(bus.stats().replies_rejected, 1);

  std::thread t2([&] { bus.Publish("p", ctx); });
  const v1::Event second = interceptor.AwaitEvent();
  const v1::ReplyResult ok = interceptor.stream().Reply(ReplyTo(second, {m}));
  t2.join();
  EXPECT_TRUE(ok.applied()) << ok.reason();
  ASSERT_EQ(state.results.size(), 1u);
  ASSERT_EQ(state.results[0].boxes.size(), 1u);
  EXPECT_FLOAT_EQ(state.results[0].boxes[0].x1, 2);
  EXPECT_FLOAT_EQ(state.results[0].boxes[0].conf, 0.75f);
  EXPECT_EQ(state.results[0].names, std::vector<std::string>{"circle"});
}

TEST_F(EventBusTest, InterceptorsChainByPriorityAndObserversSeeFinalState) {
  EventBus bus(Opts());
  bus.StartJob("a", {}, {});
  Client first(bus), second(bus), observer(bus);
  // Subscribed first but runs second (higher priority value).
  ASSERT_TRUE(second.stream()
                  .Subscribe(Intercept("late", absl::Seconds(30),
                                       v1::FAILURE_MODE_CONTINUE, 5))
                  .ok());
  ASSERT_TRUE(first.stream()
                  .Subscribe(Intercept("early", absl::Seconds(30),
                                       v1::FAILURE_MODE_CONTINUE, 1))
                  .ok());
  ASSERT_TRUE(observer.stream().Subscribe(Sub("watch")).ok());
  TrainerJob job;
  std::thread t([&] { bus.Publish("a", job.ctx); });
  const v1::Event e1 = first.AwaitEvent();
  EXPECT_EQ(e1.subscription_id(), "early");
  EXPECT_TRUE(second.Drain().size() == 1);  // only its ack: not consulted yet
  ASSERT_TRUE(first.stream().Reply(ReplyTo(e1, {Log("early/x", 1)})).applied());
  const v1::Event e2 = second.AwaitEvent();
  EXPECT_EQ(e2.subscription_id(), "late");
  EXPECT_EQ(e2.trainer().logged_metrics().at("early/x"), 1);
  ASSERT_TRUE(second.stream().Reply(ReplyTo(e2, {Stop()})).applied());
  t.join();
  std::vector<MessagePtr> got = observer.Drain();
  ASSERT_EQ(got.size(), 2u);
  ASSERT_TRUE(got[1]->has_event());
  EXPECT_FALSE(got[1]->event().reply_required());
  EXPECT_TRUE(got[1]->event().trainer().stop());
  EXPECT_EQ(got[1]->event().trainer().logged_metrics().at("early/x"), 1);
}

TEST_F(EventBusTest,
       TimeoutWithContinuePassesUnmodifiedAndLateReplyIsRejected) {
  EventBus bus(Opts());
  bus.StartJob("a", {}, {});
  Client interceptor(bus);
  ASSERT_TRUE(interceptor.stream()
                  .Subscribe(Intercept("i", absl::Milliseconds(50)))
                  .ok());
  TrainerJob job;
  EXPECT_EQ(bus.Publish("a", job.ctx), 1);
  EXPECT_FALSE(job.state.stop);
  EXPECT_FALSE(job.ctx.fail_reason.has_value());
  EXPECT_EQ(bus.stats().reply_timeouts, 1);
  const v1::Event event = interceptor.AwaitEvent();
  const v1::ReplyResult late =
      interceptor.stream().Reply(ReplyTo(event, {Stop()}));
  EXPECT_FALSE(late.applied());
  EXPECT_THAT(late.reason(), HasSubstr("seq 1"));
  EXPECT_EQ(bus.stats().replies_rejected, 1);
  EXPECT_FALSE(job.state.stop);
}

TEST_F(EventBusTest, TimeoutWithFailJobFailsTheJob) {
  EventBus bus(Opts());
  bus.StartJob("a", {}, {});
  Client interceptor(bus);
  ASSERT_TRUE(interceptor.stream()
                  .Subscribe(Intercept("guard", absl::Milliseconds(50),
                                       v1::FAILURE_MODE_FAIL_JOB))
                  .ok());
  TrainerJob job;
  bus.Publish("a", job.ctx);
  ASSERT_TRUE(job.ctx.fail_reason.has_value());
  EXPECT_EQ(*job.ctx.fail_reason,
            "interceptor guard did not reply to on_train_epoch_end seq 1 "
            "within 50ms");
}

TEST_F(EventBusTest, CloseAppliesFailureModeAtOnce) {
  EventBus bus(Opts());
  bus.StartJob("a", {}, {});
  Client interceptor(bus);
  ASSERT_TRUE(interceptor.stream()
                  .Subscribe(Intercept("guard", absl::Seconds(60),
                                       v1::FAILURE_MODE_FAIL_JOB))
                  .ok());
  TrainerJob job;
  std::thread t([&] { bus.Publish("a", job.ctx); });
  interceptor.AwaitEvent();
  interceptor.stream().Close();
  t.join();  // long before 60 s
  ASSERT_TRUE(job.ctx.fail_reason.has_value());
  EXPECT_EQ(*job.ctx.fail_reason,
            "interceptor guard disconnected before replying to "
            "on_train_epoch_end seq 1");
  EXPECT_EQ(bus.stats().reply_timeouts, 0);
}

TEST_F(EventBusTest, ExtendDeadlineOnceAndCapped) {
  EventBus::Options o = Opts();
  o.max_reply_timeout = absl::Seconds(20);
  EventBus bus(o);
  bus.StartJob("a", {}, {});
  Client interceptor(bus);
  ASSERT_TRUE(
      interceptor.stream().Subscribe(Intercept("i", absl::Seconds(10))).ok());
  TrainerJob job;
  std::thread t([&] { bus.Publish("a", job.ctx); });
  const v1::Event event = interceptor.AwaitEvent();
  v1::ExtendDeadline extend;
  extend.set_subscription_id("i");
  extend.set_job_id("a");
  extend.set_seq(event.seq());
  *extend.mutable_extension() = wire::ToDurationProto(absl::Seconds(100));
  const v1::ReplyResult granted = interceptor.stream().ExtendDeadline(extend);
  EXPECT_TRUE(granted.applied()) << granted.reason();
  EXPECT_EQ(wire::FromTimestamp(granted.deadline()),
            clock_.Now() + absl::Seconds(20));  // capped
  const v1::ReplyResult again = interceptor.stream().ExtendDeadline(extend);
  EXPECT_FALSE(again.applied());
  EXPECT_THAT(again.reason(), HasSubstr("already extended"));
  EXPECT_TRUE(interceptor.stream().Reply(ReplyTo(event, {Stop()})).applied());
  t.join();
  EXPECT_TRUE(job.state.stop);
}

TEST_F(EventBusTest, ExtendedDeadlineStillTimesOut) {
  EventBus::Options o = Opts();
  o.max_reply_timeout = absl::Milliseconds(150);
  EventBus bus(o);
  bus.StartJob("a", {}, {});
  Client interceptor(bus);
  ASSERT_TRUE(interceptor.stream()
                  .Subscribe(Intercept("i", absl::Milliseconds(50),
                                       v1::FAILURE_MODE_FAIL_JOB))
                  .ok());
  TrainerJob job;
  std::thread t([&] { bus.Publish("a", job.ctx); });
  const v1::Event event = interceptor.AwaitEvent();
  v1::ExtendDeadline extend;
  extend.set_subscription_id("i");
  extend.set_job_id("a");
  extend.set_seq(event.seq());
  *extend.mutable_extension() = wire::ToDurationProto(absl::Seconds(5));
  interceptor.stream().ExtendDeadline(extend);  // may race the 50 ms deadline
  t.join();
  ASSERT_TRUE(job.ctx.fail_reason.has_value());
  EXPECT_THAT(*job.ctx.fail_reason, HasSubstr("did not reply"));
}

TEST_F(EventBusTest, SpuriousReplyIsRejectedAndCounted) {
  EventBus bus(Opts());
  bus.StartJob("a", {}, {});
  Client interceptor(bus);
  ASSERT_TRUE(
      interceptor.stream().Subscribe(Intercept("i", absl::Seconds(30))).ok());
  v1::Reply reply;
  reply.set_subscription_id("i");
  reply.set_job_id("a");
  reply.set_seq(99);
  const v1::ReplyResult result = interceptor.stream().Reply(reply);
  EXPECT_FALSE(result.applied());
  EXPECT_THAT(result.reason(), HasSubstr("seq 99"));
  EXPECT_EQ(bus.stats().replies_rejected, 1);
}

TEST_F(EventBusTest, EveryReplyWritesOneAuditLine) {
  EventBus::Options o = Opts();
  absl::Mutex mu;
  std::vector<std::string> lines;
  o.audit_log = [&](absl::string_view line) {
    absl::MutexLock lock(&mu);
    lines.emplace_back(line);
  };
  EventBus bus(o);
  bus.StartJob("a", {}, {});
  Client interceptor(bus);
  ASSERT_TRUE(
      interceptor.stream().Subscribe(Intercept("i", absl::Seconds(30))).ok());
  TrainerJob job;
  job.state.hyperparameters = {{"lr0", 0.01}};

  std::thread t([&] { bus.Publish("a", job.ctx); });
  const v1::Event event = interceptor.AwaitEvent();
  v1::Mutation lr;
  (*lr.mutable_set_hyperparameters()->mutable_values())["lr0"] = 0.02;
  ASSERT_TRUE(interceptor.stream()
                  .Reply(ReplyTo(event, {Stop(), Log("custom/x", 1.5), lr}))
                  .applied());
  t.join();

  std::thread t2([&] { bus.Publish("a", job.ctx); });
  const v1::Event second = interceptor.AwaitEvent();
  v1::Mutation bad;
  (*bad.mutable_set_hyperparameters()->mutable_values())["lr"] = 0.02;
  EXPECT_FALSE(interceptor.stream().Reply(ReplyTo(second, {bad})).applied());
  t2.join();
  v1::Reply spurious = ReplyTo(second, {Stop()});
  spurious.set_seq(99);
  EXPECT_FALSE(interceptor.stream().Reply(spurious).applied());

  absl::MutexLock lock(&mu);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0],
            "[a] audit: client=test-client event=on_train_epoch_end seq=1 "
            "subscription=i applied: stop_training=true (\"enough\"); "
            "metrics+={custom/x:1.5}; hyperparameters lr0 0.01->0.02");
  EXPECT_THAT(lines[1], HasSubstr("[a] audit: client=test-client "
                                  "event=on_train_epoch_end seq=2 "
                                  "subscription=i rejected: mutation 0: "));
  EXPECT_THAT(lines[1], HasSubstr("lr"));
  EXPECT_THAT(lines[2], HasSubstr("seq=99 subscription=i rejected: no event"));
}

TEST_F(EventBusTest, InterceptorSubscribedAfterEventFiredIsNotConsulted) {
  EventBus bus(Opts());
  bus.StartJob("a", {}, {});
  Client first(bus), late(bus);
  ASSERT_TRUE(
      first.stream().Subscribe(Intercept("first", absl::Seconds(30))).ok());
  TrainerJob job;
  std::thread t([&] { bus.Publish("a", job.ctx); });
  const v1::Event event = first.AwaitEvent();
  ASSERT_TRUE(late.stream()
                  .Subscribe(Intercept("late", absl::Seconds(30),
                                       v1::FAILURE_MODE_FAIL_JOB, -1))
                  .ok());
  ASSERT_TRUE(first.stream().Reply(ReplyTo(event, {})).applied());
  t.join();
  std::vector<MessagePtr> got = late.Drain();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0]->has_subscribed());
  EXPECT_FALSE(job.ctx.fail_reason.has_value());
}

TEST_F(EventBusTest, BlockedObserverEndsLaggingAndResumesExactlyOnce) {
  EventBus::Options o = Opts();
  o.queue_limit = 4;
  EventBus bus(o);
  bus.StartJob("a", {}, {});
  Client slow(bus);
  ASSERT_TRUE(slow.stream().Subscribe(Sub("slow", {"a"})).ok());
  TrainerJob job;
  for (int i = 0; i < 10; ++i) bus.Publish("a", job.ctx);  // never blocks
  std::vector<MessagePtr> got = slow.Drain();
  ASSERT_EQ(got.size(), 5u);  // ack, 3 events, end
  EXPECT_EQ(Seqs(got), Range("a", 1, 3));
  ASSERT_TRUE(got.back()->has_subscription_ended());
  const v1::SubscriptionEnded& ended = got.back()->subscription_ended();
  EXPECT_EQ(ended.reason(), v1::END_REASON_LAGGING);
  EXPECT_EQ(ended.resume_seq().at("a"), 4);
  EXPECT_EQ(bus.stats().lagging_ended, 1);

  v1::Subscribe resume = Sub("slow", {"a"});
  resume.set_from_seq(ended.resume_seq().at("a"));
  ASSERT_TRUE(slow.stream().Subscribe(resume).ok());
  std::vector<MessagePtr> replayed;
  for (int i = 0; i < 4; ++i) replayed.push_back(slow.Await());  // ack, 4, 5, 6
  bus.Publish("a", job.ctx);  // 11, during the replay
  for (auto& m : slow.Drain()) replayed.push_back(m);
  bus.Publish("a", job.ctx);  // 12, live
  for (auto& m : slow.Drain()) replayed.push_back(m);
  EXPECT_TRUE(replayed[0]->has_subscribed());
  EXPECT_EQ(replayed[0]->subscribed().last_seq().at("a"), 10);
  EXPECT_EQ(Seqs(replayed), Range("a", 4, 12));
}

TEST_F(EventBusTest, ReplayBeyondMemoryReadsTheLogExactlyOnce) {
  FakeLog log;
  EventBus::Options o = Opts();
  o.memory_retention = 3;
  o.log = &log;
  EventBus bus(o);
  bus.StartJob("a", {}, {});
  TrainerJob job;
  for (int i = 0; i < 600; ++i) bus.Publish("a", job.ctx);
  Client client(bus);
  v1::Subscribe s = Sub("r", {"a"});
  s.set_from_seq(1);
  ASSERT_TRUE(client.stream().Subscribe(s).ok());
  std::vector<MessagePtr> got = client.Drain();
  ASSERT_TRUE(got[0]->has_subscribed());
  EXPECT_EQ(got[0]->subscribed().first_retained_seq().at("a"), 1);
  EXPECT_EQ(Seqs(got), Range("a", 1, 600));
  EXPECT_GE(log.reads(), 3);  // page by page
  bus.Publish("a", job.ctx);
  bus.FlushLog();  // live events reach observers once they are stored
  EXPECT_EQ(Seqs(client.Drain()), Range("a", 601, 601));
  bus.FinishJob("a");
  got = client.Drain();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]->subscription_ended().reason(), v1::END_REASON_JOBS_DONE);
}

TEST_F(EventBusTest, FinishedJobReplaysFromTheLog) {
  FakeLog log;
  EventBus::Options o = Opts();
  o.log = &log;
  EventBus bus(o);
  bus.StartJob("a", {}, {});
  TrainerJob job;
  for (int i = 0; i < 10; ++i) bus.Publish("a", job.ctx);
  bus.FinishJob("a");
  Client client(bus);
  v1::Subscribe s = Sub("r", {"a"}, {"on_train_epoch_end"});
  s.set_from_seq(3);
  ASSERT_TRUE(client.stream().Subscribe(s).ok());
  std::vector<MessagePtr> got = client.Drain();
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got[0]->subscribed().first_retained_seq().at("a"), 1);
  EXPECT_EQ(got[0]->subscribed().last_seq().at("a"), 10);
  EXPECT_EQ(Seqs(got), Range("a", 3, 10));
  EXPECT_GE(log.reads(), 1);
  EXPECT_EQ(got.back()->subscription_ended().reason(),
            v1::END_REASON_JOBS_DONE);
}

TEST_F(EventBusTest, FromSeqOlderThanRetainedIsCompacted) {
  FakeLog log;
  EventBus::Options o = Opts();
  o.memory_retention = 3;
  o.log = &log;
  EventBus bus(o);
  bus.StartJob("a", {}, {});
  TrainerJob job;
  for (int i = 0; i < 10; ++i) bus.Publish("a", job.ctx);
  bus.FlushLog();  // compact what is stored, not what is still queued
  log.Compact("a", 5);
  Client client(bus);
  v1::Subscribe s = Sub("r", {"a"});
  s.set_from_seq(2);
  ASSERT_TRUE(client.stream().Subscribe(s).ok());
  std::vector<MessagePtr> got = client.Drain();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0]->subscribed().first_retained_seq().at("a"), 5);
  ASSERT_TRUE(got[1]->has_subscription_ended());
  EXPECT_EQ(got[1]->subscription_ended().reason(), v1::END_REASON_COMPACTED);
  EXPECT_EQ(got[1]->subscription_ended().resume_seq().at("a"), 5);

  // Memory only: the oldest kept is the ring's first.
  EventBus::Options m = Opts();
  m.memory_retention = 3;
  EventBus memory(m);
  memory.StartJob("a", {}, {});
  for (int i = 0; i < 10; ++i) memory.Publish("a", job.ctx);
  Client c2(memory);
  ASSERT_TRUE(c2.stream().Subscribe(s).ok());
  got = c2.Drain();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1]->subscription_ended().reason(), v1::END_REASON_COMPACTED);
  EXPECT_EQ(got[1]->subscription_ended().resume_seq().at("a"), 8);
  s.set_from_seq(8);
  s.set_subscription_id("r2");
  ASSERT_TRUE(c2.stream().Subscribe(s).ok());
  EXPECT_EQ(Seqs(c2.Drain()), Range("a", 8, 10));
}

TEST_F(EventBusTest, StartJobContinuesTheLoggedSequence) {
  FakeLog log;
  EventBus::Options o = Opts();
  o.log = &log;
  TrainerJob job;
  {
    EventBus before(o);
    before.StartJob("a", {}, {});
    for (int i = 0; i < 5; ++i) before.Publish("a", job.ctx);
  }
  EventBus after(o);  // a restart
  Client client(after);
  v1::Subscribe s = Sub("r", {"a"});  // known only to the log
  s.set_from_seq(4);
  ASSERT_TRUE(client.stream().Subscribe(s).ok());
  after.StartJob("a", {}, {});
  EXPECT_EQ(after.LastSeq("a"), 5);
  EXPECT_EQ(after.Publish("a", job.ctx), 6);
  after.FlushLog();
  EXPECT_EQ(Seqs(client.Drain()), Range("a", 4, 6));
}

TEST_F(EventBusTest, FinishJobEndsIdSubscriptionsOnly) {
  EventBus bus(Opts());
  bus.StartJob("a", {{"k", "v"}}, {});
  Client client(bus);
  ASSERT_TRUE(client.stream().Subscribe(Sub("ids", {"a"})).ok());
  v1::Subscribe labels = Sub("labels");
  (*labels.mutable_match_labels())["k"] = "v";
  ASSERT_TRUE(client.stream().Subscribe(labels).ok());
  TrainerJob job;
  bus.Publish("a", job.ctx);
  bus.FinishJob("a");
  std::vector<v1::EndReason> ends;
  int events = 0;
  for (const auto& m : client.Drain()) {
    if (m->has_event()) ++events;
    if (m->has_subscription_ended()) {
      EXPECT_EQ(m->subscription_ended().subscription_id(), "ids");
      ends.push_back(m->subscription_ended().reason());
    }
  }
  EXPECT_EQ(events, 2);
  EXPECT_EQ(ends, std::vector<v1::EndReason>{v1::END_REASON_JOBS_DONE});
}

TEST_F(EventBusTest, ShutdownReleasesAPublishBlockedOnAnInterceptor) {
  EventBus bus(Opts());
  bus.StartJob("a", {}, {});
  Client interceptor(bus), observer(bus);
  ASSERT_TRUE(interceptor.stream()
                  .Subscribe(Intercept("guard", absl::Seconds(60),
                                       v1::FAILURE_MODE_FAIL_JOB))
                  .ok());
  ASSERT_TRUE(observer.stream().Subscribe(Sub("watch")).ok());
  TrainerJob job;
  std::thread t([&] { bus.Publish("a", job.ctx); });
  interceptor.AwaitEvent();
  bus.Shutdown();
  t.join();
  ASSERT_TRUE(job.ctx.fail_reason.has_value());
  EXPECT_THAT(*job.ctx.fail_reason, HasSubstr("shutting down"));
  std::vector<MessagePtr> got = interceptor.Drain();
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.back()->subscription_ended().reason(), v1::END_REASON_SHUTDOWN);
  got = observer.Drain();
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.back()->subscription_ended().reason(), v1::END_REASON_SHUTDOWN);
}

TEST_F(EventBusTest, ImagesOnlyForSubscriptionsThatAsk) {
  EventBus::Options o = Opts();
  int encodes = 0;
  o.encode_jpeg = [&encodes](const FrameView& f) {
    ++encodes;
    return "jpeg:" + std::to_string(f.width);
  };
  EventBus bus(o);
  bus.StartJob("p", {}, {});
  Client client(bus);
  v1::Subscribe with = Sub("with");
  with.set_include_images(true);
  ASSERT_TRUE(client.stream().Subscribe(with).ok());
  ASSERT_TRUE(client.stream().Subscribe(Sub("without")).ok());
  v1::Subscribe with2 = Sub("with2");
  with2.set_include_images(true);
  ASSERT_TRUE(client.stream().Subscribe(with2).ok());
  uint8_t pixels[3 * 4 * 2] = {};
  PredictorState state;
  state.paths = {"x.png"};
  state.frames = {FrameView{2, 4, 12, pixels}};
  EventContext ctx;
  ctx.event = Event::kOnPredictBatchStart;
  ctx.predictor = &state;
  bus.Publish("p", ctx);
  EXPECT_EQ(encodes, 1);
  std::map<std::string, int> images;
  for (const auto& m : client.Drain()) {
    if (m->has_event())
      images[m->event().subscription_id()] =
          m->event().predictor().images_size();
  }
  EXPECT_EQ(images["with"], 1);
  EXPECT_EQ(images["with2"], 1);
  EXPECT_EQ(images["without"], 0);
}

TEST_F(EventBusTest, InterruptedJobEndsItsSubscriptionsWithShutdownNotDone) {
  FakeLog log;
  EventBus::Options o = Opts();
  o.log = &log;
  EventBus bus(o);
  bus.StartJob("a", {}, {});
  bus.StartJob("b", {}, {});
  Client client(bus);
  ASSERT_TRUE(client.stream().Subscribe(Sub("both", {"a", "b"})).ok());
  ASSERT_TRUE(client.stream().Subscribe(Sub("all")).ok());
  TrainerJob job;
  for (int i = 0; i < 3; ++i) bus.Publish("a", job.ctx);
  bus.Publish("b", job.ctx);
  bus.FinishJob("b");
  // A server going away interrupts "a": it resumes later, so nothing ends.
  bus.FinishJob("a", EventBus::JobEnd::kInterrupted);
  for (const auto& m : client.Drain()) {
    EXPECT_FALSE(m->has_subscription_ended())
        << m->subscription_ended().ShortDebugString();
  }
  bus.Shutdown();
  std::map<std::string, v1::SubscriptionEnded> ends;
  for (const auto& m : client.Drain()) {
    if (m->has_subscription_ended())
      ends[m->subscription_ended().subscription_id()] = m->subscription_ended();
  }
  ASSERT_EQ(ends.size(), 2u);
  const v1::SubscriptionEnded& both = ends["both"];
  EXPECT_EQ(both.reason(), v1::END_REASON_SHUTDOWN);
  EXPECT_EQ(both.resume_seq().at("a"), 4);
  EXPECT_THAT(both.message(), HasSubstr("resuming when a server starts again"));
  EXPECT_THAT(both.message(), HasSubstr("a"));
  EXPECT_EQ(ends["all"].reason(), v1::END_REASON_SHUTDOWN);
}

TEST_F(EventBusTest, ResumedAttemptContinuesTheSeqAndMarksItsEvents) {
  FakeLog log;
  EventBus::Options o = Opts();
  o.log = &log;
  TrainerJob job;
  {
    EventBus first(o);
    first.StartJob("a", {}, {}, 1);
    Client client(first);
    ASSERT_TRUE(client.stream().Subscribe(Sub("w", {"a"})).ok());
    first.Publish("a", job.ctx);
    first.Publish("a", job.ctx);
    for (const auto& m : client.Drain()) {
      if (m->has_event()) {
        EXPECT_EQ(m->event().attempt(), 1);
      }
    }
    first.FinishJob("a", EventBus::JobEnd::kInterrupted);
  }
  EventBus second(o);  // the next server
  second.StartJob("a", {}, {}, 2);
  Client client(second);
  v1::Subscribe s = Sub("w", {"a"});
  s.set_from_seq(1);
  ASSERT_TRUE(client.stream().Subscribe(s).ok());
  EXPECT_EQ(second.Publish("a", job.ctx), 3);
  second.FinishJob("a");
  std::vector<std::pair<int64_t, int32_t>> seen;  // (seq, attempt)
  v1::EndReason end = v1::END_REASON_UNSPECIFIED;
  for (const auto& m : client.Drain()) {
    if (m->has_event())
      seen.emplace_back(m->event().seq(), m->event().attempt());
    if (m->has_subscription_ended()) end = m->subscription_ended().reason();
  }
  EXPECT_EQ(seen,
            (std::vector<std::pair<int64_t, int32_t>>{{1, 1}, {2, 1}, {3, 2}}));
  EXPECT_EQ(end, v1::END_REASON_JOBS_DONE);
}

TEST_F(EventBusTest, FinishedJobsLeaveMemoryAndStayReplayable) {
  FakeLog log;
  EventBus::Options o = Opts();
  o.log = &log;
  EventBus bus(o);
  Client watcher(bus);
  ASSERT_TRUE(watcher.stream().Subscribe(Sub("all")).ok());
  TrainerJob job;
  for (int j = 0; j < 50; ++j) {
    const std::string id = absl::StrCat("job-", j);
    bus.StartJob(id, {}, {});
    bus.Publish(id, job.ctx);
    bus.Publish(id, job.ctx);
    bus.FinishJob(id);
  }
  EXPECT_EQ(Seqs(watcher.Drain()).size(), 100u);
  EXPECT_EQ(bus.stats().jobs_in_memory, 0);
  // A late client still replays a forgotten job from the log; the job is held
  // while the subscription refers to it, and forgotten again after.
  Client late(bus);
  v1::Subscribe s = Sub("late", {"job-7"});
  s.set_from_seq(1);
  ASSERT_TRUE(late.stream().Subscribe(s).ok());
  std::vector<MessagePtr> got = late.Drain();
  EXPECT_EQ(Seqs(got), Range("job-7", 1, 2));
  EXPECT_EQ(got.back()->subscription_ended().reason(),
            v1::END_REASON_JOBS_DONE);
  EXPECT_EQ(bus.stats().jobs_in_memory, 0);
}

TEST_F(EventBusTest, OversizedAndUnknownFieldsAreRefusedWithoutEcho) {
  EventBus bus(Opts());
  Client client(bus);
  const std::string huge(1 << 20, 'x');
  absl::Status s = client.stream().Subscribe(Sub(huge));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("Subscribe.subscription_id"));
  EXPECT_THAT(s.message(), HasSubstr("limit of 128"));
  EXPECT_LT(s.message().size(), 400u);

  v1::Subscribe too_many = Sub("ids");
  for (int i = 0; i < 2000; ++i) too_many.add_job_ids(absl::StrCat("j", i));
  s = client.stream().Subscribe(too_many);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("job_ids: 2000 entries"));

  v1::Subscribe mode = Sub("mode");
  mode.set_mode(static_cast<v1::SubscriptionMode>(9));
  s = client.stream().Subscribe(mode);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("mode: unknown value 9"));
  v1::Subscribe failure = Sub("failure");
  failure.set_failure_mode(static_cast<v1::FailureMode>(-3));
  EXPECT_THAT(client.stream().Subscribe(failure).message(),
              HasSubstr("failure_mode: unknown value -3"));

  v1::Reply reply;
  reply.set_subscription_id("sub");
  reply.set_job_id("job\n[job-0] train SUCCEEDED" + huge);
  v1::ReplyResult result = client.stream().Reply(reply);
  EXPECT_FALSE(result.applied());
  EXPECT_TRUE(result.job_id().empty());  // not echoed
  EXPECT_THAT(result.reason(), HasSubstr("Reply.job_id"));
  EXPECT_LT(result.reason().size(), 400u);
  EXPECT_EQ(result.reason().find('\n'), std::string::npos);
}

TEST_F(EventBusTest, AuditLinesEscapeWhatTheClientSent) {
  std::vector<std::string> lines;
  EventBus::Options o = Opts();
  o.audit_log = [&lines](absl::string_view line) { lines.emplace_back(line); };
  EventBus bus(o);
  Client client(bus);
  v1::Reply reply;
  reply.set_subscription_id("s\n[job-1] train SUCCEEDED");
  reply.set_job_id("j\r\n");
  client.stream().Reply(reply);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].find('\n'), std::string::npos);
  EXPECT_EQ(lines[0].find('\r'), std::string::npos);
  EXPECT_THAT(lines[0], HasSubstr("subscription=s\\n[job-1]"));
}

}  // namespace
}  // namespace yolohook::events
