#include "server/engine/trainer.h"

#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"
#include "server/engine/checkpoint.h"
#include "server/engine/data/dataset_yaml.h"
#include "server/engine/data/labels.h"
#include "server/engine/data/loader.h"
#include "server/engine/metrics/results.h"
#include "server/engine/nn/loss.h"
#include "server/engine/nn/model.h"
#include "server/engine/run_util.h"
#include "server/engine/validator.h"
#include "server/engine/version.h"

namespace yolohook::engine {
namespace {

namespace fs = std::filesystem;

constexpr double kPi = 3.14159265358979323846;

// Exponential moving average of a model's weights (Ultralytics' ModelEMA:
// decay 0.9999 ramped up over ~2000 updates). Thread-compatible.
class Ema {
 public:
  Ema(const nn::DetectionModel& model, int64_t updates)
      : ema_(model->options()), updates_(updates) {
    ema_->CopyFrom(*model);
    ema_->eval();
    for (auto& p : ema_->parameters()) p.set_requires_grad(false);
    Pair(model);
  }

  void Update() {
    torch::NoGradGuard no_grad;
    ++updates_;
    const double d =
        0.9999 * (1.0 - std::exp(-static_cast<double>(updates_) / 2000.0));
    for (auto& [e, m] : pairs_) e.mul_(d).add_(m.detach(), 1.0 - d);
  }

  nn::DetectionModel& model() { return ema_; }
  int64_t updates() const { return updates_; }

 private:
  // Floating-point parameters and buffers of the EMA and the live model, in
  // step.
  void Pair(const nn::DetectionModel& model) {
    auto ep = ema_->named_parameters();
    auto mp = model->named_parameters();
    for (const auto& item : ep)
      pairs_.emplace_back(item.value(), mp[item.key()]);
    auto eb = ema_->named_buffers();
    auto mb = model->named_buffers();
    for (const auto& item : eb) {
      if (item.value().is_floating_point())
        pairs_.emplace_back(item.value(), mb[item.key()]);
    }
  }

  nn::DetectionModel ema_;
  int64_t updates_;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> pairs_;
};

// Copies tensors whose name and shape match (starting from another
// checkpoint, possibly with a different class count). Returns how many.
int TransferWeights(const nn::DetectionModel& from, nn::DetectionModel& to) {
  torch::NoGradGuard no_grad;
  auto src_params = from->named_parameters();
  auto src_buffers = from->named_buffers();
  int copied = 0;
  auto copy = [&](const torch::OrderedDict<std::string, torch::Tensor>& src,
                  torch::OrderedDict<std::string, torch::Tensor> dst) {
    for (auto& item : dst) {
      const torch::Tensor* s = src.find(item.key());
      if (s != nullptr && s->sizes() == item.value().sizes()) {
        item.value().copy_(*s);
        ++copied;
      }
    }
  };
  copy(src_params, to->named_parameters());
  copy(src_buffers, to->named_buffers());
  return copied;
}

class Trainer {
 public:
  Trainer(const Config& config, const RunOptions& run)
      : config_(config), run_(run), log_(run, config.verbose) {}

  absl::StatusOr<TrainSummary> Run() {
    Stopwatch wall;
    absl::Status status = Guard("training", [&] { return Fit(); });
    if (!status.ok()) {
      // Integrations clean up whatever happened; their own failure cannot mask
      // ours.
      (void)Fire(run_, Event::kTeardown, &state_);
      return status;
    }
    summary_.seconds = wall.Lap() / 1000.0;
    return summary_;
  }

 private:
  absl::Status Fit() {
    YH_RETURN_IF_ERROR(SetupRunDir());
    YH_RETURN_IF_ERROR(FireT(Event::kOnPretrainRoutineStart));
    YH_RETURN_IF_ERROR(SetupData());
    YH_RETURN_IF_ERROR(SetupModel());
    YH_RETURN_IF_ERROR(SetupOptimizer());
    YH_RETURN_IF_ERROR(FireT(Event::kOnPretrainRoutineEnd));

    log_(absl::StrFormat(
        "Image sizes %d train, %d val\nUsing %d dataloader workers, %d "
        "threads\n"
        "Logging results to %s\nStarting training for %d epochs...",
        config_.imgsz, config_.imgsz, config_.workers, threads_, save_dir_,
        config_.epochs));
    YH_RETURN_IF_ERROR(FireT(Event::kOnTrainStart));
    train_clock_ = Stopwatch();
    for (epoch_ = start_epoch_; epoch_ < config_.epochs; ++epoch_) {
      YH_RETURN_IF_ERROR(TrainEpoch());
      YH_RETURN_IF_ERROR(EndEpoch());
      if (state_.stop) break;
    }
    summary_.epochs_completed = std::min(epoch_ + 1, config_.epochs);
    summary_.stopped_early = epoch_ + 1 < config_.epochs;
    YH_RETURN_IF_ERROR(FinalEval());
    YH_RETURN_IF_ERROR(FireT(Event::kOnTrainEnd));
    YH_RETURN_IF_ERROR(FireT(Event::kTeardown));
    return absl::OkStatus();
  }

  // --- Setup ---------------------------------------------------------------

  absl::Status SetupRunDir() {
    threads_ = ConfigureThreads(config_.threads);
    if (!config_.resume.empty() && config_.resume != "false") {
      YH_RETURN_IF_ERROR(LoadResume());
    } else {
      YH_ASSIGN_OR_RETURN(save_dir_, MakeRunDir(config_, Mode::kTrain));
    }
    fs::create_directories(fs::path(save_dir_) / "weights");
    std::ofstream(fs::path(save_dir_) / "args.yaml") << ConfigToYaml(config_);
    summary_.save_dir = save_dir_;
    summary_.last = (fs::path(save_dir_) / "weights" / "last.pt").string();
    summary_.best = (fs::path(save_dir_) / "weights" / "best.pt").string();
    state_.save_dir = save_dir_;
    state_.last = summary_.last;
    state_.best = summary_.best;
    state_.epochs = config_.epochs;
    state_.start_epoch = start_epoch_;
    state_.epoch = start_epoch_;
    state_.batch_size = config_.batch;
    state_.imgsz = config_.imgsz;
    state_.args = ArgsMap(config_);
    state_.loss_names = {"box_loss", "cls_loss", "dfl_loss"};
    state_.best_fitness = best_fitness_;
    csv_ = std::make_unique<metrics::ResultsCsv>(
        (fs::path(save_dir_) / "results.csv").string());
    if (resumed_) {
      YH_RETURN_IF_ERROR(csv_->Load());
      if (!csv_->rows().empty() && csv_->rows().back().count("time")) {
        elapsed_before_ = csv_->rows().back().at("time");
        last_epoch_end_ = elapsed_before_;
      }
    }
    return absl::OkStatus();
  }

  absl::Status LoadResume() {
    std::string path = config_.resume;
    if (path == "true" || path == "True") {
      // The most recent last.pt under the project directory.
      fs::path project =
          config_.project.empty()
              ? fs::path(ResolveDataDir(config_)) / "runs" / "detect"
              : fs::path(config_.project);
      fs::file_time_type newest{};
      std::error_code ec;
      for (auto it = fs::recursive_directory_iterator(project, ec);
           !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (it->path().filename() == "last.pt" &&
            it->last_write_time() > newest) {
          newest = it->last_write_time();
          path = it->path().string();
        }
      }
      if (path == "true" || path == "True") {
        return absl::NotFoundError(
            absl::StrCat("resume=true: no weights/last.pt under ",
                         project.string(), "; pass resume=PATH"));
      }
    }
    YH_ASSIGN_OR_RETURN(Checkpoint ckpt, LoadCheckpoint(path));
    if (ckpt.epoch < 0 || ckpt.optimizer_state.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("resume=", path,
                       ": that training run finished; nothing to resume. "
                       "Start a new run with model=",
                       path));
    }
    Config resumed = ckpt.args;
    resumed.resume = path;
    resumed.threads = config_.threads;
    resumed.workers = config_.workers;
    resumed.verbose = config_.verbose;
    if (run_.check_args) {
      // The checkpoint's arguments (data, project, ...) are taken as they
      // were saved: they must pass the caller's rules as its own do.
      absl::Status allowed = run_.check_args(ArgsMap(resumed));
      if (!allowed.ok()) {
        return absl::Status(
            allowed.code(),
            absl::StrCat("resume=", path,
                         ": the arguments saved in the checkpoint: ",
                         allowed.message()));
      }
    }
    config_ = resumed;
    save_dir_ = fs::path(path).parent_path().parent_path().string();
    start_epoch_ = ckpt.epoch + 1;
    best_fitness_ = ckpt.best_fitness;
    best_epoch_ = ckpt.epoch;
    resume_ckpt_ = std::move(ckpt);
    resumed_ = true;
    log_(absl::StrFormat(
        "Resuming training from %s from epoch %d to %d total epochs", path,
        start_epoch_ + 1, config_.epochs));
    return absl::OkStatus();
  }

  absl::Status SetupData() {
    YH_ASSIGN_OR_RETURN(
        std::string yaml,
        data::ResolveDataYaml(config_.data, ResolveDataDir(config_)));
    YH_ASSIGN_OR_RETURN(data::DatasetSpec spec, data::LoadDatasetYaml(yaml));
    names_ = spec.names;
    state_.names = names_;
    const int nc = static_cast<int>(names_.size());
    const int verify_threads = std::max(config_.workers, 1);

    data::VerifyReport train_report;
    YH_ASSIGN_OR_RETURN(
        std::vector<data::ImageRecord> train,
        data::VerifyDataset(spec.train, nc, verify_threads, &train_report));
    LogReport("train", train_report);
    if (config_.fraction < 1.0) {
      size_t keep = std::max<size_t>(
          1, static_cast<size_t>(train.size() * config_.fraction));
      train.resize(std::min(keep, train.size()));
    }
    data::VerifyReport val_report;
    YH_ASSIGN_OR_RETURN(
        std::vector<data::ImageRecord> val,
        data::VerifyDataset(spec.val, nc, verify_threads, &val_report));
    LogReport("val", val_report);

    train_set_ = std::make_unique<data::DetectionDataset>(
        std::move(train), names_,
        data::DetectionDataset::Options{config_.imgsz, /*augment=*/true,
                                        /*cache_images=*/true});
    data::DataLoader::Options lo;
    lo.batch_size = config_.batch;
    lo.shuffle = true;
    lo.workers = config_.workers;
    lo.seed = static_cast<uint64_t>(config_.seed);
    lo.augment = true;
    train_loader_ = std::make_unique<data::DataLoader>(train_set_.get(), lo);

    Validator::Options vo;
    vo.imgsz = config_.imgsz;
    vo.batch = config_.batch * 2;
    vo.workers = config_.workers;
    vo.nms.conf = config_.ConfFor(Mode::kVal);
    vo.nms.iou = config_.iou;
    vo.nms.max_det = config_.max_det;
    vo.training = true;
    vo.verbose = config_.verbose;
    validator_ = std::make_unique<Validator>(std::move(val), names_, vo);
    return absl::OkStatus();
  }

  void LogReport(absl::string_view split, const data::VerifyReport& r) {
    for (const std::string& w : r.warnings) log_(absl::StrCat("WARNING ", w));
    log_(absl::StrCat(split, ": ", r.Summary()));
  }

  absl::Status SetupModel() {
    const int nc = static_cast<int>(names_.size());
    torch::manual_seed(config_.seed);
    if (resume_ckpt_) {
      if (resume_ckpt_->options.nc != nc) {
        return absl::InvalidArgumentError(absl::StrCat(
            "resume: the checkpoint has ", resume_ckpt_->options.nc,
            " classes but data=", config_.data, " has ", nc));
      }
      model_ = resume_ckpt_->model;
    } else if (std::optional<std::string> scale =
                   ScaleFromModelName(config_.model)) {
      YH_ASSIGN_OR_RETURN(nn::ModelOptions options,
                          nn::ScaleOptions(*scale, nc));
      model_ = nn::DetectionModel(options);
    } else if (absl::EndsWith(config_.model, ".pt")) {
      YH_ASSIGN_OR_RETURN(Checkpoint start, LoadCheckpoint(config_.model));
      nn::ModelOptions options = start.options;
      options.nc = nc;
      model_ = nn::DetectionModel(options);
      int copied = TransferWeights(start.InferenceModel(), model_);
      log_(absl::StrFormat(
          "Transferred %d/%d items from %s", copied,
          model_->named_parameters().size() + model_->named_buffers().size(),
          config_.model));
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "model=", config_.model,
          ": expected yolov8n, yolov8s, yolov8m or a .pt checkpoint"));
    }
    model_->train();
    ema_ = std::make_unique<Ema>(model_,
                                 resume_ckpt_ ? resume_ckpt_->ema_updates : 0);
    if (resume_ckpt_ && resume_ckpt_->ema)
      ema_->model()->CopyFrom(*resume_ckpt_->ema);
    loss_ = std::make_unique<nn::DetectionLoss>(nc, model_->options().reg_max);
    log_(absl::StrFormat("Model %s: %d parameters, %d classes", config_.model,
                         model_->NumParameters(), nc));
    return absl::OkStatus();
  }

  absl::Status SetupOptimizer() {
    nb_ = static_cast<int64_t>(train_loader_->num_batches());
    state_.num_batches = static_cast<int>(nb_);
    accumulate_ = std::max<int64_t>(
        std::llround(static_cast<double>(config_.nbs) / config_.batch), 1);
    std::string name = config_.optimizer;
    double lr = config_.lr0;
    double momentum = config_.momentum;
    if (name == "auto") {
      const int64_t iterations = static_cast<int64_t>(std::ceil(
                                     static_cast<double>(train_set_->size()) /
                                     std::max(config_.batch, config_.nbs))) *
                                 config_.epochs;
      const double lr_fit =
          std::round(0.002 * 5 / (4 + names_.size()) * 1e6) / 1e6;
      if (iterations > 10000) {
        name = "SGD", lr = 0.01, momentum = 0.9;
      } else {
        name = "AdamW", lr = lr_fit, momentum = 0.9;
      }
      // Values a callback set before the optimizer existed (at
      // on_pretrain_routine_start) are the user's choice: they win.
      if (early_changes_.count("lr0") != 0) lr = config_.lr0;
      if (early_changes_.count("momentum") != 0) momentum = config_.momentum;
      if (early_changes_.count("warmup_bias_lr") == 0) {
        config_.warmup_bias_lr = 0.0;  // no higher than 0.01 for Adam
      }
      log_(absl::StrFormat(
          "optimizer: 'optimizer=auto' found, determining best 'optimizer', "
          "'lr0' and 'momentum' automatically... %s(lr=%g, momentum=%g)",
          name, lr, momentum));
    }
    optimizer_name_ = absl::AsciiStrToLower(name) == "sgd" ? "SGD" : "AdamW";
    config_.lr0 = lr;
    config_.momentum = momentum;

    nn::DetectionModelImpl::ParamGroups g = model_->GroupParameters();
    const double decay = DecayFor(config_.weight_decay);
    std::vector<torch::optim::OptimizerParamGroup> groups;
    // Group order as Ultralytics: pg0 biases, pg1 weights with decay, pg2 norm
    // weights.
    auto options =
        [&](double wd) -> std::unique_ptr<torch::optim::OptimizerOptions> {
      if (optimizer_name_ == "SGD") {
        return std::make_unique<torch::optim::SGDOptions>(
            torch::optim::SGDOptions(lr)
                .momentum(momentum)
                .nesterov(momentum > 0)
                .weight_decay(wd));
      }
      return std::make_unique<torch::optim::AdamWOptions>(
          torch::optim::AdamWOptions(lr)
              .betas({momentum, 0.999})
              .weight_decay(wd));
    };
    groups.emplace_back(g.bias, options(0.0));
    groups.emplace_back(g.decay, options(decay));
    groups.emplace_back(g.norm, options(0.0));
    if (optimizer_name_ == "SGD") {
      optimizer_ = std::make_unique<torch::optim::SGD>(
          groups, torch::optim::SGDOptions(lr).momentum(momentum).nesterov(
                      momentum > 0));
    } else {
      optimizer_ = std::make_unique<torch::optim::AdamW>(
          groups, torch::optim::AdamWOptions(lr).betas({momentum, 0.999}));
    }
    if (resume_ckpt_ && !resume_ckpt_->optimizer_state.empty()) {
      YH_RETURN_IF_ERROR(
          RestoreOptimizer(*optimizer_, resume_ckpt_->optimizer_state));
    }
    // The schedule restarts from the epoch we are at.
    SetGroupLr(config_.lr0 * Lf(start_epoch_));
    log_(
        absl::StrFormat("optimizer: %s(lr=%g, momentum=%g) with parameter "
                        "groups %d weight(decay=0.0), "
                        "%d weight(decay=%g), %d bias(decay=0.0)",
                        optimizer_name_, lr, momentum, g.norm.size(),
                        g.decay.size(), decay, g.bias.size()));
    warmup_iters_ =
        config_.warmup_epochs > 0
            ? std::max<int64_t>(std::llround(config_.warmup_epochs * nb_), 100)
            : -1;
    last_opt_step_ = -1;
    return absl::OkStatus();
  }

  double DecayFor(double weight_decay) const {
    return weight_decay * config_.batch * accumulate_ / config_.nbs;
  }

  // Learning-rate factor at `epoch`: linear or cosine from 1 to lrf.
  double Lf(double epoch) const {
    const double e = config_.epochs;
    if (config_.cos_lr)
      return ((1 - std::cos(epoch * kPi / e)) / 2) * (config_.lrf - 1) + 1;
    return std::max(1 - epoch / e, 0.0) * (1.0 - config_.lrf) + config_.lrf;
  }

  void SetGroupLr(double lr) {
    for (auto& group : optimizer_->param_groups()) group.options().set_lr(lr);
  }

  void SetGroupMomentum(size_t j, double momentum) {
    auto& o = optimizer_->param_groups()[j].options();
    if (optimizer_name_ == "SGD") {
      static_cast<torch::optim::SGDOptions&>(o).momentum(momentum);
    } else {
      auto& adam = static_cast<torch::optim::AdamWOptions&>(o);
      adam.betas({momentum, std::get<1>(adam.betas())});
    }
  }

  void SetDecayGroupWeightDecay(double decay) {
    auto& o = optimizer_->param_groups()[1].options();
    if (optimizer_name_ == "SGD") {
      static_cast<torch::optim::SGDOptions&>(o).weight_decay(decay);
    } else {
      static_cast<torch::optim::AdamWOptions&>(o).weight_decay(decay);
    }
  }

  // --- Events and hyperparameters --------------------------------------------

  // Fires a trainer event with fresh hyperparameters in the state, then applies
  // the changes its callbacks made.
  absl::Status FireT(Event event) {
    RefreshHyperparameters();
    YH_RETURN_IF_ERROR(Fire(run_, event, &state_));
    return ApplyHyperparameterChanges(event);
  }

  void RefreshHyperparameters() {
    state_.hyperparameters.clear();
    for (const std::string& name : HyperparameterNames()) {
      state_.hyperparameters[name] = *GetHyperparameter(config_, name);
    }
  }

  absl::Status ApplyHyperparameterChanges(Event event) {
    std::vector<std::string> changed;
    for (const auto& [name, value] : state_.hyperparameters) {
      absl::StatusOr<double> current = GetHyperparameter(config_, name);
      if (!current.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("a callback at ", EventName(event), " set ",
                         current.status().message()));
      }
      if (*current == value) continue;
      absl::Status s = SetHyperparameter(config_, name, value);
      if (!s.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "a callback at ", EventName(event), " set ", s.message()));
      }
      changed.push_back(name);
    }
    if (changed.empty()) return absl::OkStatus();
    if (optimizer_ == nullptr) {
      // Before the optimizer exists the changes shape its setup instead.
      early_changes_.insert(changed.begin(), changed.end());
      return absl::OkStatus();
    }
    log_(absl::StrCat("hyperparameters changed at ", EventName(event), ": ",
                      absl::StrJoin(changed, ", ")));
    const bool in_warmup = iteration_ <= warmup_iters_;
    if (!in_warmup) {
      SetGroupLr(config_.lr0 * Lf(epoch_));
      for (size_t j = 0; j < optimizer_->param_groups().size(); ++j) {
        SetGroupMomentum(j, config_.momentum);
      }
    }
    SetDecayGroupWeightDecay(DecayFor(config_.weight_decay));
    RecordLr();
    // Changes made by on_params_update callbacks apply without firing it again.
    if (event == Event::kOnParamsUpdate) return absl::OkStatus();
    return FireT(Event::kOnParamsUpdate);
  }

  void RecordLr() {
    const auto& groups = optimizer_->param_groups();
    for (size_t j = 0; j < groups.size(); ++j) {
      state_.lr[absl::StrCat("lr/pg", j)] = groups[j].options().get_lr();
    }
  }

  // --- The loop
  // ----------------------------------------------------------------

  absl::Status TrainEpoch() {
    state_.epoch = epoch_;
    YH_RETURN_IF_ERROR(FireT(Event::kOnTrainEpochStart));
    model_->train();
    data::AugmentOptions hyp;
    hyp.hsv_h = config_.hsv_h;
    hyp.hsv_s = config_.hsv_s;
    hyp.hsv_v = config_.hsv_v;
    hyp.degrees = config_.degrees;
    hyp.translate = config_.translate;
    hyp.scale = config_.scale;
    hyp.shear = config_.shear;
    hyp.fliplr = config_.fliplr;
    hyp.flipud = config_.flipud;
    hyp.mosaic = config_.mosaic;
    if (epoch_ >= config_.epochs - config_.close_mosaic) {
      if (!mosaic_closed_ && config_.mosaic > 0)
        log_("Closing dataloader mosaic");
      mosaic_closed_ = true;
      hyp.mosaic = 0;
    }
    train_loader_->StartEpoch(epoch_, hyp);
    log_(absl::StrFormat("\n%11s %10s %10s %10s %10s %10s %12s", "Epoch",
                         "box_loss", "cls_loss", "dfl_loss", "Instances",
                         "Size", "img/s"));
    Stopwatch epoch_clock;
    torch::Tensor tloss = torch::zeros({3});
    int64_t instances = 0;
    int64_t images = 0;
    for (int64_t i = 0;; ++i) {
      YH_RETURN_IF_ERROR(CheckCancelled(run_));
      YH_ASSIGN_OR_RETURN(std::optional<data::Batch> batch,
                          train_loader_->Next());
      if (!batch) break;
      iteration_ = i + nb_ * epoch_;
      state_.batch_index = static_cast<int>(i);
      state_.iteration = iteration_;
      YH_RETURN_IF_ERROR(FireT(Event::kOnTrainBatchStart));
      Warmup();

      torch::Tensor images_t = ImagesToTensor(batch->samples);
      torch::Tensor targets = TargetsToTensor(batch->samples);
      nn::LossOutput out =
          loss_->Compute(model_->ForwardRaw(images_t), targets,
                         nn::LossGains{config_.box, config_.cls, config_.dfl});
      if (!torch::isfinite(out.total).item<bool>()) {
        return absl::InternalError(
            absl::StrFormat("the loss became non-finite at epoch %d batch %d; "
                            "lower lr0 (now %g)",
                            epoch_ + 1, i, config_.lr0));
      }
      out.total.backward();
      tloss = (tloss * static_cast<double>(i) + out.items) /
              static_cast<double>(i + 1);
      if (iteration_ - last_opt_step_ >= accumulate_) {
        YH_RETURN_IF_ERROR(OptimizerStep());
        last_opt_step_ = iteration_;
      }
      instances += targets.size(0);
      images += static_cast<int64_t>(batch->samples.size());
      state_.loss = out.total.item<double>();
      state_.loss_items = ToVector(out.items);
      state_.tloss = ToVector(tloss);
      YH_RETURN_IF_ERROR(FireT(Event::kOnTrainBatchEnd));
    }
    RecordLr();
    tloss_ = ToVector(tloss);
    const double seconds = epoch_clock.Lap() / 1000.0;
    log_(absl::StrFormat("%11s %10.4g %10.4g %10.4g %10d %10d %12.1f",
                         absl::StrCat(epoch_ + 1, "/", config_.epochs),
                         tloss_[0], tloss_[1], tloss_[2], instances,
                         config_.imgsz, images / std::max(seconds, 1e-9)));
    return FireT(Event::kOnTrainEpochEnd);
  }

  static std::vector<double> ToVector(const torch::Tensor& t) {
    auto c = t.to(torch::kFloat64).contiguous();
    return std::vector<double>(c.data_ptr<double>(),
                               c.data_ptr<double>() + c.numel());
  }

  void Warmup() {
    if (iteration_ > warmup_iters_) return;
    const double x =
        static_cast<double>(iteration_) / static_cast<double>(warmup_iters_);
    auto interp = [x](double a, double b) {
      return a + (b - a) * std::clamp(x, 0.0, 1.0);
    };
    accumulate_ = std::max<int64_t>(
        1, std::llround(
               interp(1, static_cast<double>(config_.nbs) / config_.batch)));
    auto& groups = optimizer_->param_groups();
    const double target = config_.lr0 * Lf(epoch_);
    for (size_t j = 0; j < groups.size(); ++j) {
      groups[j].options().set_lr(
          interp(j == 0 ? config_.warmup_bias_lr : 0.0, target));
      SetGroupMomentum(j, interp(config_.warmup_momentum, config_.momentum));
    }
  }

  absl::Status OptimizerStep() {
    torch::nn::utils::clip_grad_norm_(model_->parameters(), 10.0);
    YH_RETURN_IF_ERROR(FireT(Event::kOptimizerStep));
    optimizer_->step();
    YH_RETURN_IF_ERROR(FireT(Event::kOnBeforeZeroGrad));
    optimizer_->zero_grad();
    ema_->Update();
    return absl::OkStatus();
  }

  absl::Status EndEpoch() {
    const bool final_epoch = epoch_ + 1 >= config_.epochs;
    if (config_.val || final_epoch) {
      YH_ASSIGN_OR_RETURN(ValSummary val, ValidateEma());
      metrics_ = val.metrics;
      fitness_ = val.metrics.count("fitness") ? val.metrics.at("fitness") : 0.0;
    }
    state_.metrics = metrics_;
    state_.fitness = fitness_;
    bool is_best = false;
    if (fitness_ >= best_fitness_) {
      best_fitness_ = fitness_;
      best_epoch_ = epoch_;
      is_best = true;
    }
    state_.best_fitness = best_fitness_;
    if (epoch_ - best_epoch_ >= config_.patience) {
      log_(absl::StrFormat(
          "Stopping training early as no improvement observed in last %d "
          "epochs. Best results observed at epoch %d.",
          config_.patience, best_epoch_ + 1));
      state_.stop = true;
    }
    state_.stop = state_.stop || final_epoch;
    if (config_.save) {
      YH_RETURN_IF_ERROR(SaveModel(is_best));
      YH_RETURN_IF_ERROR(FireT(Event::kOnModelSave));
    }
    state_.elapsed = elapsed_before_ + train_clock_.ElapsedMs() / 1000.0;
    state_.epoch_time = state_.elapsed - last_epoch_end_;
    last_epoch_end_ = state_.elapsed;
    YH_RETURN_IF_ERROR(FireT(Event::kOnFitEpochEnd));
    YH_RETURN_IF_ERROR(WriteCsvRow());
    if (!state_.stop) {
      // The scheduler: the next epoch's learning rate.
      SetGroupLr(config_.lr0 * Lf(epoch_ + 1));
      if (nb_ * (epoch_ + 1) > warmup_iters_) {
        RecordLr();
        YH_RETURN_IF_ERROR(FireT(Event::kOnParamsUpdate));
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<ValSummary> ValidateEma() {
    InferenceModel model = InferenceModel::FromTorch(ema_->model(), names_);
    ValidatorState base;
    base.epoch = epoch_;
    base.save_dir = save_dir_;
    base.args = state_.args;
    return validator_->Run(
        model, run_, base, loss_.get(),
        nn::LossGains{config_.box, config_.cls, config_.dfl});
  }

  absl::Status WriteCsvRow() {
    std::map<std::string, double> row = metrics_;
    row.erase("fitness");
    row["train/box_loss"] = tloss_[0];
    row["train/cls_loss"] = tloss_[1];
    row["train/dfl_loss"] = tloss_[2];
    for (const auto& [k, v] : state_.lr) row[k] = v;
    for (const auto& [k, v] : state_.logged_metrics) {
      row[k] = v;
      state_.metrics[k] = v;
    }
    state_.logged_metrics.clear();
    return csv_->Append(epoch_ + 1, state_.elapsed, row);
  }

  Checkpoint MakeCheckpoint(bool with_optimizer) {
    Checkpoint c;
    c.options = model_->options();
    c.names = names_;
    c.args = config_;
    c.epoch = with_optimizer ? epoch_ : -1;
    c.best_fitness = best_fitness_;
    c.ema_updates = ema_->updates();
    c.model = model_;
    c.ema = ema_->model();
    c.optimizer_name = optimizer_name_;
    if (with_optimizer) c.optimizer_state = SerializeOptimizer(*optimizer_);
    c.train_metrics = metrics_;
    c.date = NowIso8601();
    c.version = kVersion;
    return c;
  }

  absl::Status SaveModel(bool is_best) {
    Checkpoint c = MakeCheckpoint(/*with_optimizer=*/true);
    YH_RETURN_IF_ERROR(SaveCheckpoint(c, summary_.last));
    if (is_best) YH_RETURN_IF_ERROR(SaveCheckpoint(c, summary_.best));
    if (config_.save_period > 0 && (epoch_ + 1) % config_.save_period == 0) {
      YH_RETURN_IF_ERROR(
          SaveCheckpoint(c, (fs::path(save_dir_) / "weights" /
                             absl::StrCat("epoch", epoch_ + 1, ".pt"))
                                .string()));
    }
    return absl::OkStatus();
  }

  absl::Status FinalEval() {
    state_.metrics = metrics_;
    summary_.metrics = metrics_;
    if (!config_.save || !fs::exists(summary_.best)) return absl::OkStatus();
    // Finished runs keep no optimizer state (Ultralytics' strip_optimizer):
    // last.pt can no longer be resumed, only used.
    YH_ASSIGN_OR_RETURN(Checkpoint best, LoadCheckpoint(summary_.best));
    best.epoch = -1;
    best.optimizer_state.clear();
    YH_RETURN_IF_ERROR(SaveCheckpoint(best, summary_.best));
    YH_RETURN_IF_ERROR(SaveCheckpoint(MakeCheckpoint(/*with_optimizer=*/false),
                                      summary_.last));

    log_(absl::StrCat("\nValidating ", summary_.best, "..."));
    InferenceModel model =
        InferenceModel::FromTorch(best.InferenceModel(), names_);
    ValidatorState base;
    base.save_dir = save_dir_;
    base.args = state_.args;
    YH_ASSIGN_OR_RETURN(
        ValSummary val,
        validator_->Run(model, run_, base, nullptr, nn::LossGains{}));
    summary_.metrics = val.metrics;
    state_.metrics = val.metrics;
    if (config_.plots) {
      fs::path csv = fs::path(save_dir_) / "results.csv";
      absl::Status s = metrics::PlotResults(
          csv.string(), (fs::path(save_dir_) / "results.png").string());
      if (!s.ok())
        log_(absl::StrCat("WARNING results.png not written: ", s.message()));
    }
    log_(absl::StrCat("Results saved to ", save_dir_));
    return absl::OkStatus();
  }

  Config config_;
  const RunOptions& run_;
  Logger log_;
  TrainerState state_;
  TrainSummary summary_;

  int threads_ = 1;
  std::string save_dir_;
  bool resumed_ = false;
  std::optional<Checkpoint> resume_ckpt_;
  std::vector<std::string> names_;

  std::unique_ptr<data::DetectionDataset> train_set_;
  std::unique_ptr<data::DataLoader> train_loader_;
  std::unique_ptr<Validator> validator_;
  std::unique_ptr<metrics::ResultsCsv> csv_;

  nn::DetectionModel model_{nullptr};
  std::unique_ptr<Ema> ema_;
  std::unique_ptr<nn::DetectionLoss> loss_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::string optimizer_name_;
  // Hyperparameters callbacks changed before the optimizer was set up.
  std::set<std::string> early_changes_;

  int start_epoch_ = 0;
  int epoch_ = 0;
  int64_t nb_ = 0;
  int64_t iteration_ = 0;
  int64_t accumulate_ = 1;
  int64_t warmup_iters_ = -1;
  int64_t last_opt_step_ = -1;
  bool mosaic_closed_ = false;

  std::vector<double> tloss_ = {0, 0, 0};
  std::map<std::string, double> metrics_;
  double fitness_ = 0;
  double best_fitness_ = 0;
  int best_epoch_ = -1;
  Stopwatch train_clock_;
  double elapsed_before_ = 0;  // seconds trained before a resume
  double last_epoch_end_ = 0;
};

}  // namespace

absl::StatusOr<TrainSummary> Train(const Config& config,
                                   const RunOptions& run) {
  Trainer trainer(config, run);
  return trainer.Run();
}

}  // namespace yolohook::engine
