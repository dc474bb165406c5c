// The arguments of a yolohook job, with Ultralytics' names and defaults.
//
// A Config is what `yolohook train data=shapes epochs=3` means, and what a
// remote client sends as SubmitJobRequest.args. Every field is settable by its
// key=value name through ApplyArgs(); unknown keys and bad values are errors
// that name the argument (and, for an unknown key, the closest valid one).
#ifndef YOLOHOOK_SERVER_ENGINE_CONFIG_H_
#define YOLOHOOK_SERVER_ENGINE_CONFIG_H_

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace yolohook {

// The job modes. Their names are the CLI's first word.
enum class Mode { kTrain, kVal, kPredict, kExport };

absl::string_view ModeName(Mode mode);
// Returns INVALID_ARGUMENT naming the valid modes.
absl::StatusOr<Mode> ModeFromName(absl::string_view name);

struct Config {
  // --- What to run on.
  // yolov8{n,s,m}[.yaml] (new), a .pt checkpoint, or an .onnx file
  std::string model = "yolov8n";
  // a data.yaml path, or "shapes" for the built-in dataset
  std::string data = "shapes";
  // predict: image, folder, glob, .txt list or video file
  std::string source;
  // datasets and runs live here ("" = $YOLOHOOK_DATA_DIR or ~/.yolohook)
  std::string data_dir;
  // only "cpu": these builds have no accelerator
  std::string device = "cpu";
  // LibTorch intra-op threads (0 = all cores)
  int threads = 0;

  // --- Training loop.
  // epochs to train
  int epochs = 100;
  // epochs without fitness improvement before early stopping
  int patience = 100;
  // images per batch
  int batch = 16;
  // square input size, a multiple of 32
  int imgsz = 640;
  // save checkpoints (train) or annotated images (predict)
  bool save = true;
  // also save weights/epochN.pt every N epochs (-1 = never)
  int save_period = -1;
  // data loading threads
  int workers = 2;
  // parent of run directories ("" = {data_dir}/runs/detect)
  std::string project;
  // run directory name ("" = the mode's name: train, val, ...)
  std::string name;
  // reuse an existing run directory instead of numbering a new one
  bool exist_ok = false;
  // SGD, AdamW or auto (Ultralytics' rule)
  std::string optimizer = "auto";
  // print per-epoch progress and tables
  bool verbose = true;
  // seed for weights init, shuffling and augmentation
  int seed = 0;
  // cosine instead of linear learning-rate decay
  bool cos_lr = false;
  // disable mosaic for the last N epochs
  int close_mosaic = 10;
  // "true" resumes {project}/{name}/weights/last.pt, or a last.pt path
  std::string resume;
  // fraction of the training set to use
  double fraction = 1.0;
  // validate every epoch
  bool val = true;
  // write results.png
  bool plots = true;

  // --- Validation and prediction.
  // dataset split validated by `val`: val, test or train
  std::string split = "val";
  // confidence threshold (-1 = 0.25 for predict, 0.001 for val)
  double conf = -1;
  // NMS IoU threshold
  double iou = 0.7;
  // detections kept per image
  int max_det = 300;
  // class-agnostic NMS
  bool agnostic_nms = false;
  // keep only these class ids (empty = all)
  std::vector<int> classes;
  // predict every Nth video frame
  int vid_stride = 1;
  // predict: write labels/*.txt
  bool save_txt = false;
  // predict: append confidence to saved labels
  bool save_conf = false;
  // predict: draw class names on saved images
  bool show_labels = true;
  // predict: draw confidences on saved images
  bool show_conf = true;
  // predict: box line width (0 = from image size)
  int line_width = 0;

  // --- Export.
  // export format (onnx)
  std::string format = "onnx";
  // ONNX opset
  int opset = 12;

  // --- Hyperparameters (tunable while training; see HyperparameterNames()).
  // initial learning rate
  double lr0 = 0.01;
  // final learning rate as a fraction of lr0
  double lrf = 0.01;
  // SGD momentum / Adam beta1
  double momentum = 0.937;
  // weight decay of convolution weights
  double weight_decay = 0.0005;
  // warmup length in epochs (fractions allowed)
  double warmup_epochs = 3.0;
  // momentum at the start of warmup
  double warmup_momentum = 0.8;
  // bias learning rate at the start of warmup
  double warmup_bias_lr = 0.1;
  // box (CIoU) loss gain
  double box = 7.5;
  // classification (BCE) loss gain
  double cls = 0.5;
  // distribution focal loss gain
  double dfl = 1.5;
  // nominal batch size: gradients accumulate to it
  int nbs = 64;
  // hue augmentation (fraction)
  double hsv_h = 0.015;
  // saturation augmentation (fraction)
  double hsv_s = 0.7;
  // value augmentation (fraction)
  double hsv_v = 0.4;
  // rotation augmentation (degrees)
  double degrees = 0.0;
  // translation augmentation (fraction)
  double translate = 0.1;
  // scale augmentation (gain)
  double scale = 0.5;
  // shear augmentation (degrees)
  double shear = 0.0;
  // horizontal flip probability
  double fliplr = 0.5;
  // vertical flip probability
  double flipud = 0.0;
  // mosaic probability
  double mosaic = 1.0;

  // The keys ApplyArgs set, i.e. what the user gave rather than a default:
  // a value the user gave is honoured where a default would be adjusted.
  std::set<std::string> given;

  // The confidence threshold for `mode`, resolving conf=-1.
  double ConfFor(Mode mode) const;
  // Whether the user gave `key` (see `given`).
  bool Given(absl::string_view key) const {
    return given.count(std::string(key)) != 0;
  }
};

// One accepted key=value argument, for help texts, args.yaml and the
// catalogue a server reports.
struct ArgInfo {
  // The key.
  std::string name;
  // One line.
  std::string help;
  // The default, as text.
  std::string default_value;
  // "string", "int", "float", "bool" or "int_list".
  std::string type;
  // Numbers (and int_list elements): the inclusive range accepted; both 0
  // otherwise.
  double min = 0;
  double max = 0;
  // Callbacks may change it while training (see HyperparameterNames()).
  bool hyperparameter = false;
};

// All keys in the order of args.yaml.
const std::vector<ArgInfo>& ArgInfos();

// Parses "key=value" words (the CLI's form). Errors: INVALID_ARGUMENT naming
// the word that is not key=value.
absl::StatusOr<std::map<std::string, std::string>> ParseKeyValues(
    const std::vector<std::string>& words);

// Applies key=value arguments to `config`, in key order. Errors:
// INVALID_ARGUMENT for an unknown key (naming the closest valid one) or a bad
// value (naming the key, the value and what is accepted). `warnings` (optional)
// receives adjustments, such as imgsz rounded up to a multiple of 32.
absl::Status ApplyArgs(const std::map<std::string, std::string>& args,
                       Config& config,
                       std::vector<std::string>* warnings = nullptr);

// A Config for `mode`: Ultralytics' per-mode defaults (predict: batch=1), then
// `args`. Errors as ApplyArgs.
absl::StatusOr<Config> MakeConfig(
    Mode mode, const std::map<std::string, std::string>& args,
    std::vector<std::string>* warnings = nullptr);

// The value of `key` in `config` as text. NOT_FOUND for an unknown key.
absl::StatusOr<std::string> GetArg(const Config& config, absl::string_view key);

// Every argument as key -> text, in ArgInfos() order.
std::vector<std::pair<std::string, std::string>> ConfigToPairs(
    const Config& config);

// args.yaml content (Ultralytics' layout: one "key: value" line per argument).
std::string ConfigToYaml(const Config& config);

// Reads an args.yaml written by ConfigToYaml back into a Config.
absl::StatusOr<Config> ConfigFromYaml(absl::string_view yaml);

// Names of the numeric hyperparameters a callback may change while training.
const std::vector<std::string>& HyperparameterNames();

// Reads and writes one hyperparameter by name. Errors: INVALID_ARGUMENT for an
// unknown name (naming the closest), a non-finite value, or one out of range.
absl::StatusOr<double> GetHyperparameter(const Config& config,
                                         absl::string_view name);
absl::Status SetHyperparameter(Config& config, absl::string_view name,
                               double value);

// The directory for datasets and runs: config.data_dir, else
// $YOLOHOOK_DATA_DIR, else $HOME/.yolohook.
std::string ResolveDataDir(const Config& config);

// The candidate in `candidates` closest to `word` by edit distance, or "" if
// none is close enough to be a plausible typo.
std::string ClosestMatch(absl::string_view word,
                         const std::vector<std::string>& candidates);

}  // namespace yolohook

#endif  // YOLOHOOK_SERVER_ENGINE_CONFIG_H_
