#include "server/engine/export/onnx_graph.h"

#include <cmath>
#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onnx/checker.h"
#include "onnx/shape_inference/implementation.h"

namespace yolohook::exporter {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::Pointwise;

float Silu(float x) { return x / (1.0f + std::exp(-x)); }

// Runs `model` through OpenCV DNN as readNetFromONNX would load it from disk,
// with `input` (a 4-D float blob). Returns the output values in order.
std::vector<float> RunOpenCv(const onnx::ModelProto& model,
                             const cv::Mat& input, std::vector<int>* shape) {
  std::string bytes;
  EXPECT_TRUE(model.SerializeToString(&bytes));
  cv::dnn::Net net = cv::dnn::readNetFromONNX(bytes.data(), bytes.size());
  net.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
  net.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
  net.setInput(input);
  cv::Mat out = net.forward();
  shape->assign(out.size.p, out.size.p + out.dims);
  const float* data = out.ptr<float>();
  return std::vector<float>(data, data + out.total());
}

cv::Mat Blob(const std::vector<int>& shape, const std::vector<float>& values) {
  cv::Mat blob(static_cast<int>(shape.size()), shape.data(), CV_32F);
  std::copy(values.begin(), values.end(), blob.ptr<float>());
  return blob;
}

// Checks the model with ONNX's own checker and strict shape inference (which
// also compares the declared output shape with the inferred one).
void ExpectValidOnnx(onnx::ModelProto model) {
  EXPECT_NO_THROW(onnx::checker::check_model(model));
  EXPECT_NO_THROW(onnx::shape_inference::InferShapes(
      model, onnx::OpSchemaRegistry::Instance(),
      onnx::ShapeInferenceOptions(/*check_type_val=*/true,
                                  /*strict_mode_val=*/1)));
}

TEST(OnnxGraphBuilderTest, ConvWithBiasThenSiluMatchesHandComputation) {
  OnnxGraphBuilder b("conv");
  const std::string x = b.Input("x", {1, 1, 3, 3});
  // A 3x3 box filter with padding 1 and stride 2 on 1..9, plus bias 0.5:
  // output (0,0) sums 1,2,4,5; (0,1) 2,3,5,6; (1,0) 4,5,7,8; (1,1) 5,6,8,9.
  const std::string conv =
      b.Conv("conv", x, {{1, 1, 3, 3}, std::vector<float>(9, 1.0f)}, {0.5f},
             /*stride=*/2, /*pad=*/1);
  EXPECT_THAT(b.ShapeOf(conv), ElementsAre(1, 1, 2, 2));
  b.Output(b.Silu("y", conv));
  auto model = std::move(b).Finish({});
  ASSERT_TRUE(model.ok()) << model.status();
  ExpectValidOnnx(*model);

  std::vector<int> shape;
  const std::vector<float> out = RunOpenCv(
      *model, Blob({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9}), &shape);
  EXPECT_THAT(shape, ElementsAre(1, 1, 2, 2));
  EXPECT_THAT(out, Pointwise(testing::FloatNear(1e-5),
                             std::vector<float>{Silu(12.5f), Silu(16.5f),
                                                Silu(24.5f), Silu(28.5f)}));
}

TEST(OnnxGraphBuilderTest, GroupedConvKeepsGroupsApart) {
  OnnxGraphBuilder b("grouped");
  const std::string x = b.Input("x", {1, 4, 1, 1});
  // Two groups of two channels: out0 = in0 + 2*in1, out1 = 3*in2 + 4*in3.
  b.Output(b.Conv("y", x, {{2, 2, 1, 1}, {1, 2, 3, 4}}, {}, 1, 0,
                  /*group=*/2));
  auto model = std::move(b).Finish({});
  ASSERT_TRUE(model.ok()) << model.status();
  std::vector<int> shape;
  EXPECT_THAT(RunOpenCv(*model, Blob({1, 4, 1, 1}, {1, 10, 100, 1000}), &shape),
              ElementsAre(21.0f, 4300.0f));
}

TEST(OnnxGraphBuilderTest, UpsampleNearestRepeatsEachPixel) {
  for (int opset : {11, 12, 13}) {
    OnnxGraphBuilder b("upsample");
    const std::string x = b.Input("x", {1, 1, 2, 2});
    b.Output(b.UpsampleNearest("y", x, 2));
    OnnxModelInfo info;
    info.opset = opset;
    auto model = std::move(b).Finish(info);
    ASSERT_TRUE(model.ok()) << model.status();
    ExpectValidOnnx(*model);
    std::vector<int> shape;
    const std::vector<float> out =
        RunOpenCv(*model, Blob({1, 1, 2, 2}, {1, 2, 3, 4}), &shape);
    EXPECT_THAT(shape, ElementsAre(1, 1, 4, 4)) << "opset " << opset;
    EXPECT_THAT(
        out, ElementsAreArray({1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4}))
        << "opset " << opset;
  }
}

TEST(OnnxGraphBuilderTest, MaxPoolPadsWithoutInventingValues) {
  OnnxGraphBuilder b("pool");
  const std::string x = b.Input("x", {1, 1, 3, 3});
  b.Output(b.MaxPool("y", x, 3, 1, 1));
  auto model = std::move(b).Finish({});
  ASSERT_TRUE(model.ok()) << model.status();
  ExpectValidOnnx(*model);
  // All values negative: zero padding would show up as 0.
  std::vector<int> shape;
  const std::vector<float> out = RunOpenCv(
      *model, Blob({1, 1, 3, 3}, {-9, -8, -7, -6, -5, -4, -3, -2, -1}), &shape);
  EXPECT_THAT(out, ElementsAreArray({-5, -4, -4, -2, -1, -1, -2, -1, -1}));
}

TEST(OnnxGraphBuilderTest, SoftmaxAfterTransposeNormalisesTheRightAxis) {
  // (1,2,3,1) reshaped to (1,1,2,3), transposed to (1,1,3,2): the softmax
  // runs over pairs (x[0,j], x[1,j]); transposed back and reshaped, each
  // column j of the input sums to 1.
  for (int opset : {11, 13}) {
    OnnxGraphBuilder b("softmax");
    const std::string x = b.Input("x", {1, 2, 3, 1});
    std::string y = b.Reshape("r", x, {1, 1, 2, 3});
    y = b.Transpose("t", y, {0, 1, 3, 2});
    EXPECT_THAT(b.ShapeOf(y), ElementsAre(1, 1, 3, 2));
    y = b.SoftmaxLastAxis("s", y);
    y = b.Transpose("t", y, {0, 1, 3, 2});
    b.Output(b.Reshape("out", y, {1, 2, 3, 1}));
    OnnxModelInfo info;
    info.opset = opset;
    auto model = std::move(b).Finish(info);
    ASSERT_TRUE(model.ok()) << model.status();
    ExpectValidOnnx(*model);
    std::vector<int> shape;
    const std::vector<float> out =
        RunOpenCv(*model, Blob({1, 2, 3, 1}, {0, 1, 2, 0, 0, 0}), &shape);
    const float e = std::exp(1.0f), e2 = std::exp(2.0f);
    EXPECT_THAT(out,
                Pointwise(testing::FloatNear(1e-6),
                          std::vector<float>{0.5f, e / (e + 1), e2 / (e2 + 1),
                                             0.5f, 1 / (e + 1), 1 / (e2 + 1)}))
        << "opset " << opset;
  }
}

TEST(OnnxGraphBuilderTest, AddOfFullShapeConstantAndConcatOnLastAxis) {
  OnnxGraphBuilder b("add");
  const std::string x = b.Input("x", {1, 2, 1, 3});
  const std::string c =
      b.Constant("c", {{1, 2, 1, 3}, {10, 20, 30, 40, 50, 60}});
  const std::string sum = b.Add("sum", x, c);
  const std::string flat = b.Reshape("flat", sum, {1, 2, 3});
  const std::string prod = b.Reshape("flat2", b.Mul("prod", x, x), {1, 2, 3});
  b.Output(b.Concat("out", {flat, prod}, 2));
  EXPECT_THAT(b.ShapeOf("out"), ElementsAre(1, 2, 6));
  auto model = std::move(b).Finish({});
  ASSERT_TRUE(model.ok()) << model.status();
  ExpectValidOnnx(*model);
  std::vector<int> shape;
  const std::vector<float> out =
      RunOpenCv(*model, Blob({1, 2, 1, 3}, {1, 2, 3, 4, 5, 6}), &shape);
  EXPECT_THAT(shape, ElementsAre(1, 2, 6));
  EXPECT_THAT(out,
              ElementsAreArray({11, 22, 33, 1, 4, 9, 44, 55, 66, 16, 25, 36}));
}

TEST(OnnxGraphBuilderTest, FirstErrorIsStickyAndNamesTheOperator) {
  OnnxGraphBuilder b("bad");
  const std::string x = b.Input("x", {1, 3, 4, 4});
  // Weight expects 2 input channels, x has 3.
  const std::string y = b.Conv("conv1", x, {{1, 2, 1, 1}, {1, 1}}, {}, 1, 0);
  EXPECT_EQ(y, "");
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(b.status().message()), HasSubstr("conv1"));
  // Later valid operators do nothing and keep the first error.
  EXPECT_EQ(b.Sigmoid("s", x), "");
  EXPECT_THAT(std::string(b.status().message()), HasSubstr("conv1"));
  auto model = std::move(b).Finish({});
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(OnnxGraphBuilderTest, RejectsShapeMismatches) {
  {
    OnnxGraphBuilder b("g");
    const std::string x = b.Input("x", {1, 2, 2, 2});
    b.Reshape("r", x, {1, 3, 3});
    EXPECT_THAT(std::string(b.status().message()), HasSubstr("cannot reshape"));
  }
  {
    OnnxGraphBuilder b("g");
    const std::string x = b.Input("x", {1, 2, 2, 2});
    const std::string y = b.Input("y", {1, 2, 2, 1});
    b.Add("a", x, y);
    EXPECT_THAT(std::string(b.status().message()), HasSubstr("differ"));
  }
  {
    OnnxGraphBuilder b("g");
    const std::string x = b.Input("x", {1, 2, 2, 2});
    const std::string y = b.Input("y", {1, 2, 3, 2});
    b.Concat("c", {x, y}, 1);
    EXPECT_THAT(std::string(b.status().message()), HasSubstr("does not fit"));
  }
  {
    OnnxGraphBuilder b("g");
    const std::string x = b.Input("x", {1, 2, 2, 2});
    b.Transpose("t", x, {0, 1, 1, 2});
    EXPECT_THAT(std::string(b.status().message()), HasSubstr("permutation"));
  }
  {
    OnnxGraphBuilder b("g");
    b.Sigmoid("s", "nowhere");
    EXPECT_THAT(std::string(b.status().message()), HasSubstr("nowhere"));
  }
}

TEST(OnnxGraphBuilderTest, FinishChecksOpsetAndWritesModelFields) {
  {
    OnnxGraphBuilder b("g");
    b.Output(b.Sigmoid("y", b.Input("x", {1, 1, 1, 1})));
    OnnxModelInfo info;
    info.opset = 10;
    auto model = std::move(b).Finish(info);
    EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(model.status().message()), HasSubstr("opset 10"));
  }
  {
    OnnxGraphBuilder b("g");
    b.Input("x", {1, 1, 1, 1});
    EXPECT_EQ(std::move(b).Finish({}).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  OnnxGraphBuilder b("g");
  b.Output(b.Sigmoid("y", b.Input("x", {1, 1, 1, 1})));
  OnnxModelInfo info;
  info.opset = 13;
  info.producer_name = "p";
  info.metadata = {{"a", "1"}, {"b", "2"}};
  auto model = std::move(b).Finish(info);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->opset_import(0).version(), 13);
  EXPECT_EQ(model->producer_name(), "p");
  ASSERT_EQ(model->metadata_props_size(), 2);
  EXPECT_EQ(model->metadata_props(1).key(), "b");
  EXPECT_EQ(model->metadata_props(1).value(), "2");
  EXPECT_EQ(model->graph().output(0).name(), "y");
}

TEST(OnnxGraphBuilderTest, RepeatedNamesGetUniqueValues) {
  OnnxGraphBuilder b("g");
  const std::string x = b.Input("x", {1, 1, 1, 1});
  const std::string a = b.Sigmoid("s", x);
  const std::string c = b.Sigmoid("s", a);
  EXPECT_EQ(a, "s");
  EXPECT_NE(c, a);
  b.Output(c);
  auto model = std::move(b).Finish({});
  ASSERT_TRUE(model.ok());
  EXPECT_NE(model->graph().node(0).name(), model->graph().node(1).name());
  ExpectValidOnnx(*model);
}

}  // namespace
}  // namespace yolohook::exporter
