// The production Runner: runs a job on the YOLO engine.
#ifndef YOLOHOOK_SERVER_JOBS_ENGINE_RUNNER_H_
#define YOLOHOOK_SERVER_JOBS_ENGINE_RUNNER_H_

#include <string>

#include "absl/status/status.h"
#include "server/engine/run.h"
#include "server/jobs/job.h"
#include "server/jobs/job_manager.h"

namespace yolohook::jobs {

// Runs jobs with engine::Train / Validate / Predict / Export. Lives in its own
// library (yolohook::engine_runner) so that the job layer itself does not link
// LibTorch. Thread-safe: it keeps no state between runs.
class EngineRunner : public Runner {
 public:
  struct Options {
    // Datasets and runs of jobs whose args set no data_dir ("" = the engine's
    // default: $YOLOHOOK_DATA_DIR or ~/.yolohook).
    std::string data_dir;
    // LibTorch threads of jobs whose args set none (0 = the engine's default:
    // all cores).
    int threads = 0;
  };

  explicit EngineRunner(Options options) : options_(std::move(options)) {}

  // Builds the job's Config (MakeConfig(job.mode, job.args), with data_dir
  // defaulted) and runs it. Fills save_dir; metrics (train, val); results
  // (predict); artifacts: weights_best, weights_last, results_csv, results_png
  // (train, those that exist) and onnx (export). Errors: the engine's (see
  // server/engine/run.h); INVALID_ARGUMENT for bad arguments.
  absl::Status Run(JobRecord& job, const engine::RunOptions& run) override;

 private:
  const Options options_;
};

}  // namespace yolohook::jobs

#endif  // YOLOHOOK_SERVER_JOBS_ENGINE_RUNNER_H_
