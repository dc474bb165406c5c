#include "server/events/mutations.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/wire/conversions.h"

namespace yolohook::events {
namespace {

using ::testing::HasSubstr;
using wire::ToWire;

class MutationTest : public ::testing::Test {
 protected:
  MutationTest() {
    trainer_.names = {"a", "b"};
    train_ctx_.event = Event::kOnTrainEpochEnd;
    train_ctx_.trainer = &trainer_;
    predictor_.paths = {"x.jpg", "y.jpg"};
    Result r;
    r.path = "x.jpg";
    r.names = {"circle", "square"};
    predictor_.results = {r, r};
    predictor_.results[1].path = "y.jpg";
    predict_ctx_.event = Event::kOnPredictPostprocessEnd;
    predict_ctx_.predictor = &predictor_;
  }

  static v1::Mutation Replace(std::vector<v1::Result> results) {
    v1::Mutation m;
    for (auto& r : results) *m.mutable_replace_results()->add_results() = r;
    return m;
  }
  static v1::Result OneBox(float x1, float y1, float x2, float y2, float conf,
                           int cls) {
    v1::Result r;
    r.set_path("new.jpg");
    r.set_orig_height(10);
    r.set_orig_width(20);
    v1::Box* b = r.add_boxes();
    b->set_x1(x1);
    b->set_y1(y1);
    b->set_x2(x2);
    b->set_y2(y2);
    b->set_conf(conf);
    b->set_cls(cls);
    return r;
  }

  TrainerState trainer_;
  EventContext train_ctx_;
  PredictorState predictor_;
  EventContext predict_ctx_;
};

TEST_F(MutationTest, ReplaceResultsValidAppliesAndFillsNames) {
  const v1::Mutation m = Replace({OneBox(1, 2, 3, 4, 0.5f, 1), v1::Result()});
  ASSERT_TRUE(ValidateMutation(m, predict_ctx_).ok());
  ApplyMutation(m, predict_ctx_);
  ASSERT_EQ(predictor_.results.size(), 2u);
  EXPECT_EQ(predictor_.results[0].path, "new.jpg");
  EXPECT_EQ(predictor_.results[0].orig_width, 20);
  ASSERT_EQ(predictor_.results[0].boxes.size(), 1u);
  EXPECT_EQ(predictor_.results[0].boxes[0].cls, 1);
  EXPECT_EQ(predictor_.results[0].names,
            (std::vector<std::string>{"circle", "square"}));
  EXPECT_TRUE(predictor_.results[1].boxes.empty());
}

TEST_F(MutationTest, ReplaceResultsRejections) {
  struct Case {
    v1::Mutation mutation;
    std::string message;
  };
  std::vector<Case> cases = {
      {Replace({OneBox(1, 2, 3, 4, 0.5f, 0)}), "1 results for a batch of 2"},
      {Replace({OneBox(5, 2, 3, 4, 0.5f, 0), v1::Result()}),
       "corners out of order"},
      {Replace({OneBox(1, 6, 3, 4, 0.5f, 0), v1::Result()}),
       "corners out of order"},
      {Replace({OneBox(1, 2, 3, 4, 1.5f, 0), v1::Result()}), "outside [0, 1]"},
      {Replace({OneBox(1, 2, 3, 4, 0.5f, 2), v1::Result()}),
       "cls 2 is not a class id"},
      {Replace({v1::Result(), OneBox(1, 2, 3, 4, 0.5f, -1)}),
       "results[1].boxes[0]: cls -1"},
  };
  for (const Case& c : cases) {
    absl::Status status = ValidateMutation(c.mutation, predict_ctx_);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.message));
  }
  EXPECT_EQ(predictor_.results[0].path, "x.jpg");  // untouched
  // Not at a predictor event without results, nor at trainer events.
  predict_ctx_.event = Event::kOnPredictStart;
  absl::Status status =
      ValidateMutation(Replace({v1::Result(), v1::Result()}), predict_ctx_);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("not allowed at on_predict_start"));
  EXPECT_FALSE(ValidateMutation(Replace({}), train_ctx_).ok());
}

// Every float of a box, with NaN and both infinities: each is refused and the
// error names the field.
TEST_F(MutationTest, ReplaceResultsRefusesEachNonFiniteField) {
  const float values[] = {std::numeric_limits<float>::quiet_NaN(),
                          std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()};
  const char* fields[] = {"x1", "y1", "x2", "y2", "conf"};
  for (int field = 0; field < 5; ++field) {
    for (float value : values) {
      float box[5] = {1, 2, 3, 4, 0.5f};
      box[field] = value;
      const v1::Mutation m = Replace(
          {v1::Result(), OneBox(box[0], box[1], box[2], box[3], box[4], 0)});
      const absl::Status status = ValidateMutation(m, predict_ctx_);
      EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument)
          << fields[field] << "=" << value;
      EXPECT_THAT(std::string(status.message()),
                  HasSubstr(std::string("results[1].boxes[0].") +
                            fields[field] + ": non-finite value"))
          << status;
    }
  }
  EXPECT_TRUE(predictor_.results[1].boxes.empty());  // untouched
}

TEST_F(MutationTest, LogMetrics) {
  v1::Mutation m;
  (*m.mutable_log_metrics()->mutable_metrics())["custom/x"] = 2.5;
  ASSERT_TRUE(ValidateMutation(m, train_ctx_).ok());
  ApplyMutation(m, train_ctx_);
  EXPECT_EQ(trainer_.logged_metrics.at("custom/x"), 2.5);

  v1::Mutation bad;
  (*bad.mutable_log_metrics()->mutable_metrics())["inf"] =
      std::numeric_limits<double>::infinity();
  EXPECT_THAT(std::string(ValidateMutation(bad, train_ctx_).message()),
              HasSubstr("log_metrics.metrics[\"inf\"]: non-finite"));
  v1::Mutation empty;
  (*empty.mutable_log_metrics()->mutable_metrics())[""] = 1;
  EXPECT_THAT(std::string(ValidateMutation(empty, train_ctx_).message()),
              HasSubstr("empty metric name"));
  EXPECT_EQ(ValidateMutation(m, predict_ctx_).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(MutationTest, StopTraining) {
  v1::Mutation m;
  m.mutable_stop_training()->set_reason("enough");
  EXPECT_THAT(
      std::string(ValidateMutation(m, predict_ctx_).message()),
      HasSubstr("stop_training is not allowed at on_predict_postprocess_end"));
  ASSERT_TRUE(ValidateMutation(m, train_ctx_).ok());
  ApplyMutation(m, train_ctx_);
  EXPECT_TRUE(trainer_.stop);
}

TEST_F(MutationTest, SetHyperparameters) {
  v1::Mutation m;
  (*m.mutable_set_hyperparameters()->mutable_values())["lr0"] = 0.005;
  ASSERT_TRUE(ValidateMutation(m, train_ctx_).ok())
      << ValidateMutation(m, train_ctx_);
  ApplyMutation(m, train_ctx_);
  EXPECT_DOUBLE_EQ(trainer_.hyperparameters.at("lr0"), 0.005);

  v1::Mutation unknown;
  (*unknown.mutable_set_hyperparameters()->mutable_values())["lr9"] = 0.1;
  absl::Status status = ValidateMutation(unknown, train_ctx_);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("values[\"lr9\"]"));
  v1::Mutation range;
  (*range.mutable_set_hyperparameters()->mutable_values())["lr0"] = -1;
  EXPECT_THAT(std::string(ValidateMutation(range, train_ctx_).message()),
              HasSubstr("lr0"));
  v1::Mutation nan;
  (*nan.mutable_set_hyperparameters()->mutable_values())["momentum"] =
      std::numeric_limits<double>::quiet_NaN();
  EXPECT_FALSE(ValidateMutation(nan, train_ctx_).ok());
  EXPECT_EQ(ValidateMutation(m, predict_ctx_).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(MutationTest, FailJobAnywhereAndEmptyMutation) {
  v1::Mutation m;
  m.mutable_fail_job()->set_reason("bad data");
  ASSERT_TRUE(ValidateMutation(m, predict_ctx_).ok());
  ApplyMutation(m, predict_ctx_);
  EXPECT_EQ(predict_ctx_.fail_reason, "bad data");
  EXPECT_EQ(ValidateMutation(v1::Mutation(), train_ctx_).code(),
            absl::StatusCode::kInvalidArgument);
}

// One table says what is allowed where; a mutation sent elsewhere is refused
// naming what that event allows.
TEST_F(MutationTest, AllowedMutationsPerEvent) {
  for (Event e : AllEvents()) {
    std::vector<std::string> names;
    for (v1::Mutation::KindCase kind : AllowedMutations(e))
      names.push_back(MutationName(kind));
    if (e == Event::kOnPredictPostprocessEnd ||
        e == Event::kOnPredictBatchEnd) {
      EXPECT_EQ(names,
                (std::vector<std::string>{"replace_results", "fail_job"}))
          << EventName(e);
    } else if (StageOf(e) == Stage::kTrainer) {
      EXPECT_EQ(names,
                (std::vector<std::string>{"log_metrics", "stop_training",
                                          "set_hyperparameters", "fail_job"}))
          << EventName(e);
    } else {
      EXPECT_EQ(names, std::vector<std::string>{"fail_job"}) << EventName(e);
    }
  }
  EventContext val;
  val.event = Event::kOnValBatchEnd;
  v1::Mutation stop;
  stop.mutable_stop_training();
  const absl::Status status = ValidateMutation(stop, val);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(status.message(),
            "stop_training is not allowed at on_val_batch_end (allowed there: "
            "fail_job)");
}

}  // namespace
}  // namespace yolohook::events
