#include "server/dashboard/event_feed.h"

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/callbacks/state.h"
#include "server/events/event_bus.h"

namespace yolohook::dashboard {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// One parsed SSE message.
struct Message {
  int64_t id = 0;
  std::string event;
  std::string data;
};

std::vector<Message> Parse(const std::string& text) {
  std::vector<Message> out;
  for (absl::string_view block : absl::StrSplit(text, "\n\n")) {
    if (block.empty()) continue;
    Message m;
    for (absl::string_view line : absl::StrSplit(block, '\n')) {
      if (absl::ConsumePrefix(&line, "id: ")) {
        EXPECT_TRUE(absl::SimpleAtoi(line, &m.id)) << line;
      } else if (absl::ConsumePrefix(&line, "event: ")) {
        m.event = std::string(line);
      } else if (absl::ConsumePrefix(&line, "data: ")) {
        if (!m.data.empty()) m.data += "\n";
        m.data += std::string(line);
      }
    }
    out.push_back(m);
  }
  return out;
}

std::vector<int64_t> Ids(const std::vector<Message>& messages) {
  std::vector<int64_t> out;
  for (const Message& m : messages) out.push_back(m.id);
  return out;
}

// Publishes trainer events for one job, one epoch each.
class Job {
 public:
  Job(events::EventBus& bus, std::string id) : bus_(bus), id_(std::move(id)) {
    ctx_.event = Event::kOnFitEpochEnd;
    ctx_.trainer = &state_;
    state_.epochs = 100;
    bus_.StartJob(id_, {}, {{"epochs", "100"}});
  }
  void Publish(int n) {
    for (int i = 0; i < n; ++i) {
      state_.metrics["metrics/mAP50(B)"] = 0.01 * state_.epoch;
      bus_.Publish(id_, ctx_);
      ++state_.epoch;
    }
  }
  void Finish() { bus_.FinishJob(id_); }

 private:
  events::EventBus& bus_;
  std::string id_;
  TrainerState state_;
  EventContext ctx_;
};

// Reads the feed until it ends; every chunk's messages, in order.
std::vector<Message> ReadAll(EventFeed& feed, bool* finished) {
  std::vector<Message> out;
  for (int i = 0; i < 1000; ++i) {
    EventFeed::Chunk chunk = feed.Next(absl::Seconds(10));
    for (Message& m : Parse(chunk.text)) out.push_back(std::move(m));
    if (chunk.done) {
      *finished = chunk.finished;
      return out;
    }
  }
  ADD_FAILURE() << "the feed never ended";
  return out;
}

TEST(SseMessageTest, FramesIdEventAndData) {
  EXPECT_EQ(SseMessage(7, "on_fit_epoch_end", "{\"a\":1}"),
            "id: 7\nevent: on_fit_epoch_end\ndata: {\"a\":1}\n\n");
  EXPECT_EQ(SseMessage(0, "end", "one\ntwo"),
            "event: end\ndata: one\ndata: two\n\n");
}

TEST(SseMessageTest, ParsesLastEventId) {
  EXPECT_EQ(*ParseLastEventId(""), 0);
  EXPECT_EQ(*ParseLastEventId(" 42 "), 42);
  EXPECT_FALSE(ParseLastEventId("-1").ok());
  EXPECT_THAT(ParseLastEventId("seven").status().message(),
              HasSubstr("\"seven\""));
}

TEST(EventFeedTest, EventJsonUsesProtoFieldNames) {
  v1::Event event;
  event.set_job_id("j");
  event.set_seq(3);
  event.set_name("on_fit_epoch_end");
  event.mutable_trainer()->set_epoch(0);
  const std::string json = EventJson(event);
  EXPECT_THAT(json, HasSubstr("\"job_id\":\"j\""));
  EXPECT_THAT(json, HasSubstr("\"seq\":\"3\""));
  EXPECT_THAT(json, HasSubstr("\"epoch\":0"));  // zero values are kept
  EXPECT_EQ(json.find('\n'), std::string::npos);
}

TEST(EventFeedTest, DeliversEveryEventOfAFinishedJobThenEnds) {
  events::EventBus bus({});
  Job job(bus, "j");
  job.Publish(5);
  job.Finish();
  EventFeed::Options options;
  options.job_id = "j";
  auto feed = EventFeed::Open(bus, options);
  ASSERT_TRUE(feed.ok()) << feed.status();
  bool finished = false;
  std::vector<Message> messages = ReadAll(**feed, &finished);
  EXPECT_TRUE(finished);
  EXPECT_THAT(Ids(messages), ElementsAre(1, 2, 3, 4, 5));
  EXPECT_EQ(messages[0].event, "on_fit_epoch_end");
  EXPECT_THAT(messages[2].data, HasSubstr("\"seq\":\"3\""));
  EXPECT_EQ((*feed)->last_seq(), 5);
}

TEST(EventFeedTest, ResumesExactlyAfterTheLastSeenSeq) {
  events::EventBus bus({});
  Job job(bus, "j");
  job.Publish(6);
  job.Finish();
  EventFeed::Options options;
  options.job_id = "j";
  options.after_seq = 4;
  auto feed = EventFeed::Open(bus, options);
  ASSERT_TRUE(feed.ok()) << feed.status();
  bool finished = false;
  EXPECT_THAT(Ids(ReadAll(**feed, &finished)), ElementsAre(5, 6));
  EXPECT_TRUE(finished);
}

TEST(EventFeedTest, FollowsLiveEventsAfterTheReplay) {
  events::EventBus bus({});
  Job job(bus, "j");
  job.Publish(2);
  EventFeed::Options options;
  options.job_id = "j";
  auto feed = EventFeed::Open(bus, options);
  ASSERT_TRUE(feed.ok()) << feed.status();
  std::thread publisher([&] {
    job.Publish(3);
    job.Finish();
  });
  bool finished = false;
  std::vector<Message> messages = ReadAll(**feed, &finished);
  publisher.join();
  EXPECT_THAT(Ids(messages), ElementsAre(1, 2, 3, 4, 5));
  EXPECT_TRUE(finished);
}

TEST(EventFeedTest, ASubscriptionThatLagsIsReopenedWithoutLoss) {
  events::EventBus::Options bus_options;
  bus_options.queue_limit = 3;
  events::EventBus bus(bus_options);
  Job job(bus, "j");
  EventFeed::Options options;
  options.job_id = "j";
  auto feed = EventFeed::Open(bus, options);
  ASSERT_TRUE(feed.ok()) << feed.status();
  job.Publish(20);  // nobody reads: the subscription falls behind
  job.Finish();
  bool finished = false;
  std::vector<Message> messages = ReadAll(**feed, &finished);
  std::vector<int64_t> want;
  for (int64_t i = 1; i <= 20; ++i) want.push_back(i);
  EXPECT_EQ(Ids(messages), want);
  EXPECT_TRUE(finished);
  EXPECT_GE(bus.stats().lagging_ended, 1);
}

TEST(EventFeedTest, NoEventsBeforeTheTimeoutIsAnEmptyChunk) {
  events::EventBus bus({});
  Job job(bus, "j");
  EventFeed::Options options;
  options.job_id = "j";
  auto feed = EventFeed::Open(bus, options);
  ASSERT_TRUE(feed.ok()) << feed.status();
  EventFeed::Chunk chunk = (*feed)->Next(absl::Milliseconds(20));
  EXPECT_EQ(chunk.text, "");
  EXPECT_FALSE(chunk.done);
}

TEST(EventFeedTest, ShutdownEndsTheFeedWithoutFinishing) {
  events::EventBus bus({});
  Job job(bus, "j");
  job.Publish(1);
  EventFeed::Options options;
  options.job_id = "j";
  auto feed = EventFeed::Open(bus, options);
  ASSERT_TRUE(feed.ok()) << feed.status();
  bus.Shutdown();
  bool finished = true;
  std::vector<Message> messages = ReadAll(**feed, &finished);
  EXPECT_FALSE(finished);
}

TEST(EventFeedTest, UnknownJobIsNotFound) {
  events::EventBus bus({});
  EventFeed::Options options;
  options.job_id = "nope";
  auto feed = EventFeed::Open(bus, options);
  EXPECT_EQ(feed.status().code(), absl::StatusCode::kNotFound);
}

TEST(EventFeedTest, UnknownEventNameIsInvalid) {
  events::EventBus bus({});
  Job job(bus, "j");
  EventFeed::Options options;
  options.job_id = "j";
  options.events = {"on_epoch_end"};
  auto feed = EventFeed::Open(bus, options);
  EXPECT_EQ(feed.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace yolohook::dashboard
