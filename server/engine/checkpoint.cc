#include "server/engine/checkpoint.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/engine/version.h"

namespace yolohook::engine {
namespace {

namespace fs = std::filesystem;

std::string MetaYaml(const Checkpoint& c) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "format" << YAML::Value << kCheckpointFormat;
  out << YAML::Key << "version" << YAML::Value << c.version;
  out << YAML::Key << "date" << YAML::Value << c.date;
  out << YAML::Key << "epoch" << YAML::Value << c.epoch;
  out << YAML::Key << "best_fitness" << YAML::Value << c.best_fitness;
  out << YAML::Key << "ema_updates" << YAML::Value << c.ema_updates;
  out << YAML::Key << "optimizer" << YAML::Value << c.optimizer_name;
  out << YAML::Key << "names" << YAML::Value << YAML::BeginSeq;
  for (const std::string& n : c.names) out << n;
  out << YAML::EndSeq;
  out << YAML::Key << "model" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "scale" << YAML::Value << c.options.scale;
  out << YAML::Key << "depth_multiple" << YAML::Value
      << c.options.depth_multiple;
  out << YAML::Key << "width_multiple" << YAML::Value
      << c.options.width_multiple;
  out << YAML::Key << "max_channels" << YAML::Value << c.options.max_channels;
  out << YAML::Key << "nc" << YAML::Value << c.options.nc;
  out << YAML::Key << "reg_max" << YAML::Value << c.options.reg_max;
  out << YAML::EndMap;
  out << YAML::Key << "train_metrics" << YAML::Value << YAML::BeginMap;
  for (const auto& [k, v] : c.train_metrics)
    out << YAML::Key << k << YAML::Value << v;
  out << YAML::EndMap;
  out << YAML::Key << "args" << YAML::Value << ConfigToYaml(c.args);
  out << YAML::EndMap;
  return out.c_str();
}

absl::Status ParseMeta(const std::string& yaml, Checkpoint& c) {
  try {
    YAML::Node m = YAML::Load(yaml);
    if (!m.IsMap() || m["format"].as<std::string>("") != kCheckpointFormat) {
      return absl::InvalidArgumentError("not a yolohook checkpoint");
    }
    c.version = m["version"].as<std::string>("");
    c.date = m["date"].as<std::string>("");
    c.epoch = m["epoch"].as<int>(-1);
    c.best_fitness = m["best_fitness"].as<double>(0);
    c.ema_updates = m["ema_updates"].as<int64_t>(0);
    c.optimizer_name = m["optimizer"].as<std::string>("");
    for (const auto& n : m["names"]) c.names.push_back(n.as<std::string>());
    YAML::Node mo = m["model"];
    c.options.scale = mo["scale"].as<std::string>("");
    c.options.depth_multiple = mo["depth_multiple"].as<double>();
    c.options.width_multiple = mo["width_multiple"].as<double>();
    c.options.max_channels = mo["max_channels"].as<int>();
    c.options.nc = mo["nc"].as<int>();
    c.options.reg_max = mo["reg_max"].as<int>();
    for (const auto& kv : m["train_metrics"]) {
      c.train_metrics[kv.first.as<std::string>()] = kv.second.as<double>();
    }
    YH_ASSIGN_OR_RETURN(c.args, ConfigFromYaml(m["args"].as<std::string>("")));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("damaged metadata: ", e.what()));
  }
  if (c.options.nc != static_cast<int>(c.names.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("metadata has nc=", c.options.nc, " but ", c.names.size(),
                     " class names"));
  }
  return absl::OkStatus();
}

torch::Tensor BytesToTensor(const std::string& bytes) {
  auto t = torch::empty({static_cast<int64_t>(bytes.size())}, torch::kUInt8);
  std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
  return t;
}

std::string TensorToBytes(const torch::Tensor& t) {
  auto c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.numel());
}

// A checkpoint is a zip archive: its last bytes hold the end-of-central-
// directory record. Checking for it first turns a cut-off copy or a file of
// another kind into an error that says so, instead of the archive reader's
// "failed finding central directory".
absl::Status CheckZipArchive(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot open checkpoint ", path));
  }
  char magic[4] = {};
  in.read(magic, sizeof(magic));
  const std::streamsize got = in.gcount();
  in.seekg(0, std::ios::end);
  const int64_t size = static_cast<int64_t>(in.tellg());
  if (got < 4 || std::string(magic, 4) != std::string("PK\x03\x04", 4)) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " is not a checkpoint (", size,
        " bytes that are not a zip archive, as .pt files written by yolohook "
        "or PyTorch are)"));
  }
  // The record is 22 bytes plus a comment of at most 64 KiB, at the end.
  const int64_t tail = std::min<int64_t>(size, 22 + 65535);
  std::string end(static_cast<size_t>(tail), '\0');
  in.seekg(size - tail);
  in.read(end.data(), tail);
  if (end.rfind(std::string("PK\x05\x06", 4)) == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint ", path, " is truncated or corrupt (", size,
        " bytes, without the end of its zip archive): copy it again, or use "
        "another checkpoint"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SaveCheckpoint(const Checkpoint& checkpoint,
                            const std::string& path) {
  std::string tmp = path + ".tmp";
  try {
    torch::serialize::OutputArchive archive;
    archive.write("meta", c10::IValue(MetaYaml(checkpoint)));
    torch::serialize::OutputArchive model;
    checkpoint.model->save(model);
    archive.write("model", model);
    if (checkpoint.ema) {
      torch::serialize::OutputArchive ema;
      checkpoint.ema->save(ema);
      archive.write("ema", ema);
    }
    if (!checkpoint.optimizer_state.empty()) {
      archive.write("optimizer", BytesToTensor(checkpoint.optimizer_state),
                    /*is_buffer=*/true);
    }
    fs::create_directories(fs::path(path).parent_path());
    archive.save_to(tmp);
  } catch (const std::exception& e) {
    std::remove(tmp.c_str());
    return absl::InternalError(
        absl::StrCat("cannot write checkpoint ", path, ": ", e.what()));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot write checkpoint ", path, ": ", ec.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<Checkpoint> LoadCheckpoint(const std::string& path) {
  if (!fs::exists(path))
    return absl::NotFoundError(absl::StrCat("checkpoint ", path, " not found"));
  YH_RETURN_IF_ERROR(CheckZipArchive(path));
  Checkpoint c;
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(path);
    c10::IValue meta;
    if (!archive.try_read("meta", meta) || !meta.isString()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, " is not a yolohook checkpoint (no metadata)"));
    }
    absl::Status s = ParseMeta(meta.toStringRef(), c);
    if (!s.ok())
      return absl::InvalidArgumentError(absl::StrCat(path, ": ", s.message()));
    c.model = nn::DetectionModel(c.options);
    torch::serialize::InputArchive model;
    if (!archive.try_read("model", model)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": no model weights"));
    }
    c.model->load(model);
    torch::serialize::InputArchive ema;
    if (archive.try_read("ema", ema)) {
      c.ema = nn::DetectionModel(c.options);
      c.ema->load(ema);
    }
    torch::Tensor opt;
    if (archive.try_read("optimizer", opt, /*is_buffer=*/true))
      c.optimizer_state = TensorToBytes(opt);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read checkpoint ", path,
                     " (corrupt?): ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot read checkpoint ", path, " (corrupt?): ", e.what()));
  }
  c.model->eval();
  if (c.ema) c.ema->eval();
  return c;
}

std::string SerializeOptimizer(torch::optim::Optimizer& optimizer) {
  torch::serialize::OutputArchive archive;
  optimizer.save(archive);
  std::ostringstream out;
  archive.save_to(out);
  return out.str();
}

absl::Status RestoreOptimizer(torch::optim::Optimizer& optimizer,
                              const std::string& state) {
  try {
    std::istringstream in(state);
    torch::serialize::InputArchive archive;
    archive.load_from(in);
    optimizer.load(archive);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot restore optimizer state: ", e.what_without_backtrace()));
  }
  return absl::OkStatus();
}

}  // namespace yolohook::engine
