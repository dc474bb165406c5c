#include "server/engine/yolo.h"

#include <cstdio>

#include "server/common/status_macros.h"
#include "server/engine/exporter.h"
#include "server/engine/predictor.h"
#include "server/engine/trainer.h"
#include "server/engine/validator.h"

namespace yolohook::engine {

absl::StatusOr<Config> Yolo::ConfigFor(Mode mode, const Args& args) {
  Args with_model = args;
  with_model.emplace("model", model_);
  std::vector<std::string> warnings;
  YH_ASSIGN_OR_RETURN(Config config, MakeConfig(mode, with_model, &warnings));
  RunOptions run = Options();
  for (const std::string& w : warnings) {
    if (run.log) {
      run.log("WARNING " + w);
    } else if (config.verbose) {
      std::printf("WARNING %s\n", w.c_str());
    }
  }
  cancel_ = false;
  return config;
}

RunOptions Yolo::Options() {
  RunOptions run;
  run.callbacks = &callbacks_;
  run.cancel = &cancel_;
  run.log = log_;
  return run;
}

absl::StatusOr<TrainSummary> Yolo::Train(const Args& args) {
  YH_ASSIGN_OR_RETURN(Config config, ConfigFor(Mode::kTrain, args));
  YH_ASSIGN_OR_RETURN(TrainSummary summary, engine::Train(config, Options()));
  model_ = summary.best;
  return summary;
}

absl::StatusOr<ValSummary> Yolo::Val(const Args& args) {
  YH_ASSIGN_OR_RETURN(Config config, ConfigFor(Mode::kVal, args));
  return engine::Validate(config, Options());
}

absl::StatusOr<PredictSummary> Yolo::Predict(const Args& args,
                                             std::vector<InputImage> images) {
  YH_ASSIGN_OR_RETURN(Config config, ConfigFor(Mode::kPredict, args));
  RunOptions run = Options();
  run.images = std::move(images);
  return engine::Predict(config, run);
}

absl::StatusOr<ExportSummary> Yolo::Export(const Args& args) {
  YH_ASSIGN_OR_RETURN(Config config, ConfigFor(Mode::kExport, args));
  return engine::Export(config, Options());
}

}  // namespace yolohook::engine
