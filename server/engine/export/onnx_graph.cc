#include "server/engine/export/onnx_graph.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace yolohook::exporter {
namespace {

// IR version 7 is what opsets 12 and 13 were released with; it also carries
// opset 11 models and is read by OpenCV 4.6 and by ONNX >= 1.7.
constexpr int64_t kIrVersion = 7;

void SetShape(onnx::ValueInfoProto* info, const Shape& shape) {
  auto* tensor_type = info->mutable_type()->mutable_tensor_type();
  tensor_type->set_elem_type(onnx::TensorProto::FLOAT);
  auto* tensor_shape = tensor_type->mutable_shape();
  for (int64_t d : shape) tensor_shape->add_dim()->set_dim_value(d);
}

void SetIntAttribute(onnx::NodeProto* node, absl::string_view name,
                     int64_t value) {
  auto* attr = node->add_attribute();
  attr->set_name(std::string(name));
  attr->set_type(onnx::AttributeProto::INT);
  attr->set_i(value);
}

void SetIntsAttribute(onnx::NodeProto* node, absl::string_view name,
                      const std::vector<int64_t>& values) {
  auto* attr = node->add_attribute();
  attr->set_name(std::string(name));
  attr->set_type(onnx::AttributeProto::INTS);
  for (int64_t v : values) attr->add_ints(v);
}

void SetStringAttribute(onnx::NodeProto* node, absl::string_view name,
                        absl::string_view value) {
  auto* attr = node->add_attribute();
  attr->set_name(std::string(name));
  attr->set_type(onnx::AttributeProto::STRING);
  attr->set_s(std::string(value));
}

}  // namespace

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeToString(const Shape& shape) {
  return shape.empty() ? "scalar" : absl::StrJoin(shape, "x");
}

OnnxGraphBuilder::OnnxGraphBuilder(absl::string_view graph_name) {
  graph_.set_name(std::string(graph_name));
}

bool OnnxGraphBuilder::Check(bool ok, absl::string_view what) {
  if (!ok && status_.ok()) {
    status_ = absl::InvalidArgumentError(
        absl::StrCat("ONNX graph ", graph_.name(), ": ", what));
  }
  return ok;
}

bool OnnxGraphBuilder::HaveValues(absl::string_view op,
                                  const std::vector<std::string>& values) {
  if (!status_.ok()) return false;
  for (const std::string& v : values) {
    if (!Check(shapes_.count(v) > 0,
               absl::StrCat(op, ": unknown input value \"", v, "\""))) {
      return false;
    }
  }
  return true;
}

std::string OnnxGraphBuilder::NewValue(absl::string_view name,
                                       const Shape& shape) {
  std::string value(name);
  for (int i = 1; value.empty() || shapes_.count(value) > 0; ++i) {
    value = absl::StrCat(name, "_", i);
  }
  shapes_[value] = shape;
  return value;
}

onnx::NodeProto* OnnxGraphBuilder::AddNode(
    absl::string_view op_type, absl::string_view name,
    const std::vector<std::string>& inputs, const std::string& output) {
  onnx::NodeProto* node = graph_.add_node();
  node->set_op_type(std::string(op_type));
  // Node names need not be unique in ONNX, but unique names make tools and
  // error messages unambiguous.
  int& uses = node_names_[std::string(name)];
  node->set_name(uses == 0 ? std::string(name) : absl::StrCat(name, "_", uses));
  ++uses;
  for (const std::string& in : inputs) node->add_input(in);
  node->add_output(output);
  return node;
}

Shape OnnxGraphBuilder::ShapeOf(absl::string_view value) const {
  auto it = shapes_.find(std::string(value));
  return it == shapes_.end() ? Shape() : it->second;
}

std::string OnnxGraphBuilder::Input(absl::string_view name,
                                    const Shape& shape) {
  if (!status_.ok()) return "";
  if (!Check(shapes_.count(std::string(name)) == 0,
             absl::StrCat("input \"", name, "\" is declared twice"))) {
    return "";
  }
  std::string value = NewValue(name, shape);
  SetShape(graph_.add_input(), shape);
  graph_.mutable_input(graph_.input_size() - 1)->set_name(value);
  return value;
}

void OnnxGraphBuilder::Output(absl::string_view value) {
  if (!HaveValues("Output", {std::string(value)})) return;
  onnx::ValueInfoProto* info = graph_.add_output();
  info->set_name(std::string(value));
  SetShape(info, shapes_[std::string(value)]);
}

std::string OnnxGraphBuilder::Constant(absl::string_view name,
                                       FloatTensor tensor) {
  if (!status_.ok()) return "";
  if (!Check(
          NumElements(tensor.shape) == static_cast<int64_t>(tensor.data.size()),
          absl::StrCat("constant ", name, " has ", tensor.data.size(),
                       " values for shape ", ShapeToString(tensor.shape)))) {
    return "";
  }
  std::string value = NewValue(name, tensor.shape);
  onnx::TensorProto* t = graph_.add_initializer();
  t->set_name(value);
  t->set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : tensor.shape) t->add_dims(d);
  t->mutable_float_data()->Add(tensor.data.begin(), tensor.data.end());
  return value;
}

std::string OnnxGraphBuilder::Int64Constant(
    absl::string_view name, const std::vector<int64_t>& values) {
  if (!status_.ok()) return "";
  std::string value =
      NewValue(name, Shape{static_cast<int64_t>(values.size())});
  onnx::TensorProto* t = graph_.add_initializer();
  t->set_name(value);
  t->set_data_type(onnx::TensorProto::INT64);
  t->add_dims(static_cast<int64_t>(values.size()));
  t->mutable_int64_data()->Add(values.begin(), values.end());
  return value;
}

std::string OnnxGraphBuilder::Conv(absl::string_view name, absl::string_view x,
                                   FloatTensor weight, std::vector<float> bias,
                                   int stride, int pad, int group) {
  if (!HaveValues("Conv", {std::string(x)})) return "";
  const Shape in = shapes_[std::string(x)];
  const Shape w = weight.shape;
  if (!Check(in.size() == 4 && w.size() == 4 && stride > 0 && pad >= 0 &&
                 group > 0 && w[0] % group == 0 && in[1] == w[1] * group,
             absl::StrCat("Conv ", name, ": input ", ShapeToString(in),
                          " does not fit weight ", ShapeToString(w),
                          " with group ", group))) {
    return "";
  }
  if (!Check(bias.empty() || static_cast<int64_t>(bias.size()) == w[0],
             absl::StrCat("Conv ", name, ": ", bias.size(), " biases for ",
                          w[0], " output channels"))) {
    return "";
  }
  const int64_t out_h = (in[2] + 2 * pad - w[2]) / stride + 1;
  const int64_t out_w = (in[3] + 2 * pad - w[3]) / stride + 1;
  if (!Check(out_h > 0 && out_w > 0,
             absl::StrCat("Conv ", name, ": input ", ShapeToString(in),
                          " is smaller than the kernel"))) {
    return "";
  }
  std::vector<std::string> inputs = {
      std::string(x),
      Constant(absl::StrCat(name, ".weight"), std::move(weight))};
  if (!bias.empty()) {
    const int64_t n = static_cast<int64_t>(bias.size());
    inputs.push_back(Constant(absl::StrCat(name, ".bias"),
                              FloatTensor{{n}, std::move(bias)}));
  }
  if (!status_.ok()) return "";
  const std::string out = NewValue(name, {in[0], w[0], out_h, out_w});
  onnx::NodeProto* node = AddNode("Conv", name, inputs, out);
  SetIntsAttribute(node, "dilations", {1, 1});
  SetIntAttribute(node, "group", group);
  SetIntsAttribute(node, "kernel_shape", {w[2], w[3]});
  SetIntsAttribute(node, "pads", {pad, pad, pad, pad});
  SetIntsAttribute(node, "strides", {stride, stride});
  return out;
}

std::string OnnxGraphBuilder::Sigmoid(absl::string_view name,
                                      absl::string_view x) {
  if (!HaveValues("Sigmoid", {std::string(x)})) return "";
  const std::string out = NewValue(name, shapes_[std::string(x)]);
  AddNode("Sigmoid", name, {std::string(x)}, out);
  return out;
}

std::string OnnxGraphBuilder::Silu(absl::string_view name,
                                   absl::string_view x) {
  const std::string sigmoid = Sigmoid(absl::StrCat(name, "/Sigmoid"), x);
  return Mul(absl::StrCat(name, "/Mul"), x, sigmoid);
}

std::string OnnxGraphBuilder::Add(absl::string_view name, absl::string_view a,
                                  absl::string_view b) {
  if (!HaveValues("Add", {std::string(a), std::string(b)})) return "";
  const Shape shape = shapes_[std::string(a)];
  if (!Check(
          shape == shapes_[std::string(b)],
          absl::StrCat("Add ", name, ": shapes ", ShapeToString(shape), " and ",
                       ShapeToString(shapes_[std::string(b)]), " differ"))) {
    return "";
  }
  const std::string out = NewValue(name, shape);
  AddNode("Add", name, {std::string(a), std::string(b)}, out);
  return out;
}

std::string OnnxGraphBuilder::Mul(absl::string_view name, absl::string_view a,
                                  absl::string_view b) {
  if (!HaveValues("Mul", {std::string(a), std::string(b)})) return "";
  const Shape shape = shapes_[std::string(a)];
  if (!Check(
          shape == shapes_[std::string(b)],
          absl::StrCat("Mul ", name, ": shapes ", ShapeToString(shape), " and ",
                       ShapeToString(shapes_[std::string(b)]), " differ"))) {
    return "";
  }
  const std::string out = NewValue(name, shape);
  AddNode("Mul", name, {std::string(a), std::string(b)}, out);
  return out;
}

std::string OnnxGraphBuilder::Concat(absl::string_view name,
                                     const std::vector<std::string>& inputs,
                                     int axis) {
  if (!HaveValues("Concat", inputs)) return "";
  if (!Check(!inputs.empty(), absl::StrCat("Concat ", name, ": no inputs"))) {
    return "";
  }
  Shape shape = shapes_[inputs[0]];
  if (!Check(axis >= 0 && axis < static_cast<int>(shape.size()),
             absl::StrCat("Concat ", name, ": axis ", axis, " out of range"))) {
    return "";
  }
  for (size_t i = 1; i < inputs.size(); ++i) {
    Shape other = shapes_[inputs[i]];
    bool fits = other.size() == shape.size();
    for (size_t d = 0; fits && d < shape.size(); ++d) {
      fits = static_cast<int>(d) == axis || other[d] == shape[d];
    }
    if (!Check(fits, absl::StrCat("Concat ", name, ": shape ",
                                  ShapeToString(other), " does not fit ",
                                  ShapeToString(shape), " on axis ", axis))) {
      return "";
    }
    shape[axis] += other[axis];
  }
  const std::string out = NewValue(name, shape);
  SetIntAttribute(AddNode("Concat", name, inputs, out), "axis", axis);
  return out;
}

std::string OnnxGraphBuilder::MaxPool(absl::string_view name,
                                      absl::string_view x, int kernel,
                                      int stride, int pad) {
  if (!HaveValues("MaxPool", {std::string(x)})) return "";
  const Shape in = shapes_[std::string(x)];
  if (!Check(in.size() == 4 && kernel > 0 && stride > 0 && pad >= 0 &&
                 pad < kernel,
             absl::StrCat("MaxPool ", name, ": bad input ", ShapeToString(in),
                          " or kernel ", kernel, " pad ", pad))) {
    return "";
  }
  const int64_t out_h = (in[2] + 2 * pad - kernel) / stride + 1;
  const int64_t out_w = (in[3] + 2 * pad - kernel) / stride + 1;
  if (!Check(out_h > 0 && out_w > 0,
             absl::StrCat("MaxPool ", name, ": input ", ShapeToString(in),
                          " is smaller than the kernel"))) {
    return "";
  }
  const std::string out = NewValue(name, {in[0], in[1], out_h, out_w});
  onnx::NodeProto* node = AddNode("MaxPool", name, {std::string(x)}, out);
  SetIntsAttribute(node, "kernel_shape", {kernel, kernel});
  SetIntsAttribute(node, "pads", {pad, pad, pad, pad});
  SetIntsAttribute(node, "strides", {stride, stride});
  return out;
}

std::string OnnxGraphBuilder::UpsampleNearest(absl::string_view name,
                                              absl::string_view x, int factor) {
  if (!HaveValues("Resize", {std::string(x)})) return "";
  const Shape in = shapes_[std::string(x)];
  if (!Check(in.size() == 4 && factor > 0,
             absl::StrCat("Resize ", name, ": bad input ", ShapeToString(in),
                          " or factor ", factor))) {
    return "";
  }
  // Opsets 11 and 12 require the roi input (unused by "asymmetric"); an empty
  // tensor stands for it.
  const std::string roi = Constant(absl::StrCat(name, ".roi"), {{0}, {}});
  const auto f = static_cast<float>(factor);
  const std::string scales =
      Constant(absl::StrCat(name, ".scales"), {{4}, {1.0f, 1.0f, f, f}});
  const std::string out =
      NewValue(name, {in[0], in[1], in[2] * factor, in[3] * factor});
  onnx::NodeProto* node =
      AddNode("Resize", name, {std::string(x), roi, scales}, out);
  SetStringAttribute(node, "coordinate_transformation_mode", "asymmetric");
  SetStringAttribute(node, "mode", "nearest");
  SetStringAttribute(node, "nearest_mode", "floor");
  return out;
}

std::string OnnxGraphBuilder::Reshape(absl::string_view name,
                                      absl::string_view x, const Shape& shape) {
  if (!HaveValues("Reshape", {std::string(x)})) return "";
  const Shape in = shapes_[std::string(x)];
  const bool positive =
      std::all_of(shape.begin(), shape.end(), [](int64_t d) { return d > 0; });
  if (!Check(positive && NumElements(shape) == NumElements(in),
             absl::StrCat("Reshape ", name, ": cannot reshape ",
                          ShapeToString(in), " to ", ShapeToString(shape)))) {
    return "";
  }
  const std::string target = Int64Constant(absl::StrCat(name, ".shape"), shape);
  const std::string out = NewValue(name, shape);
  AddNode("Reshape", name, {std::string(x), target}, out);
  return out;
}

std::string OnnxGraphBuilder::Transpose(absl::string_view name,
                                        absl::string_view x,
                                        const std::vector<int64_t>& perm) {
  if (!HaveValues("Transpose", {std::string(x)})) return "";
  const Shape in = shapes_[std::string(x)];
  std::vector<int64_t> sorted = perm;
  std::sort(sorted.begin(), sorted.end());
  bool valid = perm.size() == in.size();
  for (size_t i = 0; valid && i < sorted.size(); ++i) {
    valid = sorted[i] == static_cast<int64_t>(i);
  }
  if (!Check(valid, absl::StrCat("Transpose ", name, ": permutation ",
                                 absl::StrJoin(perm, ","), " does not fit ",
                                 ShapeToString(in)))) {
    return "";
  }
  Shape shape(in.size());
  for (size_t i = 0; i < perm.size(); ++i) shape[i] = in[perm[i]];
  const std::string out = NewValue(name, shape);
  SetIntsAttribute(AddNode("Transpose", name, {std::string(x)}, out), "perm",
                   perm);
  return out;
}

std::string OnnxGraphBuilder::SoftmaxLastAxis(absl::string_view name,
                                              absl::string_view x) {
  if (!HaveValues("Softmax", {std::string(x)})) return "";
  const Shape in = shapes_[std::string(x)];
  if (!Check(!in.empty(), absl::StrCat("Softmax ", name, ": scalar input"))) {
    return "";
  }
  const std::string out = NewValue(name, in);
  // A positive axis: OpenCV 4.6 and every opset read it the same way.
  SetIntAttribute(AddNode("Softmax", name, {std::string(x)}, out), "axis",
                  static_cast<int64_t>(in.size()) - 1);
  return out;
}

absl::StatusOr<onnx::ModelProto> OnnxGraphBuilder::Finish(
    const OnnxModelInfo& info) && {
  if (!status_.ok()) return status_;
  if (info.opset < 11 || info.opset > 13) {
    return absl::InvalidArgumentError(
        absl::StrCat("opset ", info.opset,
                     " is not supported: use 11, 12 or 13 (OpenCV 4.6 reads "
                     "these)"));
  }
  if (graph_.input_size() == 0 || graph_.output_size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ONNX graph ", graph_.name(), " needs at least one input and output"));
  }
  onnx::ModelProto model;
  model.set_ir_version(kIrVersion);
  onnx::OperatorSetIdProto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(info.opset);
  model.set_producer_name(info.producer_name);
  model.set_producer_version(info.producer_version);
  model.set_doc_string(info.doc_string);
  for (const auto& [key, value] : info.metadata) {
    onnx::StringStringEntryProto* entry = model.add_metadata_props();
    entry->set_key(key);
    entry->set_value(value);
  }
  *model.mutable_graph() = std::move(graph_);
  return model;
}

}  // namespace yolohook::exporter
