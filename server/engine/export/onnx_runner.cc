#include "server/engine/export/onnx_runner.h"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "onnx/onnx_pb.h"
#include "server/common/status_macros.h"
#include "server/engine/export/onnx_graph.h"
#include "server/engine/export/onnx_metadata.h"

namespace yolohook::exporter {
namespace {

// The static dimensions of a graph value (-1 where symbolic or unknown).
Shape StaticShape(const onnx::ValueInfoProto& info) {
  Shape shape;
  if (!info.type().has_tensor_type()) return shape;
  for (const auto& dim : info.type().tensor_type().shape().dim()) {
    shape.push_back(dim.has_dim_value() ? dim.dim_value() : -1);
  }
  return shape;
}

// The first graph input that is not an initializer (old exporters list
// initializers among the inputs).
const onnx::ValueInfoProto* DataInput(const onnx::GraphProto& graph) {
  std::set<std::string> initializers;
  for (const auto& t : graph.initializer()) initializers.insert(t.name());
  for (const auto& input : graph.input()) {
    if (initializers.count(input.name()) == 0) return &input;
  }
  return nullptr;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::error_code error;
  const std::filesystem::file_status status =
      std::filesystem::status(path, error);
  if (!std::filesystem::exists(status)) {
    return absl::NotFoundError(absl::StrCat("ONNX model ", path, " not found"));
  }
  if (std::filesystem::is_directory(status)) {
    return absl::InvalidArgumentError(
        absl::StrCat("ONNX model ", path, " is a directory, not a file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot open ONNX model ", path, " for reading"));
  }
  std::string bytes((std::istreambuf_iterator<char>(in)),
                    std::istreambuf_iterator<char>());
  if (in.bad()) {
    return absl::InternalError(absl::StrCat("error reading ", path));
  }
  return bytes;
}

}  // namespace

absl::StatusOr<OnnxDetector> OnnxDetector::Load(const std::string& path) {
  YH_ASSIGN_OR_RETURN(const std::string bytes, ReadFile(path));
  const auto not_onnx = [&path](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is not an ONNX detector OpenCV can load: ", why));
  };
  onnx::ModelProto model;
  if (bytes.empty() || !model.ParseFromString(bytes)) {
    return not_onnx("it does not parse as an ONNX ModelProto");
  }
  const onnx::GraphProto& graph = model.graph();
  const onnx::ValueInfoProto* input = DataInput(graph);
  if (graph.node_size() == 0 || input == nullptr || graph.output_size() == 0) {
    return not_onnx("its graph has no nodes, inputs or outputs");
  }

  OnnxDetector detector;
  detector.path_ = path;
  for (const auto& entry : model.metadata_props()) {
    detector.metadata_[entry.key()] = entry.value();
  }

  // Input size: the metadata, else the graph's static input shape.
  const Shape input_shape = StaticShape(*input);
  if (auto it = detector.metadata_.find(kMetadataImgsz);
      it != detector.metadata_.end()) {
    absl::StatusOr<int> imgsz = ParseImgsz(it->second);
    if (!imgsz.ok()) return not_onnx(imgsz.status().message());
    detector.imgsz_ = *imgsz;
  } else if (input_shape.size() == 4 && input_shape[2] > 0 &&
             input_shape[2] == input_shape[3]) {
    detector.imgsz_ = static_cast<int>(input_shape[2]);
  } else {
    return not_onnx(
        "it has neither imgsz metadata nor a static square input shape");
  }
  if (auto it = detector.metadata_.find(kMetadataStride);
      it != detector.metadata_.end() &&
      (!absl::SimpleAtoi(it->second, &detector.stride_) ||
       detector.stride_ <= 0)) {
    return not_onnx(absl::StrCat("bad stride metadata \"", it->second, "\""));
  }

  // Classes: the output's rows (4 box rows + nc), checked against the names.
  const Shape output_shape = StaticShape(graph.output(0));
  const int64_t rows =
      output_shape.size() == 3 && output_shape[1] > 0 ? output_shape[1] : -1;
  if (rows != -1 && rows < 5) {
    return not_onnx(absl::StrCat("output shape ", ShapeToString(output_shape),
                                 " is not (1, 4 + nc, anchors)"));
  }
  if (auto it = detector.metadata_.find(kMetadataNames);
      it != detector.metadata_.end()) {
    absl::StatusOr<std::vector<std::string>> names = ParseNames(it->second);
    if (!names.ok()) return not_onnx(names.status().message());
    detector.names_ = *std::move(names);
    if (rows != -1 &&
        static_cast<int64_t>(detector.names_.size()) != rows - 4) {
      return not_onnx(absl::StrCat("its metadata names ",
                                   detector.names_.size(),
                                   " classes but the output has ", rows - 4));
    }
  } else if (rows != -1) {
    detector.names_ = DefaultNames(static_cast<int>(rows - 4));
  } else {
    return not_onnx("it has neither names metadata nor a static output shape");
  }
  if (detector.names_.empty()) return not_onnx("it has no classes");

  try {
    detector.net_ = cv::dnn::readNetFromONNX(bytes.data(), bytes.size());
    if (detector.net_.empty()) return not_onnx("OpenCV built an empty network");
    detector.net_.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
    detector.net_.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
  } catch (const cv::Exception& e) {
    return not_onnx(e.what());
  }
  return detector;
}

absl::StatusOr<cv::Mat> OnnxDetector::Run(const cv::Mat& blob) {
  if (blob.dims != 4 || blob.type() != CV_32F || blob.size[0] != 1 ||
      blob.size[1] != 3 || blob.size[2] != imgsz_ || blob.size[3] != imgsz_) {
    std::string got = blob.empty() ? "an empty Mat" : "";
    for (int i = 0; i < blob.dims && !blob.empty(); ++i) {
      absl::StrAppend(&got, i == 0 ? "" : "x", blob.size[i]);
    }
    if (!blob.empty()) {
      absl::StrAppend(&got, blob.type() == CV_32F ? " CV_32F" : " not CV_32F");
    }
    return absl::InvalidArgumentError(absl::StrCat(path_, " expects a 1x3x",
                                                   imgsz_, "x", imgsz_,
                                                   " CV_32F blob, got ", got));
  }
  cv::Mat out;
  try {
    net_.setInput(blob);
    out = net_.forward().clone();  // forward() may alias the net's buffers
  } catch (const cv::Exception& e) {
    return absl::InternalError(
        absl::StrCat("OpenCV DNN failed to run ", path_, ": ", e.what()));
  }
  if (out.dims != 3 || out.size[0] != 1 || out.size[1] != num_classes() + 4) {
    return absl::InternalError(
        absl::StrCat(path_, " produced an output that is not (1, ",
                     num_classes() + 4, ", anchors)"));
  }
  return out;
}

}  // namespace yolohook::exporter
