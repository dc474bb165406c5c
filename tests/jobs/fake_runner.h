// A Runner for job layer tests: fires a few scripted trainer events through
// the run's callbacks, can block until released (or cancelled) and can fail,
// all chosen by the job's name= argument.
#ifndef YOLOHOOK_TESTS_JOBS_FAKE_RUNNER_H_
#define YOLOHOOK_TESTS_JOBS_FAKE_RUNNER_H_

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/callbacks/state.h"
#include "server/jobs/job_manager.h"

namespace yolohook::jobs::testing {

// Behaviour by args["name"]:
//   "fail"     returns INVALID_ARGUMENT "data: dataset exploded";
//   "block..." waits (after its first event) until Release(name), ReleaseAll()
//              or its cancel flag, then returns CANCELLED if cancelled;
//   anything else succeeds at once.
// Every job fires on_train_start (with save_dir = <root>/<job id>), then
// on_fit_epoch_end and on_train_end, and ends with metrics
// {"metrics/mAP50(B)": 0.5} and a weights_last artifact. A callback that
// fails the job (EventContext::Fail) ends it with ABORTED. Thread-safe.
class FakeRunner : public Runner {
 public:
  explicit FakeRunner(std::string root) : root_(std::move(root)) {}

  absl::Status Run(JobRecord& job, const engine::RunOptions& run) override {
    const std::string name =
        job.args.count("name") != 0 ? job.args.at("name") : "";
    {
      absl::MutexLock lock(&mu_);
      args_[job.id] = job.args;
      images_[job.id] = run.images.size();
      ++running_;
      max_running_ = std::max(max_running_, running_);
    }
    const std::string save_dir = root_ + "/" + job.id;
    TrainerState state;
    state.save_dir = save_dir;
    state.epochs = 1;
    absl::Status status = Fire(run, Event::kOnTrainStart, state);
    {
      absl::MutexLock lock(&mu_);
      started_.push_back(job.id);
    }

    if (status.ok() && absl::StartsWith(name, "block")) {
      absl::MutexLock lock(&mu_);
      // The cancel flag is an atomic the manager sets without our lock:
      // re-check it periodically.
      while (released_.count(name) == 0 && !release_all_ &&
             !(run.cancel != nullptr && run.cancel->load())) {
        mu_.AwaitWithTimeout(absl::Condition(&changed_), absl::Milliseconds(5));
        changed_ = false;
      }
    }
    if (status.ok() && run.cancel != nullptr && run.cancel->load()) {
      status = absl::CancelledError("cancelled");
    } else if (status.ok() && name == "fail") {
      status = absl::InvalidArgumentError("data: dataset exploded");
    } else if (status.ok()) {
      state.epoch = 0;
      status = Fire(run, Event::kOnFitEpochEnd, state);
      if (status.ok()) status = Fire(run, Event::kOnTrainEnd, state);
    }
    if (status.ok()) {
      job.save_dir = save_dir;
      job.metrics = {{"metrics/mAP50(B)", 0.5}};
      job.artifacts = {{"weights_last", save_dir + "/weights/last.pt"}};
    }
    absl::MutexLock lock(&mu_);
    --running_;
    finished_.push_back(job.id);
    return status;
  }

  void Release(const std::string& name) {
    absl::MutexLock lock(&mu_);
    released_.insert(name);
    changed_ = true;
  }
  void ReleaseAll() {
    absl::MutexLock lock(&mu_);
    release_all_ = true;
    changed_ = true;
  }

  // Blocks until `count` jobs have started and fired their first event.
  void AwaitStarted(size_t count) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, count]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return started_.size() >= count;
    };
    mu_.Await(absl::Condition(&enough));
  }

  std::vector<std::string> started() const {
    absl::MutexLock lock(&mu_);
    return started_;
  }
  std::map<std::string, std::string> args(const std::string& id) const {
    absl::MutexLock lock(&mu_);
    auto it = args_.find(id);
    return it == args_.end() ? std::map<std::string, std::string>{}
                             : it->second;
  }
  size_t images(const std::string& id) const {
    absl::MutexLock lock(&mu_);
    auto it = images_.find(id);
    return it == images_.end() ? 0 : it->second;
  }
  int max_running() const {
    absl::MutexLock lock(&mu_);
    return max_running_;
  }

 private:
  // Like the engine: a callback that failed the job ends it with ABORTED.
  static absl::Status Fire(const engine::RunOptions& run, Event event,
                           TrainerState& state) {
    if (run.callbacks == nullptr) return absl::OkStatus();
    EventContext ctx;
    ctx.event = event;
    ctx.trainer = &state;
    run.callbacks->Run(ctx);
    if (ctx.fail_reason) return absl::AbortedError(*ctx.fail_reason);
    return absl::OkStatus();
  }

  const std::string root_;
  mutable absl::Mutex mu_;
  std::vector<std::string> started_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> finished_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::map<std::string, std::string>> args_
      ABSL_GUARDED_BY(mu_);
  std::map<std::string, size_t> images_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> released_ ABSL_GUARDED_BY(mu_);
  bool release_all_ ABSL_GUARDED_BY(mu_) = false;
  bool changed_ ABSL_GUARDED_BY(mu_) = false;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  int max_running_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace yolohook::jobs::testing

#endif  // YOLOHOOK_TESTS_JOBS_FAKE_RUNNER_H_
