// End to end: a real training run on the built-in shapes dataset learns.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <vector>

#include "server/engine/data/shapes.h"
#include "server/engine/yolo.h"
#include "tests/testing/temp_dir.h"

namespace yolohook::engine {
namespace {

TEST(EndToEndTest, TrainingOnShapesLowersLossAndRaisesMap) {
  testing::TempDir dir;
  data::ShapesOptions shapes;
  shapes.train_images = 256;
  shapes.val_images = 64;
  shapes.image_size = 160;
  ASSERT_TRUE(data::GenerateShapes(dir.Sub("shapes"), shapes).ok());

  struct Epoch {
    double loss;
    double map50;
  };
  std::vector<Epoch> epochs;
  Yolo yolo("yolov8n");
  ASSERT_TRUE(yolo.AddCallback("on_fit_epoch_end",
                               [&](EventContext& ctx) {
                                 const TrainerState& t = *ctx.trainer;
                                 epochs.push_back(
                                     {t.tloss[0] + t.tloss[1] + t.tloss[2],
                                      t.metrics.at("metrics/mAP50(B)")});
                                 std::printf("epoch %d loss %.4f mAP50 %.4f\n",
                                             t.epoch + 1, epochs.back().loss,
                                             epochs.back().map50);
                               })
                  .ok());
  auto train =
      yolo.Train({{"data", dir.Sub("shapes") + "/data.yaml"},
                  {"imgsz", "160"},
                  // Small data needs many optimizer steps: step every batch
                  // of 8, with a learning rate suited to AdamW from scratch.
                  {"batch", "8"},
                  {"nbs", "8"},
                  {"optimizer", "AdamW"},
                  {"lr0", "0.003"},
                  {"warmup_epochs", "1"},
                  {"epochs", "12"},
                  {"close_mosaic", "4"},
                  {"workers", "2"},
                  {"project", dir.Sub("runs")},
                  {"verbose", "false"}});
  ASSERT_TRUE(train.ok()) << train.status();
  ASSERT_EQ(epochs.size(), 12u);
  EXPECT_LT(epochs.back().loss, 0.75 * epochs.front().loss);
  EXPECT_GT(epochs.back().map50, epochs.front().map50 + 0.1);
  // Chance is near zero for a detector; this is a model that finds shapes.
  EXPECT_GT(train->metrics.at("metrics/mAP50(B)"), 0.15);
}

}  // namespace
}  // namespace yolohook::engine
