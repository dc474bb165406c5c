#include "server/engine/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <variant>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "server/common/status_macros.h"

namespace yolohook {
namespace {

using Member =
    std::variant<std::string Config::*, int Config::*, double Config::*,
                 bool Config::*, std::vector<int> Config::*>;

struct Spec {
  const char* name;
  Member member;
  double min;  // inclusive bounds for numbers
  double max;
  const char* help;
  bool hyperparameter;
};

constexpr double kInf = std::numeric_limits<double>::infinity();

const std::vector<Spec>& Specs() {
  static const auto* specs = new std::vector<Spec>{
      {"model", &Config::model, 0, 0,
       "yolov8{n,s,m}, a .pt checkpoint or an .onnx file", false},
      {"data", &Config::data, 0, 0, "data.yaml path, or shapes (built in)",
       false},
      {"source", &Config::source, 0, 0,
       "predict: image, folder, glob, .txt list or video", false},
      {"data_dir", &Config::data_dir, 0, 0, "datasets and runs directory",
       false},
      {"device", &Config::device, 0, 0, "cpu", false},
      {"threads", &Config::threads, 0, 1024, "LibTorch threads (0 = all cores)",
       false},
      {"epochs", &Config::epochs, 1, 100000, "epochs to train", false},
      {"patience", &Config::patience, 1, 1e9,
       "early-stopping patience in epochs", false},
      {"batch", &Config::batch, 1, 4096, "images per batch", false},
      {"imgsz", &Config::imgsz, 32, 8192, "input size (multiple of 32)", false},
      {"save", &Config::save, 0, 0, "save checkpoints / annotated images",
       false},
      {"save_period", &Config::save_period, -1, 1e9,
       "save weights every N epochs (-1 off)", false},
      {"workers", &Config::workers, 0, 64, "data loading threads", false},
      {"project", &Config::project, 0, 0, "parent of run directories", false},
      {"name", &Config::name, 0, 0, "run directory name", false},
      {"exist_ok", &Config::exist_ok, 0, 0, "reuse an existing run directory",
       false},
      {"optimizer", &Config::optimizer, 0, 0, "SGD, AdamW or auto", false},
      {"verbose", &Config::verbose, 0, 0, "print progress", false},
      {"seed", &Config::seed, 0, 2147483647, "random seed", false},
      {"cos_lr", &Config::cos_lr, 0, 0, "cosine learning-rate decay", false},
      {"close_mosaic", &Config::close_mosaic, 0, 1e9,
       "epochs without mosaic at the end", false},
      {"resume", &Config::resume, 0, 0, "true, or a last.pt path", false},
      {"fraction", &Config::fraction, 1e-9, 1, "fraction of the training set",
       false},
      {"val", &Config::val, 0, 0, "validate every epoch", false},
      {"plots", &Config::plots, 0, 0, "write results.png", false},
      {"split", &Config::split, 0, 0, "split for val: val, test or train",
       false},
      {"conf", &Config::conf, -1, 1, "confidence threshold (-1 = mode default)",
       false},
      {"iou", &Config::iou, 0, 1, "NMS IoU threshold", false},
      {"max_det", &Config::max_det, 1, 100000, "detections per image", false},
      {"agnostic_nms", &Config::agnostic_nms, 0, 0, "class-agnostic NMS",
       false},
      {"classes", &Config::classes, 0, 1e6,
       "keep only these class ids, e.g. 0,2", false},
      {"vid_stride", &Config::vid_stride, 1, 1e6,
       "predict every Nth video frame", false},
      {"save_txt", &Config::save_txt, 0, 0, "write label files", false},
      {"save_conf", &Config::save_conf, 0, 0, "add confidences to label files",
       false},
      {"show_labels", &Config::show_labels, 0, 0, "draw class names", false},
      {"show_conf", &Config::show_conf, 0, 0, "draw confidences", false},
      {"line_width", &Config::line_width, 0, 100, "box line width (0 = auto)",
       false},
      {"format", &Config::format, 0, 0, "export format: onnx", false},
      {"opset", &Config::opset, 11, 17, "ONNX opset", false},
      {"lr0", &Config::lr0, 0, 10, "initial learning rate", true},
      {"lrf", &Config::lrf, 0, 1, "final learning rate fraction", true},
      {"momentum", &Config::momentum, 0, 1, "SGD momentum / Adam beta1", true},
      {"weight_decay", &Config::weight_decay, 0, 1, "weight decay", true},
      {"warmup_epochs", &Config::warmup_epochs, 0, 1e6, "warmup epochs", true},
      {"warmup_momentum", &Config::warmup_momentum, 0, 1,
       "warmup initial momentum", true},
      {"warmup_bias_lr", &Config::warmup_bias_lr, 0, 10,
       "warmup initial bias lr", true},
      {"box", &Config::box, 0, 1e3, "box loss gain", true},
      {"cls", &Config::cls, 0, 1e3, "class loss gain", true},
      {"dfl", &Config::dfl, 0, 1e3, "DFL loss gain", true},
      {"nbs", &Config::nbs, 1, 1e6, "nominal batch size", false},
      {"hsv_h", &Config::hsv_h, 0, 1, "hue augmentation", true},
      {"hsv_s", &Config::hsv_s, 0, 1, "saturation augmentation", true},
      {"hsv_v", &Config::hsv_v, 0, 1, "value augmentation", true},
      {"degrees", &Config::degrees, -180, 180, "rotation augmentation", true},
      {"translate", &Config::translate, 0, 1, "translation augmentation", true},
      {"scale", &Config::scale, 0, 1, "scale augmentation", true},
      {"shear", &Config::shear, -180, 180, "shear augmentation", true},
      {"fliplr", &Config::fliplr, 0, 1, "horizontal flip probability", true},
      {"flipud", &Config::flipud, 0, 1, "vertical flip probability", true},
      {"mosaic", &Config::mosaic, 0, 1, "mosaic probability", true},
  };
  return *specs;
}

const Spec* FindSpec(absl::string_view name) {
  for (const Spec& s : Specs()) {
    if (name == s.name) return &s;
  }
  return nullptr;
}

std::vector<std::string> SpecNames(bool hyperparameters_only) {
  std::vector<std::string> names;
  for (const Spec& s : Specs()) {
    if (!hyperparameters_only || s.hyperparameter) names.emplace_back(s.name);
  }
  return names;
}

absl::Status UnknownKey(absl::string_view kind, absl::string_view key,
                        bool hyperparameters_only) {
  std::string msg = absl::StrCat("unknown ", kind, " '", key, "'");
  std::string closest = ClosestMatch(key, SpecNames(hyperparameters_only));
  if (!closest.empty())
    absl::StrAppend(&msg, "; did you mean '", closest, "'?");
  if (hyperparameters_only) {
    absl::StrAppend(&msg, " (valid: ", absl::StrJoin(SpecNames(true), ", "),
                    ")");
  }
  return absl::InvalidArgumentError(msg);
}

std::string FormatDouble(double v) {
  std::string s = absl::StrCat(v);
  return s;
}

absl::Status BadValue(const Spec& spec, absl::string_view value,
                      absl::string_view expected) {
  return absl::InvalidArgumentError(absl::StrCat("argument '", spec.name,
                                                 "': bad value '", value,
                                                 "', expected ", expected));
}

absl::Status CheckRange(const Spec& spec, double v, absl::string_view value) {
  if (!std::isfinite(v) || v < spec.min || v > spec.max) {
    return BadValue(spec, value,
                    absl::StrCat("a number in [", FormatDouble(spec.min), ", ",
                                 spec.max >= 1e9 ? std::string("inf")
                                                 : FormatDouble(spec.max),
                                 "]"));
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> ParseBool(absl::string_view text) {
  std::string v = absl::AsciiStrToLower(text);
  if (v == "true" || v == "1" || v == "yes") return true;
  if (v == "false" || v == "0" || v == "no" || v == "none" || v.empty())
    return false;
  return absl::InvalidArgumentError("not a boolean");
}

absl::Status SetValue(const Spec& spec, Config& config,
                      absl::string_view value) {
  absl::string_view text = absl::StripAsciiWhitespace(value);
  return std::visit(
      [&](auto member) -> absl::Status {
        using T = std::decay_t<decltype(config.*member)>;
        if constexpr (std::is_same_v<T, std::string>) {
          std::string v(text);
          if (v == "None" || v == "null") v.clear();
          config.*member = v;
        } else if constexpr (std::is_same_v<T, bool>) {
          absl::StatusOr<bool> b = ParseBool(text);
          if (!b.ok()) return BadValue(spec, value, "true or false");
          config.*member = *b;
        } else if constexpr (std::is_same_v<T, int>) {
          double d;
          if (!absl::SimpleAtod(text, &d) || d != std::floor(d)) {
            return BadValue(spec, value, "an integer");
          }
          YH_RETURN_IF_ERROR(CheckRange(spec, d, value));
          config.*member = static_cast<int>(d);
        } else if constexpr (std::is_same_v<T, double>) {
          double d;
          if (!absl::SimpleAtod(text, &d))
            return BadValue(spec, value, "a number");
          YH_RETURN_IF_ERROR(CheckRange(spec, d, value));
          config.*member = d;
        } else {  // std::vector<int>
          std::vector<int> ids;
          absl::string_view list = text;
          absl::ConsumePrefix(&list, "[");
          absl::ConsumeSuffix(&list, "]");
          for (absl::string_view part :
               absl::StrSplit(list, ',', absl::SkipWhitespace())) {
            int id;
            if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &id) ||
                id < 0) {
              return BadValue(spec, value,
                              "comma-separated class ids such as 0,2");
            }
            ids.push_back(id);
          }
          config.*member = ids;
        }
        return absl::OkStatus();
      },
      spec.member);
}

std::string GetValue(const Spec& spec, const Config& config) {
  return std::visit(
      [&](auto member) -> std::string {
        using T = std::decay_t<decltype(config.*member)>;
        if constexpr (std::is_same_v<T, std::string>) {
          return config.*member;
        } else if constexpr (std::is_same_v<T, bool>) {
          return config.*member ? "true" : "false";
        } else if constexpr (std::is_same_v<T, int>) {
          return absl::StrCat(config.*member);
        } else if constexpr (std::is_same_v<T, double>) {
          return FormatDouble(config.*member);
        } else {
          return absl::StrJoin(config.*member, ",");
        }
      },
      spec.member);
}

size_t EditDistance(absl::string_view a, absl::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

}  // namespace

absl::string_view ModeName(Mode mode) {
  switch (mode) {
    case Mode::kTrain:
      return "train";
    case Mode::kVal:
      return "val";
    case Mode::kPredict:
      return "predict";
    case Mode::kExport:
      return "export";
  }
  return "unknown";
}

absl::StatusOr<Mode> ModeFromName(absl::string_view name) {
  for (Mode m : {Mode::kTrain, Mode::kVal, Mode::kPredict, Mode::kExport}) {
    if (name == ModeName(m)) return m;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown mode '", name, "'; valid modes: train, val, predict, export"));
}

double Config::ConfFor(Mode mode) const {
  if (conf >= 0) return conf;
  return mode == Mode::kPredict ? 0.25 : 0.001;
}

const std::vector<ArgInfo>& ArgInfos() {
  static const auto* infos = [] {
    auto* v = new std::vector<ArgInfo>;
    Config defaults;
    for (const Spec& s : Specs()) {
      static constexpr const char* kTypes[] = {"string", "int", "float", "bool",
                                               "int_list"};
      ArgInfo info{s.name, s.help, GetValue(s, defaults),
                   kTypes[s.member.index()]};
      const bool numeric =
          std::holds_alternative<int Config::*>(s.member) ||
          std::holds_alternative<double Config::*>(s.member) ||
          std::holds_alternative<std::vector<int> Config::*>(s.member);
      if (numeric) {
        info.min = s.min;
        info.max = s.max;
      }
      info.hyperparameter = s.hyperparameter;
      v->push_back(std::move(info));
    }
    return v;
  }();
  return *infos;
}

absl::StatusOr<std::map<std::string, std::string>> ParseKeyValues(
    const std::vector<std::string>& words) {
  std::map<std::string, std::string> out;
  for (const std::string& w : words) {
    size_t eq = w.find('=');
    if (eq == std::string::npos || eq == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "argument '", w, "' is not key=value (for example epochs=3)"));
    }
    std::string key = w.substr(0, eq);
    if (out.count(key)) {
      return absl::InvalidArgumentError(
          absl::StrCat("argument '", key, "' given twice"));
    }
    out[key] = w.substr(eq + 1);
  }
  return out;
}

absl::Status ApplyArgs(const std::map<std::string, std::string>& args,
                       Config& config, std::vector<std::string>* warnings) {
  for (const auto& [key, value] : args) {
    const Spec* spec = FindSpec(key);
    if (spec == nullptr) return UnknownKey("argument", key, false);
    YH_RETURN_IF_ERROR(SetValue(*spec, config, value));
    config.given.insert(key);
  }
  if (config.imgsz % 32 != 0) {
    int rounded = (config.imgsz + 31) / 32 * 32;
    if (warnings != nullptr) {
      warnings->push_back(absl::StrCat(
          "imgsz=", config.imgsz,
          " must be a multiple of max stride 32, updating to ", rounded));
    }
    config.imgsz = rounded;
  }
  std::string device = absl::AsciiStrToLower(config.device);
  if (device != "cpu" && !device.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("argument 'device': '", config.device,
                     "' is not available; this build runs on cpu"));
  }
  std::string opt = absl::AsciiStrToLower(config.optimizer);
  if (opt != "auto" && opt != "sgd" && opt != "adamw") {
    return absl::InvalidArgumentError(
        absl::StrCat("argument 'optimizer': unknown optimizer '",
                     config.optimizer, "', expected SGD, AdamW or auto"));
  }
  if (config.split != "val" && config.split != "test" &&
      config.split != "train") {
    return absl::InvalidArgumentError(
        absl::StrCat("argument 'split': unknown split '", config.split,
                     "', expected val, test or train"));
  }
  if (absl::AsciiStrToLower(config.format) != "onnx") {
    return absl::InvalidArgumentError(
        absl::StrCat("argument 'format': unsupported format '", config.format,
                     "', expected onnx"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Config> MakeConfig(
    Mode mode, const std::map<std::string, std::string>& args,
    std::vector<std::string>* warnings) {
  Config config;
  if (mode == Mode::kPredict) config.batch = 1;
  YH_RETURN_IF_ERROR(ApplyArgs(args, config, warnings));
  return config;
}

absl::StatusOr<std::string> GetArg(const Config& config,
                                   absl::string_view key) {
  const Spec* spec = FindSpec(key);
  if (spec == nullptr)
    return absl::NotFoundError(absl::StrCat("unknown argument '", key, "'"));
  return GetValue(*spec, config);
}

std::vector<std::pair<std::string, std::string>> ConfigToPairs(
    const Config& config) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const Spec& s : Specs()) out.emplace_back(s.name, GetValue(s, config));
  return out;
}

std::string ConfigToYaml(const Config& config) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  for (const auto& [k, v] : ConfigToPairs(config))
    out << YAML::Key << k << YAML::Value << v;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

absl::StatusOr<Config> ConfigFromYaml(absl::string_view yaml) {
  std::map<std::string, std::string> args;
  try {
    YAML::Node root = YAML::Load(std::string(yaml));
    if (!root.IsMap())
      return absl::InvalidArgumentError("args.yaml is not a mapping");
    for (const auto& kv : root) {
      std::string key = kv.first.as<std::string>();
      if (FindSpec(key) == nullptr)
        continue;  // written by a newer version: ignore
      args[key] = kv.second.IsNull() ? "" : kv.second.as<std::string>();
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("args.yaml: ", e.what()));
  }
  Config config;
  YH_RETURN_IF_ERROR(ApplyArgs(args, config));
  return config;
}

const std::vector<std::string>& HyperparameterNames() {
  static const auto* names = new std::vector<std::string>(SpecNames(true));
  return *names;
}

absl::StatusOr<double> GetHyperparameter(const Config& config,
                                         absl::string_view name) {
  const Spec* spec = FindSpec(name);
  if (spec == nullptr || !spec->hyperparameter)
    return UnknownKey("hyperparameter", name, true);
  return config.*std::get<double Config::*>(spec->member);
}

absl::Status SetHyperparameter(Config& config, absl::string_view name,
                               double value) {
  const Spec* spec = FindSpec(name);
  if (spec == nullptr || !spec->hyperparameter)
    return UnknownKey("hyperparameter", name, true);
  YH_RETURN_IF_ERROR(CheckRange(*spec, value, FormatDouble(value)));
  config.*std::get<double Config::*>(spec->member) = value;
  return absl::OkStatus();
}

std::string ResolveDataDir(const Config& config) {
  if (!config.data_dir.empty()) return config.data_dir;
  if (const char* env = std::getenv("YOLOHOOK_DATA_DIR");
      env != nullptr && *env != '\0') {
    return env;
  }
  const char* home = std::getenv("HOME");
  return absl::StrCat(home != nullptr ? home : ".", "/.yolohook");
}

std::string ClosestMatch(absl::string_view word,
                         const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = std::numeric_limits<size_t>::max();
  for (const std::string& c : candidates) {
    size_t d = EditDistance(word, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  // A typo changes at most a few characters; a prefix (epoch -> epochs) always
  // counts.
  size_t limit = std::max<size_t>(2, word.size() / 3);
  if (best_d <= limit ||
      (!best.empty() && best.rfind(std::string(word), 0) == 0))
    return best;
  return "";
}

}  // namespace yolohook
