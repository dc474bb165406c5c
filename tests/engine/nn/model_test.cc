#include "server/engine/nn/model.h"

#include <torch/torch.h>

#include <cmath>
#include <set>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace yolohook::nn {
namespace {

using ::testing::HasSubstr;

// A model small enough to run forward passes in milliseconds.
ModelOptions TinyOptions(int nc = 3) {
  ModelOptions options;
  options.depth_multiple = 0.33;
  options.width_multiple = 0.0625;
  options.nc = nc;
  options.scale = "custom";
  return options;
}

TEST(ScaleOptionsTest, KnownScales) {
  auto n = ScaleOptions("n", 80);
  ASSERT_TRUE(n.ok());
  EXPECT_DOUBLE_EQ(n->depth_multiple, 0.33);
  EXPECT_DOUBLE_EQ(n->width_multiple, 0.25);
  EXPECT_EQ(n->max_channels, 1024);
  EXPECT_EQ(n->nc, 80);
  EXPECT_EQ(n->scale, "n");
  auto s = ScaleOptions("s", 3);
  ASSERT_TRUE(s.ok());
  EXPECT_DOUBLE_EQ(s->width_multiple, 0.5);
  EXPECT_EQ(s->nc, 3);
  auto m = ScaleOptions("m", 80);
  ASSERT_TRUE(m.ok());
  EXPECT_DOUBLE_EQ(m->depth_multiple, 0.67);
  EXPECT_DOUBLE_EQ(m->width_multiple, 0.75);
  EXPECT_EQ(m->max_channels, 768);
}

TEST(ScaleOptionsTest, UnknownScaleNamesValidOnes) {
  auto x = ScaleOptions("q", 80);
  ASSERT_FALSE(x.ok());
  EXPECT_EQ(x.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(x.status().message()), HasSubstr("n, s and m"));
  EXPECT_EQ(ScaleOptions("n", 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ScaleOptionsTest, ChannelAndRepeatScaling) {
  ModelOptions n = *ScaleOptions("n", 80);
  EXPECT_EQ(ScaledChannels(64, n), 16);
  EXPECT_EQ(ScaledChannels(1024, n), 256);
  ModelOptions m = *ScaleOptions("m", 80);
  EXPECT_EQ(ScaledChannels(1024, m), 576);  // capped at 768 first
  EXPECT_EQ(ScaledChannels(64, m), 48);
  EXPECT_EQ(ScaledRepeats(3, n), 1);  // round(0.99)
  EXPECT_EQ(ScaledRepeats(6, n), 2);  // round(1.98)
  EXPECT_EQ(ScaledRepeats(6, m), 4);  // round(4.02)
  EXPECT_EQ(ScaledRepeats(1, m), 1);
  EXPECT_EQ(ScaledChannels(64, TinyOptions()), 8);  // 4 rounds up to 8
}

TEST(DetectionModelTest, NanoParameterCountMatchesUltralytics) {
  DetectionModel model(*ScaleOptions("n", 80));
  const double expected = 3157200;
  // Exact: same layers, same counting (the frozen DFL weight included).
  EXPECT_EQ(model->NumParameters(), 3157200);
  EXPECT_NEAR(static_cast<double>(model->NumParameters()), expected,
              0.01 * expected);
}

TEST(DetectionModelTest, SmallAndMediumParameterCounts) {
  DetectionModel s(*ScaleOptions("s", 80));
  EXPECT_NEAR(static_cast<double>(s->NumParameters()), 11.17e6, 0.01 * 11.17e6)
      << s->NumParameters();
  EXPECT_EQ(s->NumParameters(), 11166560);  // Ultralytics' yolov8s summary
  DetectionModel m(*ScaleOptions("m", 80));
  EXPECT_NEAR(static_cast<double>(m->NumParameters()), 25.9e6, 0.01 * 25.9e6)
      << m->NumParameters();
  EXPECT_EQ(m->NumParameters(), 25902640);  // Ultralytics' yolov8m summary
}

TEST(DetectionModelTest, RawAndDecodedShapes) {
  torch::manual_seed(0);
  DetectionModel model(TinyOptions(3));
  model->eval();
  torch::NoGradGuard no_grad;
  const int64_t no = 4 * 16 + 3;
  {
    auto raw = model->ForwardRaw(torch::rand({2, 3, 64, 64}));
    ASSERT_EQ(raw.size(), 3u);
    EXPECT_EQ(raw[0].sizes(), torch::IntArrayRef({2, no, 8, 8}));
    EXPECT_EQ(raw[1].sizes(), torch::IntArrayRef({2, no, 4, 4}));
    EXPECT_EQ(raw[2].sizes(), torch::IntArrayRef({2, no, 2, 2}));
    EXPECT_TRUE(model->CheckRaw(raw).ok());
    torch::Tensor y = model->Decode(raw);
    EXPECT_EQ(y.sizes(), torch::IntArrayRef({2, 7, 64 + 16 + 4}));
    EXPECT_TRUE(torch::isfinite(y).all().item<bool>());
  }
  {
    auto raw = model->ForwardRaw(torch::rand({1, 3, 96, 128}));
    EXPECT_EQ(raw[0].sizes(), torch::IntArrayRef({1, no, 12, 16}));
    EXPECT_EQ(raw[1].sizes(), torch::IntArrayRef({1, no, 6, 8}));
    EXPECT_EQ(raw[2].sizes(), torch::IntArrayRef({1, no, 3, 4}));
    torch::Tensor y = model->forward(torch::rand({1, 3, 96, 128}));
    EXPECT_EQ(y.sizes(), torch::IntArrayRef({1, 7, 192 + 48 + 12}));
    const torch::Tensor probs = y.narrow(1, 4, 3);
    EXPECT_TRUE((probs >= 0).all().item<bool>());
    EXPECT_TRUE((probs <= 1).all().item<bool>());
  }
}

TEST(DetectionModelTest, DecodeUniformDistributionsByHand) {
  DetectionModel model(TinyOptions(2));
  const int64_t no = 4 * 16 + 2;
  // Zero logits: every side's distribution is uniform over 0..15, expectation
  // 7.5 cells; class probabilities sigmoid(0) = 0.5.
  std::vector<torch::Tensor> raw = {torch::zeros({1, no, 2, 2}),
                                    torch::zeros({1, no, 1, 1}),
                                    torch::zeros({1, no, 1, 1})};
  torch::Tensor y = model->Decode(raw);
  ASSERT_EQ(y.sizes(), torch::IntArrayRef({1, 6, 6}));
  // Anchor 1 is level 0 (stride 8), cell x=1, y=0: centre (1.5, 0.5) * 8.
  EXPECT_NEAR(y[0][0][1].item<float>(), 12.0, 1e-4);
  EXPECT_NEAR(y[0][1][1].item<float>(), 4.0, 1e-4);
  EXPECT_NEAR(y[0][2][1].item<float>(), 15.0 * 8, 1e-3);
  EXPECT_NEAR(y[0][3][1].item<float>(), 15.0 * 8, 1e-3);
  // Anchor 2 is cell x=0, y=1 of level 0.
  EXPECT_NEAR(y[0][0][2].item<float>(), 4.0, 1e-4);
  EXPECT_NEAR(y[0][1][2].item<float>(), 12.0, 1e-4);
  // Anchor 5 is the single stride-32 cell: centre (16, 16), width 15 * 32.
  EXPECT_NEAR(y[0][0][5].item<float>(), 16.0, 1e-4);
  EXPECT_NEAR(y[0][2][5].item<float>(), 480.0, 1e-3);
  EXPECT_NEAR(y[0][4][5].item<float>(), 0.5, 1e-6);
  EXPECT_NEAR(y[0][5][0].item<float>(), 0.5, 1e-6);

  // A one-hot left distance at bin 3 (large logit) moves x1 only.
  raw[0][0][3][0][0] = 50.0;  // side l, bin 3, cell (0, 0)
  y = model->Decode(raw);
  // x1 = 0.5 - 3 = -2.5, x2 = 0.5 + 7.5 = 8 -> centre 2.75, width 10.5 cells.
  EXPECT_NEAR(y[0][0][0].item<float>(), 2.75 * 8, 1e-3);
  EXPECT_NEAR(y[0][2][0].item<float>(), 10.5 * 8, 1e-3);
}

TEST(DetectionModelTest, StateDictKeysMatchUltralytics) {
  DetectionModel model(TinyOptions(3));
  std::set<std::string> keys;
  for (const auto& p : model->named_parameters()) keys.insert(p.key());
  for (const auto& b : model->named_buffers()) keys.insert(b.key());
  for (const char* key : {
           "model.0.conv.weight",
           "model.0.bn.weight",
           "model.0.bn.bias",
           "model.0.bn.running_mean",
           "model.0.bn.running_var",
           "model.0.bn.num_batches_tracked",
           "model.2.cv1.conv.weight",
           "model.2.m.0.cv1.conv.weight",
           "model.2.m.0.cv2.bn.weight",
           "model.4.m.1.cv2.conv.weight",
           "model.9.cv1.conv.weight",
           "model.9.cv2.conv.weight",
           "model.12.cv2.bn.running_var",
           "model.21.m.0.cv1.conv.weight",
           "model.22.cv2.0.0.conv.weight",
           "model.22.cv2.0.1.bn.weight",
           "model.22.cv2.0.2.weight",
           "model.22.cv2.0.2.bias",
           "model.22.cv3.1.2.bias",
           "model.22.cv3.2.0.conv.weight",
           "model.22.dfl.conv.weight",
       }) {
    EXPECT_TRUE(keys.count(key)) << key;
  }
  // Layer 4 has round(6 * 0.33) = 2 bottlenecks, not 3.
  EXPECT_FALSE(keys.count("model.4.m.2.cv1.conv.weight"));
  EXPECT_FALSE(keys.count("model.23.cv1.conv.weight"));
}

TEST(DetectionModelTest, DetectHeadInitialisation) {
  DetectionModel model(TinyOptions(3));
  auto params = model->named_parameters();
  const torch::Tensor dfl = params["model.22.dfl.conv.weight"];
  EXPECT_FALSE(dfl.requires_grad());
  EXPECT_TRUE(torch::equal(dfl.flatten(), torch::arange(16, torch::kFloat)));
  for (int i = 0; i < 3; ++i) {
    const std::string level = std::to_string(i);
    const torch::Tensor box = params["model.22.cv2." + level + ".2.bias"];
    EXPECT_TRUE(torch::allclose(box, torch::ones_like(box)));
    const double stride = 8 << i;
    const double expected = std::log(5.0 / 3.0 / std::pow(640.0 / stride, 2.0));
    const torch::Tensor cls = params["model.22.cv3." + level + ".2.bias"];
    EXPECT_EQ(cls.numel(), 3);
    EXPECT_TRUE(torch::allclose(cls, torch::full_like(cls, expected)));
  }
}

TEST(DetectionModelTest, ParameterGroupsPartitionTrainableParameters) {
  DetectionModel model(TinyOptions(3));
  auto groups = model->GroupParameters();
  std::set<const void*> seen;
  size_t total = 0;
  for (const auto* group : {&groups.decay, &groups.norm, &groups.bias}) {
    for (const torch::Tensor& t : *group) {
      EXPECT_TRUE(seen.insert(t.data_ptr()).second) << "parameter in 2 groups";
      EXPECT_TRUE(t.requires_grad());
      ++total;
    }
  }
  size_t trainable = 0;
  for (const auto& p : model->named_parameters()) {
    if (p.value().requires_grad()) {
      ++trainable;
      EXPECT_TRUE(seen.count(p.value().data_ptr())) << p.key();
    }
  }
  EXPECT_EQ(total, trainable);
  // Group kinds: 4-D weights with decay, 1-D BatchNorm weights, 1-D biases.
  for (const torch::Tensor& t : groups.decay) EXPECT_EQ(t.dim(), 4);
  for (const torch::Tensor& t : groups.norm) EXPECT_EQ(t.dim(), 1);
  // Every Conv block has one BN (weight + bias); 6 head convs add a bias each.
  EXPECT_EQ(groups.bias.size(), groups.norm.size() + 6);
  auto params = model->named_parameters();
  const void* dfl = params["model.22.dfl.conv.weight"].data_ptr();
  EXPECT_FALSE(seen.count(dfl));
}

TEST(DetectionModelTest, CopyFromReproducesOutputs) {
  torch::manual_seed(1);
  DetectionModel a(TinyOptions(2));
  torch::manual_seed(2);
  DetectionModel b(TinyOptions(2));
  a->eval();
  b->eval();
  // Give a non-trivial running statistics to copy.
  {
    a->train();
    torch::NoGradGuard no_grad;
    a->ForwardRaw(torch::rand({2, 3, 64, 64}));
    a->eval();
  }
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::rand({1, 3, 64, 64});
  EXPECT_FALSE(torch::allclose(a->forward(x), b->forward(x)));
  b->CopyFrom(*a);
  EXPECT_TRUE(torch::allclose(a->forward(x), b->forward(x)));
  auto bufs = b->named_buffers();
  EXPECT_EQ(bufs["model.0.bn.num_batches_tracked"].item<int64_t>(), 1);
}

TEST(DetectionModelTest, ValidationRejectsBadOptionsAndInputs) {
  ModelOptions bad = TinyOptions();
  bad.width_multiple = 0;
  EXPECT_EQ(MakeDetectionModel(bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad = TinyOptions();
  bad.reg_max = 0;
  EXPECT_EQ(MakeDetectionModel(bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(MakeDetectionModel(TinyOptions()).ok());

  EXPECT_TRUE(
      DetectionModelImpl::CheckImages(torch::rand({1, 3, 64, 96})).ok());
  EXPECT_FALSE(DetectionModelImpl::CheckImages(torch::rand({3, 64, 64})).ok());
  EXPECT_FALSE(
      DetectionModelImpl::CheckImages(torch::rand({1, 1, 64, 64})).ok());
  EXPECT_FALSE(
      DetectionModelImpl::CheckImages(torch::rand({1, 3, 60, 64})).ok());
  EXPECT_FALSE(DetectionModelImpl::CheckImages(
                   torch::zeros({1, 3, 64, 64}, torch::kUInt8))
                   .ok());
  DetectionModel model(TinyOptions(3));
  EXPECT_FALSE(model->CheckRaw({torch::zeros({1, 10, 2, 2})}).ok());
  // Misuse throws (never crashes), for callers that catch at their edge.
  EXPECT_THROW(model->Decode({}), c10::Error);
}

}  // namespace
}  // namespace yolohook::nn
