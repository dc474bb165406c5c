#include "server/callbacks/callbacks.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>

namespace yolohook {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(EventsTest, TwentyFiveUniqueNamesRoundTrip) {
  std::set<absl::string_view> names;
  for (Event e : AllEvents()) {
    names.insert(EventName(e));
    auto back = EventFromName(EventName(e));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, e);
  }
  EXPECT_EQ(names.size(), 25u);
  EXPECT_EQ(StageOf(Event::kTeardown), Stage::kTrainer);
  EXPECT_EQ(StageOf(Event::kOnValBatchEnd), Stage::kValidator);
  EXPECT_EQ(StageOf(Event::kOnPredictPostprocessEnd), Stage::kPredictor);
  EXPECT_EQ(StageOf(Event::kOnExportEnd), Stage::kExporter);
}

TEST(CallbacksTest, RunsInRegistrationOrder) {
  Callbacks callbacks;
  std::vector<int> order;
  ASSERT_TRUE(
      callbacks
          .Add("on_train_epoch_end", [&](EventContext&) { order.push_back(1); })
          .ok());
  ASSERT_TRUE(
      callbacks
          .Add("on_train_epoch_end", [&](EventContext&) { order.push_back(2); })
          .ok());
  callbacks.AddForAll([&](EventContext&) { order.push_back(3); });
  TrainerState state;
  EventContext ctx;
  ctx.event = Event::kOnTrainEpochEnd;
  ctx.trainer = &state;
  callbacks.Run(ctx);
  EXPECT_THAT(order, ElementsAre(1, 2, 3));
  EXPECT_EQ(callbacks.Count(Event::kOnTrainEpochEnd), 3u);
  EXPECT_EQ(callbacks.Count(Event::kOnTrainStart), 1u);
}

TEST(CallbacksTest, CallbacksMutateStateAndFail) {
  Callbacks callbacks;
  callbacks.Add(Event::kOnTrainEpochEnd,
                [](EventContext& ctx) { ctx.trainer->stop = true; });
  callbacks.Add(Event::kOnTrainEpochEnd,
                [](EventContext& ctx) { ctx.Fail("first"); });
  callbacks.Add(Event::kOnTrainEpochEnd,
                [](EventContext& ctx) { ctx.Fail("second"); });
  TrainerState state;
  EventContext ctx;
  ctx.event = Event::kOnTrainEpochEnd;
  ctx.trainer = &state;
  callbacks.Run(ctx);
  EXPECT_TRUE(state.stop);
  EXPECT_EQ(ctx.fail_reason, "first");
}

TEST(CallbacksTest, UnknownEventListsValidNames) {
  Callbacks callbacks;
  absl::Status s = callbacks.Add("on_epoch_end", [](EventContext&) {});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("on_epoch_end"));
  EXPECT_THAT(s.message(), HasSubstr("on_train_epoch_end"));
  EXPECT_FALSE(callbacks.Add("on_train_start", nullptr).ok());
}

TEST(CallbacksTest, ClearRemovesCallbacks) {
  Callbacks callbacks;
  callbacks.Add(Event::kOnTrainStart, [](EventContext&) {});
  callbacks.Add(Event::kOnValEnd, [](EventContext&) {});
  ASSERT_TRUE(callbacks.Clear("on_train_start").ok());
  EXPECT_EQ(callbacks.Count(Event::kOnTrainStart), 0u);
  EXPECT_EQ(callbacks.Count(Event::kOnValEnd), 1u);
  callbacks.ClearAll();
  EXPECT_EQ(callbacks.Count(Event::kOnValEnd), 0u);
  EXPECT_FALSE(callbacks.Clear("bogus").ok());
}

}  // namespace
}  // namespace yolohook
