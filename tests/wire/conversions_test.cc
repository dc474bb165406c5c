#include "server/wire/conversions.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace yolohook::wire {
namespace {

Result SampleResult() {
  Result r;
  r.path = "a.jpg";
  r.orig_height = 48;
  r.orig_width = 64;
  Box b1{1.5f, 2.5f, 10.f, 20.f, 0.9f, 1, std::nullopt};
  Box b2{0.f, 0.f, 5.f, 5.f, 0.25f, 0, int64_t{7}};
  r.boxes = {b1, b2};
  r.names = {"circle", "square"};
  r.speed = {1.0, 2.0, 3.0};
  return r;
}

TEST(ConversionsTest, ResultRoundTrip) {
  const Result r = SampleResult();
  const v1::Result wire = ToWire(r);
  ASSERT_EQ(wire.boxes_size(), 2);
  EXPECT_FALSE(wire.boxes(0).has_track_id());
  EXPECT_EQ(wire.boxes(1).track_id(), 7);
  EXPECT_EQ(wire.names().at(1), "square");
  const Result back = FromWire(wire);
  EXPECT_EQ(back.path, "a.jpg");
  EXPECT_EQ(back.orig_height, 48);
  EXPECT_EQ(back.orig_width, 64);
  ASSERT_EQ(back.boxes.size(), 2u);
  EXPECT_FLOAT_EQ(back.boxes[0].x1, 1.5f);
  EXPECT_FLOAT_EQ(back.boxes[0].y2, 20.f);
  EXPECT_FLOAT_EQ(back.boxes[0].conf, 0.9f);
  EXPECT_EQ(back.boxes[0].cls, 1);
  EXPECT_FALSE(back.boxes[0].track_id.has_value());
  EXPECT_EQ(back.boxes[1].track_id, 7);
  EXPECT_EQ(back.names, r.names);
  EXPECT_DOUBLE_EQ(back.speed.postprocess_ms, 3.0);
}

TEST(ConversionsTest, NamesMapFillsGaps) {
  v1::Result r;
  (*r.mutable_names())[0] = "a";
  (*r.mutable_names())[2] = "c";
  EXPECT_EQ(NamesFromWire(r.names()), (std::vector<std::string>{"a", "", "c"}));
  v1::Result w;
  *w.mutable_names() = NamesToWire({"x", "y"});
  ASSERT_EQ(w.names_size(), 2);
  EXPECT_EQ(w.names().at(0), "x");
  EXPECT_EQ(w.names().at(1), "y");
}

TEST(ConversionsTest, TrainerStateRoundTrip) {
  TrainerState s;
  s.epoch = 2;
  s.epochs = 5;
  s.start_epoch = 1;
  s.batch_index = 3;
  s.num_batches = 4;
  s.iteration = 11;
  s.batch_size = 8;
  s.imgsz = 64;
  s.loss = 1.25;
  s.loss_items = {0.5, 0.25, 0.5};
  s.tloss = {0.6, 0.3, 0.4};
  s.loss_names = {"box_loss", "cls_loss", "dfl_loss"};
  s.metrics = {{"metrics/mAP50(B)", 0.5}};
  s.fitness = 0.4;
  s.best_fitness = 0.45;
  s.lr = {{"lr/pg0", 0.01}};
  s.epoch_time = 2.5;
  s.elapsed = 9.0;
  s.save_dir = "runs/x";
  s.last = "runs/x/weights/last.pt";
  s.best = "runs/x/weights/best.pt";
  s.names = {"circle"};
  s.stop = true;
  s.logged_metrics = {{"extra", 3.0}};
  s.hyperparameters = {{"lr0", 0.02}};
  EventContext ctx;
  ctx.event = Event::kOnTrainEpochEnd;
  ctx.trainer = &s;
  const v1::Event event = ToWire("job", 4, absl::FromUnixMillis(1500), ctx,
                                 {{"epochs", "5"}}, nullptr);
  EXPECT_EQ(event.job_id(), "job");
  EXPECT_EQ(event.seq(), 4);
  EXPECT_EQ(event.name(), "on_train_epoch_end");
  EXPECT_EQ(event.time().seconds(), 1);
  EXPECT_EQ(event.time().nanos(), 500000000);
  EXPECT_EQ(event.args().at("epochs"), "5");
  ASSERT_TRUE(event.has_trainer());
  const TrainerState back = TrainerFromWire(event.trainer());
  EXPECT_EQ(back.epoch, 2);
  EXPECT_EQ(back.epochs, 5);
  EXPECT_EQ(back.start_epoch, 1);
  EXPECT_EQ(back.batch_index, 3);
  EXPECT_EQ(back.num_batches, 4);
  EXPECT_EQ(back.iteration, 11);
  EXPECT_EQ(back.batch_size, 8);
  EXPECT_EQ(back.imgsz, 64);
  EXPECT_DOUBLE_EQ(back.loss, 1.25);
  EXPECT_EQ(back.loss_items, s.loss_items);
  EXPECT_EQ(back.tloss, s.tloss);
  EXPECT_EQ(back.loss_names, s.loss_names);
  EXPECT_EQ(back.metrics, s.metrics);
  EXPECT_DOUBLE_EQ(back.fitness, 0.4);
  EXPECT_DOUBLE_EQ(back.best_fitness, 0.45);
  EXPECT_EQ(back.lr, s.lr);
  EXPECT_DOUBLE_EQ(back.epoch_time, 2.5);
  EXPECT_DOUBLE_EQ(back.elapsed, 9.0);
  EXPECT_EQ(back.save_dir, s.save_dir);
  EXPECT_EQ(back.last, s.last);
  EXPECT_EQ(back.best, s.best);
  EXPECT_EQ(back.names, s.names);
  EXPECT_TRUE(back.stop);
  EXPECT_EQ(back.logged_metrics, s.logged_metrics);
  EXPECT_EQ(back.hyperparameters, s.hyperparameters);
}

TEST(ConversionsTest, ConfusionMatrixIsRowMajor) {
  ValidatorState s;
  s.names = {"a"};
  s.confusion_matrix = {{1, 2}, {3, 4}};
  s.per_class = {{0, "a", 2, 3, 0.5, 0.25, 0.75, 0.4}};
  EventContext ctx;
  ctx.event = Event::kOnValEnd;
  ctx.validator = &s;
  const v1::Event event = ToWire("j", 1, absl::UnixEpoch(), ctx, {}, nullptr);
  ASSERT_TRUE(event.has_validator());
  EXPECT_THAT(event.validator().confusion_matrix(),
              ::testing::ElementsAre(1, 2, 3, 4));
  const ValidatorState back = ValidatorFromWire(event.validator());
  EXPECT_EQ(back.confusion_matrix, s.confusion_matrix);
  ASSERT_EQ(back.per_class.size(), 1u);
  EXPECT_EQ(back.per_class[0].instances, 3);
  EXPECT_DOUBLE_EQ(back.per_class[0].map50, 0.75);
}

TEST(ConversionsTest, FramesEncodedOnlyWhenAsked) {
  uint8_t pixels[2 * 2 * 3] = {};
  PredictorState s;
  s.paths = {"img.png"};
  s.frames = {FrameView{2, 2, 6, pixels}};
  s.results = {SampleResult()};
  EventContext ctx;
  ctx.event = Event::kOnPredictBatchEnd;
  ctx.predictor = &s;
  EXPECT_EQ(ToWire("j", 1, absl::UnixEpoch(), ctx, {}, nullptr)
                .predictor()
                .images_size(),
            0);
  int calls = 0;
  const v1::Event with =
      ToWire("j", 1, absl::UnixEpoch(), ctx, {}, [&](const FrameView& f) {
        ++calls;
        return std::string("jpeg") + std::to_string(f.width);
      });
  ASSERT_EQ(with.predictor().images_size(), 1);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(with.predictor().images(0).name(), "img.png");
  EXPECT_EQ(with.predictor().images(0).data(), "jpeg2");
  EXPECT_EQ(with.predictor().results_size(), 1);
}

}  // namespace
}  // namespace yolohook::wire
