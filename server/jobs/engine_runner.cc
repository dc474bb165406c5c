#include "server/jobs/engine_runner.h"

#include <exception>
#include <filesystem>
#include <map>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/engine/config.h"
#include "server/engine/exporter.h"
#include "server/engine/predictor.h"
#include "server/engine/trainer.h"
#include "server/engine/validator.h"

namespace yolohook::jobs {
namespace {

bool IsFile(const std::string& path) {
  std::error_code ec;
  return !path.empty() && std::filesystem::is_regular_file(path, ec);
}

void AddIfExists(JobRecord& job, const std::string& kind,
                 const std::string& path) {
  if (IsFile(path)) job.artifacts.push_back({kind, path});
}

absl::Status RunEngine(const Config& config, JobRecord& job,
                       const engine::RunOptions& run) {
  switch (job.mode) {
    case Mode::kTrain: {
      YH_ASSIGN_OR_RETURN(engine::TrainSummary summary,
                          engine::Train(config, run));
      job.save_dir = summary.save_dir;
      job.metrics = summary.metrics;
      const std::filesystem::path dir(summary.save_dir);
      AddIfExists(job, "weights_best", summary.best);
      AddIfExists(job, "weights_last", summary.last);
      AddIfExists(job, "results_csv", (dir / "results.csv").string());
      AddIfExists(job, "results_png", (dir / "results.png").string());
      return absl::OkStatus();
    }
    case Mode::kVal: {
      YH_ASSIGN_OR_RETURN(engine::ValSummary summary,
                          engine::Validate(config, run));
      job.save_dir = summary.save_dir;
      job.metrics = summary.metrics;
      return absl::OkStatus();
    }
    case Mode::kPredict: {
      YH_ASSIGN_OR_RETURN(engine::PredictSummary summary,
                          engine::Predict(config, run));
      job.save_dir = summary.save_dir;
      job.results = std::move(summary.results);
      return absl::OkStatus();
    }
    case Mode::kExport: {
      YH_ASSIGN_OR_RETURN(engine::ExportSummary summary,
                          engine::Export(config, run));
      job.save_dir = std::filesystem::path(summary.file).parent_path().string();
      job.artifacts.push_back({config.format, summary.file});
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError("unknown job mode");
}

}  // namespace

absl::Status EngineRunner::Run(JobRecord& job, const engine::RunOptions& run) {
  std::map<std::string, std::string> args = job.args;
  if (options_.threads > 0 && args.count("threads") == 0) {
    args["threads"] = absl::StrCat(options_.threads);
  }
  if (!options_.data_dir.empty() && args.count("data_dir") == 0) {
    args["data_dir"] = options_.data_dir;
  }
  absl::StatusOr<Config> config = MakeConfig(job.mode, args);
  if (!config.ok())
    return absl::InvalidArgumentError(config.status().message());
  // The engine returns errors as statuses; anything thrown past it is a bug
  // that must still not take the server down.
  try {
    return RunEngine(*config, job, run);
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat(ModeName(job.mode), " failed unexpectedly: ", e.what()));
  }
}

}  // namespace yolohook::jobs
