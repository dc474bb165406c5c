#include "server/engine/validator.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/common/status_macros.h"
#include "server/engine/data/dataset_yaml.h"
#include "server/engine/data/labels.h"
#include "server/engine/metrics/metrics.h"
#include "server/engine/run_util.h"

namespace yolohook::engine {
namespace {

// Labels of one sample as boxes in its (letterboxed) pixels.
std::vector<Box> LabelBoxes(const data::Sample& s) {
  std::vector<Box> boxes;
  const float w = static_cast<float>(s.image.cols);
  const float h = static_cast<float>(s.image.rows);
  for (const data::Label& l : s.labels) {
    Box b;
    b.x1 = (l.xc - l.w / 2) * w;
    b.y1 = (l.yc - l.h / 2) * h;
    b.x2 = (l.xc + l.w / 2) * w;
    b.y2 = (l.yc + l.h / 2) * h;
    b.conf = 1;
    b.cls = l.cls;
    boxes.push_back(b);
  }
  return boxes;
}

Result MakeResult(const data::Sample& s, std::vector<Box> boxes,
                  const std::vector<std::string>& names) {
  Result r;
  r.path = s.path;
  r.orig_height = s.orig_height;
  r.orig_width = s.orig_width;
  UnLetterbox(boxes, s.letterbox, s.orig_width, s.orig_height);
  r.boxes = std::move(boxes);
  r.names = names;
  return r;
}

}  // namespace

Validator::Validator(std::vector<data::ImageRecord> records,
                     std::vector<std::string> names, Options options)
    : names_(names),
      options_(options),
      dataset_(std::move(records), std::move(names),
               data::DetectionDataset::Options{options.imgsz, /*augment=*/false,
                                               /*cache_images=*/false}),
      loader_(&dataset_,
              data::DataLoader::Options{options.batch, /*shuffle=*/false,
                                        options.workers, /*prefetch=*/4,
                                        /*seed=*/0, /*augment=*/false}) {}

absl::StatusOr<ValSummary> Validator::Run(InferenceModel& model,
                                          const RunOptions& run,
                                          const ValidatorState& base,
                                          const nn::DetectionLoss* loss,
                                          const nn::LossGains& gains) {
  ValidatorState state = base;
  state.training = options_.training;
  state.names = names_;
  state.num_batches = static_cast<int>(loader_.num_batches());
  YH_RETURN_IF_ERROR(Fire(run, Event::kOnValStart, &state));

  metrics::DetectionMetrics stats(names_);
  torch::Tensor loss_sum = torch::zeros({3});
  double pre_ms = 0, inf_ms = 0, loss_ms = 0, post_ms = 0;
  loader_.StartEpoch(0, data::AugmentOptions{});
  while (true) {
    YH_RETURN_IF_ERROR(CheckCancelled(run));
    YH_ASSIGN_OR_RETURN(std::optional<data::Batch> batch, loader_.Next());
    if (!batch) break;
    state.batch_index = static_cast<int>(batch->index);
    state.batch_predictions.clear();
    state.batch_labels.clear();
    YH_RETURN_IF_ERROR(Fire(run, Event::kOnValBatchStart, &state));

    absl::Status step = Guard("validation", [&]() -> absl::Status {
      Stopwatch sw;
      torch::Tensor images = ImagesToTensor(batch->samples);
      pre_ms += sw.Lap();
      torch::Tensor preds;
      if (loss != nullptr && model.torch_model()) {
        torch::NoGradGuard no_grad;
        auto net = model.torch_model();
        std::vector<torch::Tensor> raw = net->ForwardRaw(images);
        preds = net->Decode(raw);
        inf_ms += sw.Lap();
        loss_sum +=
            loss->Compute(raw, TargetsToTensor(batch->samples), gains).items;
        loss_ms += sw.Lap();
      } else {
        YH_ASSIGN_OR_RETURN(preds, model.Forward(images));
        inf_ms += sw.Lap();
      }
      std::vector<torch::Tensor> dets =
          nn::NonMaxSuppression(preds, options_.nms);
      for (size_t i = 0; i < batch->samples.size(); ++i) {
        const data::Sample& s = batch->samples[i];
        std::vector<Box> predicted = TensorToBoxes(dets[i]);
        std::vector<Box> labels = LabelBoxes(s);
        stats.AddImage(predicted, labels);
        state.batch_predictions.push_back(
            MakeResult(s, std::move(predicted), names_));
        state.batch_labels.push_back(MakeResult(s, std::move(labels), names_));
      }
      post_ms += sw.Lap();
      return absl::OkStatus();
    });
    YH_RETURN_IF_ERROR(step);
    state.seen += static_cast<int64_t>(batch->samples.size());
    YH_RETURN_IF_ERROR(Fire(run, Event::kOnValBatchEnd, &state));
  }

  metrics::Summary summary = stats.Compute();
  ValSummary out;
  out.save_dir = state.save_dir;
  out.metrics = summary.ToMap();
  if (loss != nullptr && state.num_batches > 0) {
    torch::Tensor mean = loss_sum / static_cast<double>(state.num_batches);
    out.metrics["val/box_loss"] = mean[0].item<double>();
    out.metrics["val/cls_loss"] = mean[1].item<double>();
    out.metrics["val/dfl_loss"] = mean[2].item<double>();
  }
  out.per_class = summary.per_class;
  out.confusion_matrix = summary.confusion;
  out.images = summary.images;
  out.instances = summary.instances;
  const double n = std::max<int64_t>(state.seen, 1);
  out.speed = Speed{pre_ms / n, inf_ms / n, post_ms / n};

  state.batch_predictions.clear();
  state.batch_labels.clear();
  state.metrics = out.metrics;
  state.per_class = out.per_class;
  state.confusion_matrix = out.confusion_matrix;
  state.fitness = summary.fitness;
  state.speed = out.speed;
  state.loss_ms = loss_ms / n;

  Logger log(run, options_.verbose);
  log(metrics::FormatTable(summary, names_, options_.per_class));
  if (!options_.training) {
    log(
        absl::StrFormat("Speed: %.1fms preprocess, %.1fms inference, %.1fms "
                        "postprocess per image",
                        out.speed.preprocess_ms, out.speed.inference_ms,
                        out.speed.postprocess_ms));
  }
  YH_RETURN_IF_ERROR(Fire(run, Event::kOnValEnd, &state));
  return out;
}

absl::StatusOr<ValSummary> Validate(const Config& config,
                                    const RunOptions& run) {
  ConfigureThreads(config.threads);
  Logger log(run, config.verbose);
  YH_ASSIGN_OR_RETURN(InferenceModel model, InferenceModel::Load(config.model));
  YH_ASSIGN_OR_RETURN(
      std::string yaml,
      data::ResolveDataYaml(config.data, ResolveDataDir(config)));
  YH_ASSIGN_OR_RETURN(data::DatasetSpec spec, data::LoadDatasetYaml(yaml));
  if (spec.names.size() != model.names().size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model=", config.model, " predicts ", model.names().size(),
        " classes but data=", config.data, " has ", spec.names.size()));
  }
  const std::vector<std::string>& files = config.split == "train"  ? spec.train
                                          : config.split == "test" ? spec.test
                                                                   : spec.val;
  if (files.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data=", config.data, " has no '", config.split, "' split"));
  }
  data::VerifyReport report;
  YH_ASSIGN_OR_RETURN(
      std::vector<data::ImageRecord> records,
      data::VerifyDataset(files, static_cast<int>(spec.names.size()),
                          std::max(config.workers, 1), &report));
  for (const std::string& w : report.warnings) log(absl::StrCat("WARNING ", w));
  log(absl::StrCat("val: ", report.Summary()));

  YH_ASSIGN_OR_RETURN(const int imgsz, model.InputSize(config));
  Validator::Options options;
  options.imgsz = imgsz;
  options.batch = model.is_onnx() ? 1 : config.batch;
  options.workers = config.workers;
  options.nms.conf = config.ConfFor(Mode::kVal);
  options.nms.iou = config.iou;
  options.nms.max_det = config.max_det;
  options.nms.agnostic = config.agnostic_nms;
  options.nms.classes = config.classes;
  options.per_class = true;
  options.verbose = config.verbose;
  Validator validator(std::move(records), spec.names, options);

  YH_ASSIGN_OR_RETURN(std::string save_dir, MakeRunDir(config, Mode::kVal));
  ValidatorState base;
  base.save_dir = save_dir;
  base.args = ArgsMap(config);
  YH_ASSIGN_OR_RETURN(
      ValSummary summary,
      validator.Run(model, run, base, nullptr, nn::LossGains{}));
  log(absl::StrCat("Results saved to ", save_dir));
  return summary;
}

}  // namespace yolohook::engine
