#include "server/engine/export/onnx_export.h"

#include <torch/torch.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <opencv2/core.hpp>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onnx/checker.h"
#include "onnx/onnx_pb.h"
#include "onnx/shape_inference/implementation.h"
#include "server/engine/export/onnx_metadata.h"
#include "server/engine/export/onnx_runner.h"
#include "server/engine/nn/model.h"

namespace yolohook::exporter {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class OnnxExportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           (std::string("yolohook_export_") + info->name() + "_" +
            std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    torch::manual_seed(7);
    cv::setNumThreads(2);
    torch::set_num_threads(2);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Path(const std::string& name) const {
    return (dir_ / name).string();
  }

  fs::path dir_;
};

// The tiny scale: 8..16 channels, one bottleneck per C2f.
nn::DetectionModel TinyModel(int nc = 3) {
  nn::ModelOptions options;
  options.depth_multiple = 0.33;
  options.width_multiple = 0.0625;
  options.nc = nc;
  options.scale = "custom";
  return *nn::MakeDetectionModel(options);
}

// Gives every BatchNorm statistics and affine parameters far from the
// identity, and the class head biases spread-out values, so that BatchNorm
// folding and every score matter in the comparison.
void Randomise(nn::DetectionModel& model) {
  torch::NoGradGuard no_grad;
  for (const auto& item : model->named_modules()) {
    if (auto* bn = item.value()->as<torch::nn::BatchNorm2dImpl>()) {
      bn->running_mean.uniform_(-0.5, 0.5);
      bn->running_var.uniform_(0.3, 2.0);
      bn->weight.uniform_(0.5, 1.5);
      bn->bias.uniform_(-0.3, 0.3);
    }
  }
  for (auto& item : model->named_parameters()) {
    if (absl::StartsWith(item.key(), "model.22.cv3.") &&
        absl::EndsWith(item.key(), ".2.bias")) {
      item.value().uniform_(-2.0, 2.0);
    }
  }
  model->eval();
}

cv::Mat ToBlob(const torch::Tensor& images) {
  const torch::Tensor t = images.contiguous();
  const std::vector<int> sizes(t.sizes().begin(), t.sizes().end());
  cv::Mat blob(4, sizes.data(), CV_32F);
  std::memcpy(blob.ptr<float>(), t.data_ptr<float>(),
              t.numel() * sizeof(float));
  return blob;
}

struct Differences {
  double box = 0;    // max |a - b| over rows 0-3, pixels
  double score = 0;  // max |a - b| over rows 4..
};

// Runs `model` in LibTorch and its export in OpenCV DNN on the same random
// image, and returns the largest differences.
Differences CompareWithTorch(nn::DetectionModel& model, const std::string& path,
                             int imgsz) {
  auto detector = OnnxDetector::Load(path);
  EXPECT_TRUE(detector.ok()) << detector.status();
  if (!detector.ok()) return {1e9, 1e9};
  const torch::Tensor images = torch::rand({1, 3, imgsz, imgsz});
  torch::Tensor expected;
  {
    torch::NoGradGuard no_grad;
    expected = model->forward(images);
  }
  auto out = detector->Run(ToBlob(images));
  EXPECT_TRUE(out.ok()) << out.status();
  if (!out.ok()) return {1e9, 1e9};
  EXPECT_EQ(out->dims, 3);
  EXPECT_EQ(out->size[1], expected.size(1));
  EXPECT_EQ(out->size[2], expected.size(2));
  const torch::Tensor actual =
      torch::from_blob(out->ptr<float>(),
                       {out->size[0], out->size[1], out->size[2]},
                       torch::kFloat32)
          .clone();
  const torch::Tensor diff = (actual - expected).abs();
  return {diff.narrow(1, 0, 4).max().item<double>(),
          diff.narrow(1, 4, diff.size(1) - 4).max().item<double>()};
}

TEST_F(OnnxExportTest, TinyModelMatchesLibTorchWithFoldedBatchNorm) {
  nn::DetectionModel model = TinyModel();
  Randomise(model);
  for (int imgsz : {64, 96}) {
    OnnxExportOptions options;
    options.imgsz = imgsz;
    const std::string path = Path("tiny" + std::to_string(imgsz) + ".onnx");
    ASSERT_TRUE(ExportOnnx(model, options, path).ok());
    const Differences d = CompareWithTorch(model, path, imgsz);
    // Boxes are in pixels (up to imgsz): 1e-2 px is float32 noise, far below
    // any decoding mistake (a misplaced anchor is off by >= 4 px).
    EXPECT_LT(d.box, 1e-2) << "imgsz " << imgsz;
    EXPECT_LT(d.score, 1e-4) << "imgsz " << imgsz;
  }
}

TEST_F(OnnxExportTest, EveryOpsetMatchesAndPassesTheOnnxChecker) {
  nn::DetectionModel model = TinyModel(2);
  Randomise(model);
  for (int opset : {11, 12, 13}) {
    OnnxExportOptions options;
    options.imgsz = 64;
    options.opset = opset;
    const std::string path = Path("opset" + std::to_string(opset) + ".onnx");
    ASSERT_TRUE(ExportOnnx(model, options, path).ok());
    EXPECT_NO_THROW(onnx::checker::check_model(path)) << "opset " << opset;

    // Strict shape inference agrees with the declared output shape:
    // A = 8*8 + 4*4 + 2*2 = 84 anchors, 4 + 2 rows.
    onnx::ModelProto proto;
    std::ifstream in(path, std::ios::binary);
    ASSERT_TRUE(proto.ParseFromIstream(&in));
    EXPECT_EQ(proto.opset_import(0).version(), opset);
    EXPECT_NO_THROW(onnx::shape_inference::InferShapes(
        proto, onnx::OpSchemaRegistry::Instance(),
        onnx::ShapeInferenceOptions(true, 1)));
    ASSERT_EQ(proto.graph().input_size(), 1);
    EXPECT_EQ(proto.graph().input(0).name(), "images");
    ASSERT_EQ(proto.graph().output_size(), 1);
    const auto& out = proto.graph().output(0);
    EXPECT_EQ(out.name(), "output0");
    std::vector<int64_t> dims;
    for (const auto& d : out.type().tensor_type().shape().dim()) {
      dims.push_back(d.dim_value());
    }
    EXPECT_THAT(dims, ElementsAre(1, 6, 84));
    // BatchNorm is folded away.
    for (const auto& node : proto.graph().node()) {
      EXPECT_NE(node.op_type(), "BatchNormalization");
    }

    const Differences d = CompareWithTorch(model, path, 64);
    EXPECT_LT(d.box, 1e-2) << "opset " << opset;
    EXPECT_LT(d.score, 1e-4) << "opset " << opset;
  }
}

TEST_F(OnnxExportTest, NanoScaleMatchesAt320) {
  nn::DetectionModel model =
      *nn::MakeDetectionModel(*nn::ScaleOptions("n", 80));
  Randomise(model);
  OnnxExportOptions options;
  options.imgsz = 320;
  const std::string path = Path("n320.onnx");
  ASSERT_TRUE(ExportOnnx(model, options, path).ok());
  const Differences d = CompareWithTorch(model, path, 320);
  EXPECT_LT(d.box, 1e-2);
  EXPECT_LT(d.score, 1e-4);
}

TEST_F(OnnxExportTest, ExportLeavesTheModelUnchanged) {
  nn::DetectionModel model = TinyModel();
  Randomise(model);
  model->train();
  const torch::Tensor before =
      model->named_buffers()["model.0.bn.running_mean"].clone();
  OnnxExportOptions options;
  options.imgsz = 64;
  ASSERT_TRUE(ExportOnnx(model, options, Path("m.onnx")).ok());
  EXPECT_TRUE(model->is_training());
  EXPECT_TRUE(
      torch::equal(before, model->named_buffers()["model.0.bn.running_mean"]));
}

TEST_F(OnnxExportTest, MetadataRoundTrip) {
  nn::DetectionModel model = TinyModel(3);
  OnnxExportOptions options;
  options.imgsz = 96;
  options.metadata = {{"names", FormatNames({"cat", "dog", "it's"})},
                      {"date", "2024-01-02T03:04:05"},
                      {"version", "0.1.0"},
                      {"stride", "32"},
                      {"imgsz", "[1, 1]"}};  // overridden by options.imgsz
  const std::string path = Path("meta.onnx");
  ASSERT_TRUE(ExportOnnx(model, options, path).ok());
  auto detector = OnnxDetector::Load(path);
  ASSERT_TRUE(detector.ok()) << detector.status();
  EXPECT_THAT(detector->metadata(),
              UnorderedElementsAre(
                  Pair("names", "{0: 'cat', 1: 'dog', 2: \"it's\"}"),
                  Pair("date", "2024-01-02T03:04:05"), Pair("version", "0.1.0"),
                  Pair("stride", "32"), Pair("imgsz", "[96, 96]"),
                  Pair("task", "detect"), Pair("batch", "1")));
  EXPECT_EQ(detector->imgsz(), 96);
  EXPECT_EQ(detector->num_classes(), 3);
  EXPECT_EQ(detector->stride(), 32);
  EXPECT_THAT(detector->names(), ElementsAre("cat", "dog", "it's"));

  onnx::ModelProto proto;
  std::ifstream in(path, std::ios::binary);
  ASSERT_TRUE(proto.ParseFromIstream(&in));
  EXPECT_EQ(proto.producer_name(), "yolohook");
  EXPECT_EQ(proto.producer_version(), "0.1.0");
}

TEST_F(OnnxExportTest, DefaultMetadataNamesEveryClass) {
  nn::DetectionModel model = TinyModel(2);
  OnnxExportOptions options;
  options.imgsz = 64;
  const std::string path = Path("default.onnx");
  ASSERT_TRUE(ExportOnnx(model, options, path).ok());
  auto detector = OnnxDetector::Load(path);
  ASSERT_TRUE(detector.ok()) << detector.status();
  EXPECT_THAT(detector->names(), ElementsAre("class0", "class1"));
  EXPECT_EQ(detector->metadata().at("task"), "detect");
  EXPECT_EQ(detector->metadata().at("imgsz"), "[64, 64]");
}

TEST_F(OnnxExportTest, RejectsBadOptions) {
  nn::DetectionModel model = TinyModel(3);
  for (int imgsz : {0, -32, 100, 16}) {
    OnnxExportOptions options;
    options.imgsz = imgsz;
    const absl::Status status = ExportOnnx(model, options, Path("x.onnx"));
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << imgsz;
    EXPECT_THAT(std::string(status.message()), HasSubstr("imgsz"));
  }
  OnnxExportOptions options;
  options.imgsz = 64;
  options.opset = 10;
  EXPECT_EQ(ExportOnnx(model, options, Path("x.onnx")).code(),
            absl::StatusCode::kInvalidArgument);
  options.opset = 12;
  options.metadata["names"] = FormatNames({"only", "two"});
  absl::Status status = ExportOnnx(model, options, Path("x.onnx"));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("2 classes"));
  options.metadata["names"] = "{0: 'a'";
  EXPECT_EQ(ExportOnnx(model, options, Path("x.onnx")).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(Path("x.onnx")));
}

TEST_F(OnnxExportTest, UnwritablePathFailsNamingItAndLeavesNoFile) {
  nn::DetectionModel model = TinyModel(3);
  OnnxExportOptions options;
  options.imgsz = 64;
  // A missing directory.
  const std::string missing = Path("no/such/dir/model.onnx");
  absl::Status status = ExportOnnx(model, options, missing);
  EXPECT_TRUE(status.code() == absl::StatusCode::kInternal ||
              status.code() == absl::StatusCode::kPermissionDenied)
      << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(missing));
  // A path that is a directory: the rename onto it fails after writing.
  const std::string directory = Path("taken.onnx");
  fs::create_directories(fs::path(directory) / "child");
  status = ExportOnnx(model, options, directory);
  EXPECT_TRUE(status.code() == absl::StatusCode::kInternal ||
              status.code() == absl::StatusCode::kPermissionDenied)
      << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(directory));
  EXPECT_FALSE(fs::exists(directory + ".partial"));
  // procfs refuses new files even to root.
  status = ExportOnnx(model, options, "/proc/yolohook_model.onnx");
  EXPECT_TRUE(status.code() == absl::StatusCode::kInternal ||
              status.code() == absl::StatusCode::kPermissionDenied)
      << status;
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("/proc/yolohook_model.onnx"));
}

TEST_F(OnnxExportTest, LoadErrorsNameThePath) {
  const std::string missing = Path("missing.onnx");
  auto detector = OnnxDetector::Load(missing);
  EXPECT_EQ(detector.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(detector.status().message()), HasSubstr(missing));

  const std::string garbage = Path("garbage.onnx");
  std::ofstream(garbage) << "this is not an ONNX model, just some text\n";
  detector = OnnxDetector::Load(garbage);
  EXPECT_EQ(detector.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(detector.status().message()), HasSubstr(garbage));

  const std::string empty = Path("empty.onnx");
  std::ofstream(empty).flush();
  EXPECT_EQ(OnnxDetector::Load(empty).status().code(),
            absl::StatusCode::kInvalidArgument);

  // Random bytes that may happen to parse as protobuf fields.
  const std::string noise = Path("noise.onnx");
  {
    std::ofstream out(noise, std::ios::binary);
    const torch::Tensor bytes = torch::randint(0, 256, {4096}, torch::kUInt8);
    out.write(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()), 4096);
  }
  EXPECT_EQ(OnnxDetector::Load(noise).status().code(),
            absl::StatusCode::kInvalidArgument);

  EXPECT_EQ(OnnxDetector::Load(dir_.string()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(OnnxExportTest, LoadRejectsNamesThatDoNotFitTheOutput) {
  nn::DetectionModel model = TinyModel(3);
  OnnxExportOptions options;
  options.imgsz = 64;
  const std::string path = Path("m.onnx");
  ASSERT_TRUE(ExportOnnx(model, options, path).ok());
  onnx::ModelProto proto;
  {
    std::ifstream in(path, std::ios::binary);
    ASSERT_TRUE(proto.ParseFromIstream(&in));
  }
  for (auto& entry : *proto.mutable_metadata_props()) {
    if (entry.key() == "names") entry.set_value("{0: 'a'}");
  }
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    ASSERT_TRUE(proto.SerializeToOstream(&out));
  }
  auto detector = OnnxDetector::Load(path);
  EXPECT_EQ(detector.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(detector.status().message()), HasSubstr("names 1"));
}

TEST_F(OnnxExportTest, RunRejectsBlobsOfTheWrongShapeOrType) {
  nn::DetectionModel model = TinyModel(3);
  OnnxExportOptions options;
  options.imgsz = 64;
  const std::string path = Path("m.onnx");
  ASSERT_TRUE(ExportOnnx(model, options, path).ok());
  auto detector = OnnxDetector::Load(path);
  ASSERT_TRUE(detector.ok()) << detector.status();
  const int wrong_size[] = {1, 3, 96, 96};
  const int right_size[] = {1, 3, 64, 64};
  const int batch2[] = {2, 3, 64, 64};
  for (const cv::Mat& blob :
       {cv::Mat(), cv::Mat(4, wrong_size, CV_32F, cv::Scalar(0)),
        cv::Mat(4, right_size, CV_8U, cv::Scalar(0)),
        cv::Mat(4, batch2, CV_32F, cv::Scalar(0)),
        cv::Mat(64, 64, CV_32FC3, cv::Scalar(0, 0, 0))}) {
    auto out = detector->Run(blob);
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(out.status().message()), HasSubstr("1x3x64x64"));
  }
  // A good blob still runs afterwards, twice with the same result.
  const cv::Mat blob(4, right_size, CV_32F, cv::Scalar(0.5));
  auto first = detector->Run(blob);
  auto second = detector->Run(blob);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(cv::norm(*first, *second, cv::NORM_INF), 0.0);
  EXPECT_EQ(first->size[2], 8 * 8 + 4 * 4 + 2 * 2);
}

}  // namespace
}  // namespace yolohook::exporter
