// A small builder of ONNX graphs with static shapes, limited to the operators
// the detector needs and written so that OpenCV 4.6's ONNX importer reads them:
// every elementwise operator takes two inputs of the same shape (no
// broadcasting), Softmax always works on the last axis (where the opset < 13
// and opset >= 13 semantics agree) and Resize takes constant scales.
//
// Internal to yolohook::export: the exporter turns the network into calls of
// this builder; tests use it to check single operators against OpenCV DNN.
#ifndef YOLOHOOK_SERVER_ENGINE_EXPORT_ONNX_GRAPH_H_
#define YOLOHOOK_SERVER_ENGINE_EXPORT_ONNX_GRAPH_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "onnx/onnx_pb.h"

namespace yolohook::exporter {

// A static tensor shape.
using Shape = std::vector<int64_t>;

// A float tensor held on the host, row-major.
struct FloatTensor {
  // dimensions
  Shape shape;
  // product(shape) values
  std::vector<float> data;
};

// Metadata of the model file (ModelProto fields outside the graph).
struct OnnxModelInfo {
  // default-domain operator set version
  int opset = 12;
  // ModelProto.producer_name
  std::string producer_name;
  // ModelProto.producer_version
  std::string producer_version;
  // ModelProto.doc_string
  std::string doc_string;
  // metadata_props
  std::map<std::string, std::string> metadata;
};

// Builds one ONNX graph node by node. Each operator method takes the names of
// existing values, checks their shapes, adds the node and returns the name of
// its output value. `name` becomes the node's name and, made unique if needed,
// its output's name.
//
// Errors are sticky: after the first failure, operators do nothing and return
// an empty name, and status() / Finish() report the first error, so callers can
// write a whole graph and check once.
//
// Thread-compatible.
class OnnxGraphBuilder {
 public:
  explicit OnnxGraphBuilder(absl::string_view graph_name);

  OnnxGraphBuilder(const OnnxGraphBuilder&) = delete;
  OnnxGraphBuilder& operator=(const OnnxGraphBuilder&) = delete;

  // Declares a float graph input.
  std::string Input(absl::string_view name, const Shape& shape);

  // Declares `value` a graph output. The output keeps the value's name, so
  // give the producing operator the name the output should have.
  void Output(absl::string_view value);

  // Adds a constant (a graph initializer) and returns its name.
  std::string Constant(absl::string_view name, FloatTensor tensor);
  std::string Int64Constant(absl::string_view name,
                            const std::vector<int64_t>& values);

  // 2-D convolution of `x` (N,C,H,W) with weight (O, C/group, kh, kw) and an
  // optional bias (O) (empty data = none), symmetric padding.
  std::string Conv(absl::string_view name, absl::string_view x,
                   FloatTensor weight, std::vector<float> bias, int stride,
                   int pad, int group = 1);
  // x * sigmoid(x).
  std::string Silu(absl::string_view name, absl::string_view x);
  std::string Sigmoid(absl::string_view name, absl::string_view x);
  // Elementwise operations of two values of the same shape.
  std::string Add(absl::string_view name, absl::string_view a,
                  absl::string_view b);
  std::string Mul(absl::string_view name, absl::string_view a,
                  absl::string_view b);
  // Concatenation along `axis` (non-negative).
  std::string Concat(absl::string_view name,
                     const std::vector<std::string>& inputs, int axis);
  // Square max pooling of (N,C,H,W) with symmetric padding.
  std::string MaxPool(absl::string_view name, absl::string_view x, int kernel,
                      int stride, int pad);
  // Nearest-neighbour upsampling of (N,C,H,W) by an integer factor, as
  // torch's nearest interpolation (source index = floor(dst / factor)).
  std::string UpsampleNearest(absl::string_view name, absl::string_view x,
                              int factor);
  // Reshape to `shape` (explicit dimensions, same number of elements).
  std::string Reshape(absl::string_view name, absl::string_view x,
                      const Shape& shape);
  // Permutes the axes: output axis i is input axis perm[i].
  std::string Transpose(absl::string_view name, absl::string_view x,
                        const std::vector<int64_t>& perm);
  // Softmax over the last axis.
  std::string SoftmaxLastAxis(absl::string_view name, absl::string_view x);

  // The shape of a value, or empty if there is no such value.
  Shape ShapeOf(absl::string_view value) const;

  // OK, or the first error of an operator.
  const absl::Status& status() const { return status_; }

  // Completes the model. Errors: the first operator error; INVALID_ARGUMENT for
  // an opset outside 11..13 or a graph without inputs or outputs.
  absl::StatusOr<onnx::ModelProto> Finish(const OnnxModelInfo& info) &&;

 private:
  // Sets the sticky error if `ok` is false; returns `ok`.
  bool Check(bool ok, absl::string_view what);
  // True if every value exists; sets the error otherwise.
  bool HaveValues(absl::string_view op, const std::vector<std::string>& values);
  // A value name derived from `name` that is not used yet; records its shape.
  std::string NewValue(absl::string_view name, const Shape& shape);
  onnx::NodeProto* AddNode(absl::string_view op_type, absl::string_view name,
                           const std::vector<std::string>& inputs,
                           const std::string& output);

  onnx::GraphProto graph_;
  std::map<std::string, Shape> shapes_;
  std::map<std::string, int> node_names_;
  absl::Status status_;
};

// Number of elements of `shape`.
int64_t NumElements(const Shape& shape);

// "1x3x64x64", for messages.
std::string ShapeToString(const Shape& shape);

}  // namespace yolohook::exporter

#endif  // YOLOHOOK_SERVER_ENGINE_EXPORT_ONNX_GRAPH_H_
