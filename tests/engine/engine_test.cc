// The engine's runs end to end on a tiny generated dataset: the order of the
// callback events in every mode, and what callbacks can do to a training run.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/engine/data/shapes.h"
#include "server/engine/yolo.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/tiny_shapes.h"

namespace yolohook::engine {
namespace {

namespace fs = std::filesystem;
using ::testing::Contains;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

std::vector<std::string> ReadLines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// Records the name of every event fired.
void RecordAll(Yolo& yolo, std::vector<std::string>& events) {
  yolo.callbacks().AddForAll([&events](EventContext& ctx) {
    events.emplace_back(EventName(ctx.event));
  });
}

class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    ASSERT_TRUE(testing::MakeTinyShapes(dir_->Sub("shapes")).ok());
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }

  // A fast training run: 8 images of 64 px, batch 4 (2 batches per epoch), an
  // optimizer step per batch, no warmup.
  Yolo::Args TrainArgs(const std::string& name, int epochs) const {
    return {{"data", dir_->Sub("shapes") + "/data.yaml"},
            {"imgsz", "64"},
            {"batch", "4"},
            {"nbs", "4"},
            {"epochs", absl::StrCat(epochs)},
            {"warmup_epochs", "0"},
            {"workers", "1"},
            {"threads", "2"},
            {"project", dir_->Sub("runs")},
            {"name", name},
            {"verbose", "false"}};
  }

  static testing::TempDir* dir_;
};

testing::TempDir* EngineTest::dir_ = nullptr;

std::vector<std::string> ExpectedTrainEvents(int epochs, int train_batches,
                                             int val_batches) {
  std::vector<std::string> e = {"on_pretrain_routine_start",
                                "on_pretrain_routine_end", "on_train_start"};
  auto val = [&] {
    e.push_back("on_val_start");
    for (int b = 0; b < val_batches; ++b) {
      e.push_back("on_val_batch_start");
      e.push_back("on_val_batch_end");
    }
    e.push_back("on_val_end");
  };
  for (int epoch = 0; epoch < epochs; ++epoch) {
    e.push_back("on_train_epoch_start");
    for (int b = 0; b < train_batches; ++b) {
      e.insert(e.end(), {"on_train_batch_start", "optimizer_step",
                         "on_before_zero_grad", "on_train_batch_end"});
    }
    e.push_back("on_train_epoch_end");
    val();
    e.push_back("on_model_save");
    e.push_back("on_fit_epoch_end");
    if (epoch + 1 < epochs) e.push_back("on_params_update");
  }
  val();  // best.pt, once more, without another on_fit_epoch_end
  e.push_back("on_train_end");
  e.push_back("teardown");
  return e;
}

TEST_F(EngineTest, EveryModeFiresItsEventsInUltralyticsOrder) {
  Yolo yolo("yolov8n");
  std::vector<std::string> events;
  RecordAll(yolo, events);

  auto train = yolo.Train(TrainArgs("order", 2));
  ASSERT_TRUE(train.ok()) << train.status();
  EXPECT_THAT(events, ElementsAreArray(ExpectedTrainEvents(2, 2, 1)));
  EXPECT_EQ(yolo.model(), train->best);

  events.clear();
  std::vector<ValidatorState> batches;
  ASSERT_TRUE(yolo.AddCallback("on_val_batch_end",
                               [&](EventContext& ctx) {
                                 batches.push_back(*ctx.validator);
                               })
                  .ok());
  auto val = yolo.Val({{"data", dir_->Sub("shapes") + "/data.yaml"},
                       {"imgsz", "64"},
                       {"project", dir_->Sub("runs")},
                       {"verbose", "false"}});
  ASSERT_TRUE(val.ok()) << val.status();
  EXPECT_THAT(events, ElementsAreArray({"on_val_start", "on_val_batch_start",
                                        "on_val_batch_end", "on_val_end"}));
  // Validator callbacks see each image's predictions and labels, in original
  // pixels.
  ASSERT_EQ(batches.size(), 1u);
  const ValidatorState& batch = batches[0];
  EXPECT_FALSE(batch.training);
  ASSERT_EQ(batch.batch_predictions.size(), 4u);
  ASSERT_EQ(batch.batch_labels.size(), 4u);
  size_t labels = 0;
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(batch.batch_labels[i].path, batch.batch_predictions[i].path);
    for (const Box& b : batch.batch_labels[i].boxes) {
      EXPECT_LE(b.x2, batch.batch_labels[i].orig_width);
      EXPECT_LE(b.y2, batch.batch_labels[i].orig_height);
    }
    labels += batch.batch_labels[i].boxes.size();
  }
  EXPECT_EQ(static_cast<int>(labels), val->instances);

  events.clear();
  auto predict = yolo.Predict({{"source", dir_->Sub("shapes") + "/images/val"},
                               {"imgsz", "64"},
                               {"project", dir_->Sub("runs")},
                               {"verbose", "false"}});
  ASSERT_TRUE(predict.ok()) << predict.status();
  std::vector<std::string> expected = {"on_predict_start"};
  for (int i = 0; i < 4; ++i) {
    expected.insert(expected.end(),
                    {"on_predict_batch_start", "on_predict_postprocess_end",
                     "on_predict_batch_end"});
  }
  expected.push_back("on_predict_end");
  EXPECT_THAT(events, ElementsAreArray(expected));
  EXPECT_EQ(predict->results.size(), 4u);

  events.clear();
  auto exported = yolo.Export({{"imgsz", "64"}, {"verbose", "false"}});
  ASSERT_TRUE(exported.ok()) << exported.status();
  EXPECT_THAT(events, ElementsAreArray({"on_export_start", "on_export_end"}));
  EXPECT_TRUE(fs::exists(exported->file));
}

TEST_F(EngineTest, TrainerStateDescribesTheRun) {
  Yolo yolo;
  std::vector<TrainerState> seen;
  ASSERT_TRUE(
      yolo.AddCallback("on_fit_epoch_end",
                       [&](EventContext& ctx) { seen.push_back(*ctx.trainer); })
          .ok());
  auto train = yolo.Train(TrainArgs("state", 2));
  ASSERT_TRUE(train.ok()) << train.status();
  ASSERT_EQ(seen.size(), 2u);
  for (int epoch = 0; epoch < 2; ++epoch) {
    const TrainerState& s = seen[epoch];
    EXPECT_EQ(s.epoch, epoch);
    EXPECT_EQ(s.epochs, 2);
    EXPECT_EQ(s.num_batches, 2);
    EXPECT_EQ(s.tloss.size(), 3u);
    EXPECT_EQ(s.loss_names,
              (std::vector<std::string>{"box_loss", "cls_loss", "dfl_loss"}));
    EXPECT_TRUE(s.metrics.count("metrics/mAP50(B)"));
    EXPECT_TRUE(s.metrics.count("val/box_loss"));
    EXPECT_TRUE(s.lr.count("lr/pg2"));
    EXPECT_EQ(s.names.size(), data::ShapesClassNames().size());
    EXPECT_EQ(s.save_dir, train->save_dir);
    EXPECT_TRUE(fs::exists(s.last));
  }
  EXPECT_TRUE(seen[1].stop);  // the final epoch
  EXPECT_TRUE(fs::exists(fs::path(train->save_dir) / "args.yaml"));
  EXPECT_TRUE(fs::exists(fs::path(train->save_dir) / "results.png"));
  std::vector<std::string> csv = ReadLines(train->save_dir + "/results.csv");
  ASSERT_EQ(csv.size(), 3u);
  EXPECT_EQ(csv[0],
            "epoch,time,train/box_loss,train/cls_loss,train/dfl_loss,metrics/"
            "precision(B),"
            "metrics/recall(B),metrics/mAP50(B),metrics/mAP50-95(B),val/"
            "box_loss,val/cls_loss,"
            "val/dfl_loss,lr/pg0,lr/pg1,lr/pg2");
}

TEST_F(EngineTest, StopEndsTrainingAfterTheEpochWithWeightsSaved) {
  Yolo yolo;
  int fit_epoch_ends = 0;
  ASSERT_TRUE(
      yolo.AddCallback("on_train_epoch_end",
                       [](EventContext& ctx) { ctx.trainer->stop = true; })
          .ok());
  ASSERT_TRUE(yolo.AddCallback("on_fit_epoch_end",
                               [&](EventContext&) { ++fit_epoch_ends; })
                  .ok());
  auto train = yolo.Train(TrainArgs("stop", 5));
  ASSERT_TRUE(train.ok()) << train.status();
  EXPECT_EQ(train->epochs_completed, 1);
  EXPECT_TRUE(train->stopped_early);
  EXPECT_EQ(fit_epoch_ends, 1);
  EXPECT_TRUE(fs::exists(train->best));
  EXPECT_TRUE(fs::exists(train->last));
  EXPECT_EQ(ReadLines(train->save_dir + "/results.csv").size(), 2u);
}

TEST_F(EngineTest, LoggedMetricsBecomeResultsColumns) {
  Yolo yolo;
  ASSERT_TRUE(yolo.AddCallback("on_fit_epoch_end",
                               [](EventContext& ctx) {
                                 ctx.trainer->logged_metrics["custom/score"] =
                                     10 + ctx.trainer->epoch;
                               })
                  .ok());
  auto train = yolo.Train(TrainArgs("logged", 2));
  ASSERT_TRUE(train.ok()) << train.status();
  std::vector<std::string> csv = ReadLines(train->save_dir + "/results.csv");
  ASSERT_EQ(csv.size(), 3u);
  EXPECT_THAT(csv[0], ::testing::EndsWith(",custom/score"));
  EXPECT_THAT(csv[1], ::testing::EndsWith(",10"));
  EXPECT_THAT(csv[2], ::testing::EndsWith(",11"));
}

TEST_F(EngineTest, HyperparameterChangeFiresParamsUpdateAndSetsLearningRate) {
  Yolo yolo;
  std::vector<std::string> events;
  RecordAll(yolo, events);
  std::vector<double> lr_at_update;
  ASSERT_TRUE(yolo.AddCallback("on_train_epoch_end",
                               [](EventContext& ctx) {
                                 if (ctx.trainer->epoch == 0) {
                                   ctx.trainer->hyperparameters["lr0"] = 0.05;
                                 }
                               })
                  .ok());
  ASSERT_TRUE(yolo.AddCallback("on_params_update",
                               [&](EventContext& ctx) {
                                 lr_at_update.push_back(
                                     ctx.trainer->lr["lr/pg1"]);
                                 EXPECT_DOUBLE_EQ(
                                     ctx.trainer->hyperparameters["lr0"], 0.05);
                               })
                  .ok());
  Yolo::Args args = TrainArgs("hyp", 2);
  args["optimizer"] = "SGD";
  args["lr0"] = "0.01";
  args["lrf"] = "0.5";
  auto train = yolo.Train(args);
  ASSERT_TRUE(train.ok()) << train.status();
  // Right after the change, then the scheduler's change at the epoch's end.
  auto it = std::find(events.begin(), events.end(), "on_train_epoch_end");
  ASSERT_NE(it, events.end());
  EXPECT_EQ(*(it + 1), "on_params_update");
  ASSERT_EQ(lr_at_update.size(), 2u);
  EXPECT_NEAR(lr_at_update[0], 0.05, 1e-12);  // lr0 * lf(0)
  EXPECT_NEAR(lr_at_update[1], 0.05 * (0.5 * 0.5 + 0.5),
              1e-12);  // lr0 * lf(1), linear
}

TEST_F(EngineTest, HyperparametersSetBeforeSetupOutrankOptimizerAuto) {
  Yolo yolo;
  ASSERT_TRUE(yolo.AddCallback("on_pretrain_routine_start",
                               [](EventContext& ctx) {
                                 ctx.trainer->hyperparameters["lr0"] = 0.003;
                                 ctx.trainer->hyperparameters["momentum"] = 0.8;
                               })
                  .ok());
  std::map<std::string, double> at_end;
  ASSERT_TRUE(yolo.AddCallback("on_pretrain_routine_end",
                               [&](EventContext& ctx) {
                                 at_end = ctx.trainer->hyperparameters;
                               })
                  .ok());
  Yolo::Args args = TrainArgs("early_hyp", 1);
  args["optimizer"] = "auto";  // would choose its own lr0 and momentum
  auto train = yolo.Train(args);
  ASSERT_TRUE(train.ok()) << train.status();
  EXPECT_DOUBLE_EQ(at_end["lr0"], 0.003);
  EXPECT_DOUBLE_EQ(at_end["momentum"], 0.8);
}

TEST_F(EngineTest, BadHyperparameterFromCallbackFailsClearly) {
  Yolo yolo;
  ASSERT_TRUE(yolo.AddCallback("on_train_start",
                               [](EventContext& ctx) {
                                 ctx.trainer->hyperparameters["lr"] = 1;
                               })
                  .ok());
  auto train = yolo.Train(TrainArgs("badhyp", 1));
  ASSERT_FALSE(train.ok());
  EXPECT_EQ(train.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(train.status().message(), HasSubstr("did you mean 'lr0'"));
  EXPECT_THAT(train.status().message(), HasSubstr("on_train_start"));
}

TEST_F(EngineTest, CallbackFailureAbortsTheRunAndStillTearsDown) {
  Yolo yolo;
  std::vector<std::string> events;
  RecordAll(yolo, events);
  ASSERT_TRUE(
      yolo.AddCallback("on_train_batch_end",
                       [](EventContext& ctx) { ctx.Fail("quota exceeded"); })
          .ok());
  auto train = yolo.Train(TrainArgs("fail", 2));
  ASSERT_FALSE(train.ok());
  EXPECT_EQ(train.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(train.status().message(), HasSubstr("quota exceeded"));
  EXPECT_THAT(train.status().message(), HasSubstr("on_train_batch_end"));
  EXPECT_EQ(events.back(), "teardown");
}

TEST_F(EngineTest, CancelledRunResumesFromLastCheckpoint) {
  Yolo yolo;
  ASSERT_TRUE(yolo.AddCallback("on_train_epoch_start",
                               [&](EventContext& ctx) {
                                 if (ctx.trainer->epoch == 2) yolo.Cancel();
                               })
                  .ok());
  auto first = yolo.Train(TrainArgs("resume", 4));
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.status().code(), absl::StatusCode::kCancelled);
  std::string run_dir = dir_->Sub("runs") + "/resume";
  std::string last = run_dir + "/weights/last.pt";
  ASSERT_TRUE(fs::exists(last));
  EXPECT_EQ(ReadLines(run_dir + "/results.csv").size(),
            3u);  // header + epochs 1, 2

  Yolo again;
  std::vector<int> epochs;
  ASSERT_TRUE(again
                  .AddCallback("on_train_epoch_start",
                               [&](EventContext& ctx) {
                                 epochs.push_back(ctx.trainer->epoch);
                               })
                  .ok());
  auto resumed =
      again.Train({{"resume", last}, {"verbose", "false"}, {"workers", "1"}});
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->save_dir, run_dir);
  EXPECT_EQ(epochs, (std::vector<int>{2, 3}));
  EXPECT_EQ(ReadLines(run_dir + "/results.csv").size(), 5u);

  // A finished run has nothing left to resume.
  auto finished = Yolo().Train({{"resume", last}, {"verbose", "false"}});
  ASSERT_FALSE(finished.ok());
  EXPECT_THAT(finished.status().message(), HasSubstr("finished"));
}

TEST_F(EngineTest, BadArgumentsAreExplained) {
  Yolo yolo;
  auto missing =
      yolo.Train({{"data", dir_->Sub("nope.yaml")}, {"verbose", "false"}});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("nope.yaml"));

  Yolo unknown("yolov9x");
  Yolo::Args args = TrainArgs("bad", 1);
  auto bad_model = unknown.Train(args);
  EXPECT_EQ(bad_model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_model.status().message(), HasSubstr("yolov9x"));

  auto untrained =
      Yolo("yolov8n").Predict({{"source", dir_->path()}, {"verbose", "false"}});
  EXPECT_EQ(untrained.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(untrained.status().message(), HasSubstr("untrained"));

  auto typo = yolo.Train({{"epoch", "3"}});
  EXPECT_THAT(typo.status().message(), HasSubstr("did you mean 'epochs'"));
}

}  // namespace
}  // namespace yolohook::engine
