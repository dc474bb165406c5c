// A Runner that plays a job's lifecycle without the engine, for job layer and
// service tests: the events of each mode in Ultralytics' order with plausible
// state, honouring what callbacks do (stop, fail, replaced results, changed
// hyperparameters), and able to block or fail on request.
//
// Behaviour by the job's arguments (all valid Config keys):
//   epochs=N   train: N epochs (default 1) of two batches each; every epoch
//              fires on_train_epoch_start, two on_train_batch_start/_end
//              pairs, on_train_epoch_end and on_fit_epoch_end, so a job fires
//              7 * N + 5 events (TrainEvents), plus on_params_update
//              after each event whose callbacks changed hyperparameters. Large
//              N makes many events.
//   name=...   containing "fail": after its first event the job ends with
//              INVALID_ARGUMENT "data: dataset exploded";
//              starting with "block": after its first event the job waits
//              until Release(name), ReleaseAll() or its cancel flag.
// Modes: train (above); val fires on_val_start, on_val_batch_start,
// on_val_batch_end, on_val_end; predict fires on_predict_start, then per
// inline image (one image per batch) on_predict_batch_start,
// on_predict_postprocess_end (one box of class 0 at (1, 2, 10, 12), conf 0.9,
// names circle and square), on_predict_batch_end, and on_predict_end; export
// fires on_export_start and on_export_end.
//
// Results: train reports metrics "metrics/mAP50(B)" (0.1 per epoch run) and
// "epochs_completed" (and "lr0" when a callback changed it); val reports
// "metrics/mAP50(B)" 0.5; predict the final results. With a root directory,
// each job's save_dir is <root>/<job id>, carried by every event's state, and
// train jobs list weights_last and weights_best artifacts there (no files).
//
// Like the engine: a cancelled job stops before its next event (CANCELLED
// "cancelled") and a callback that fails the job ends it with ABORTED naming
// the event. Thread-safe.
#ifndef YOLOHOOK_TESTS_TESTING_FAKE_RUNNER_H_
#define YOLOHOOK_TESTS_TESTING_FAKE_RUNNER_H_

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/callbacks/state.h"
#include "server/common/status_macros.h"
#include "server/engine/config.h"
#include "server/jobs/job_manager.h"

namespace yolohook::testing {

class FakeRunner : public jobs::Runner {
 public:
  // `root`: where save_dirs are placed ("" for none).
  explicit FakeRunner(std::string root = "") : root_(std::move(root)) {}

  // Events a train job of `epochs` epochs fires when nothing stops it.
  static int TrainEvents(int epochs) { return 7 * epochs + 5; }

  absl::Status Run(jobs::JobRecord& job,
                   const engine::RunOptions& run) override {
    {
      absl::MutexLock lock(&mu_);
      args_[job.id] = job.args;
      images_[job.id] = run.images.size();
      ++running_;
      max_running_ = std::max(max_running_, running_);
    }
    Play play{this, job, run, root_.empty() ? "" : root_ + "/" + job.id};
    absl::Status status = play.Run();
    absl::MutexLock lock(&mu_);
    if (!play.started) started_.push_back(job.id);
    --running_;
    return status;
  }

  // Lets the jobs named `name` (now and later) go on past their first event.
  void Release(const std::string& name) {
    absl::MutexLock lock(&mu_);
    released_.insert(name);
  }
  // Lets every blocking job go on.
  void ReleaseAll() {
    absl::MutexLock lock(&mu_);
    release_all_ = true;
  }

  // Blocks until `count` jobs have started and fired their first event (or
  // ended without one).
  void AwaitStarted(size_t count) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, count]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return started_.size() >= count;
    };
    mu_.Await(absl::Condition(&enough));
  }

  // Ids of the jobs that started (fired their first event, or ended without
  // any), in that order.
  std::vector<std::string> started() const {
    absl::MutexLock lock(&mu_);
    return started_;
  }
  // The arguments the job last ran with.
  std::map<std::string, std::string> args(const std::string& id) const {
    absl::MutexLock lock(&mu_);
    auto it = args_.find(id);
    return it == args_.end() ? std::map<std::string, std::string>{}
                             : it->second;
  }
  // How many inline images the job got.
  size_t images(const std::string& id) const {
    absl::MutexLock lock(&mu_);
    auto it = images_.find(id);
    return it == images_.end() ? 0 : it->second;
  }
  // The most jobs that ran at once.
  int max_running() const {
    absl::MutexLock lock(&mu_);
    return max_running_;
  }

 private:
  // One run of one job.
  struct Play {
    FakeRunner* runner;
    jobs::JobRecord& job;
    const engine::RunOptions& run;
    std::string save_dir;
    // the first event fired
    bool started = false;

    std::string Arg(const std::string& key) const {
      auto it = job.args.find(key);
      return it == job.args.end() ? "" : it->second;
    }
    int IntArg(const std::string& key, int fallback) const {
      int v = fallback;
      if (!absl::SimpleAtoi(Arg(key), &v)) v = fallback;
      return v;
    }

    absl::Status Run() {
      switch (job.mode) {
        case Mode::kTrain:
          return Train();
        case Mode::kVal:
          return Val();
        case Mode::kPredict:
          return Predict();
        case Mode::kExport:
          return Export();
      }
      return absl::InvalidArgumentError("unknown mode");
    }

    // Fires one event; after the first one, blocks or fails as the job's
    // name asks. Returns CANCELLED, the callbacks' failure, or the name's.
    template <typename State>
    absl::Status Fire(Event event, State* state, State* EventContext::*member) {
      if (run.cancel != nullptr && run.cancel->load())
        return absl::CancelledError("cancelled");
      EventContext ctx;
      ctx.event = event;
      ctx.*member = state;
      if (run.callbacks != nullptr) run.callbacks->Run(ctx);
      if (!started) {
        started = true;
        absl::MutexLock lock(&runner->mu_);
        runner->started_.push_back(job.id);
      }
      if (ctx.fail_reason) {
        return absl::AbortedError(absl::StrCat("failed by a callback at ",
                                               EventName(event), ": ",
                                               *ctx.fail_reason));
      }
      return AfterFirstEvent();
    }
    // Like the trainer: hyperparameters a callback changed are followed by
    // on_params_update.
    absl::Status Fire(Event event, TrainerState* s) {
      const std::map<std::string, double> before = s->hyperparameters;
      YH_RETURN_IF_ERROR(Fire(event, s, &EventContext::trainer));
      if (event == Event::kOnParamsUpdate || s->hyperparameters == before)
        return absl::OkStatus();
      return Fire(Event::kOnParamsUpdate, s, &EventContext::trainer);
    }
    absl::Status Fire(Event event, ValidatorState* s) {
      return Fire(event, s, &EventContext::validator);
    }
    absl::Status Fire(Event event, PredictorState* s) {
      return Fire(event, s, &EventContext::predictor);
    }
    absl::Status Fire(Event event, ExporterState* s) {
      return Fire(event, s, &EventContext::exporter);
    }

    bool after_first_done = false;
    absl::Status AfterFirstEvent() {
      if (after_first_done) return absl::OkStatus();
      after_first_done = true;
      const std::string name = Arg("name");
      if (absl::StartsWith(name, "block")) {
        absl::MutexLock lock(&runner->mu_);
        // The cancel flag is an atomic the manager sets without our lock:
        // re-check it periodically.
        auto released = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
          return runner->released_.count(name) != 0 || runner->release_all_ ||
                 (run.cancel != nullptr && run.cancel->load());
        };
        while (!runner->mu_.AwaitWithTimeout(absl::Condition(&released),
                                             absl::Milliseconds(5))) {
        }
      }
      if (run.cancel != nullptr && run.cancel->load())
        return absl::CancelledError("cancelled");
      if (absl::StrContains(name, "fail"))
        return absl::InvalidArgumentError("data: dataset exploded");
      return absl::OkStatus();
    }

    absl::Status Train() {
      TrainerState t;
      t.epochs = IntArg("epochs", 1);
      t.num_batches = 2;
      t.batch_size = 4;
      t.save_dir = save_dir;
      t.args = job.args;
      t.names = {"circle", "square"};
      t.loss_names = {"box_loss", "cls_loss", "dfl_loss"};
      t.hyperparameters["lr0"] = 0.01;
      for (Event e : {Event::kOnPretrainRoutineStart,
                      Event::kOnPretrainRoutineEnd, Event::kOnTrainStart}) {
        YH_RETURN_IF_ERROR(Fire(e, &t));
      }
      int completed = 0;
      for (t.epoch = 0; t.epoch < t.epochs; ++t.epoch) {
        YH_RETURN_IF_ERROR(Fire(Event::kOnTrainEpochStart, &t));
        for (t.batch_index = 0; t.batch_index < t.num_batches;
             ++t.batch_index) {
          t.iteration = t.epoch * t.num_batches + t.batch_index;
          YH_RETURN_IF_ERROR(Fire(Event::kOnTrainBatchStart, &t));
          t.tloss = {1.0 / (t.epoch + 1), 2.0, 3.0};
          YH_RETURN_IF_ERROR(Fire(Event::kOnTrainBatchEnd, &t));
        }
        YH_RETURN_IF_ERROR(Fire(Event::kOnTrainEpochEnd, &t));
        t.metrics["metrics/mAP50(B)"] = 0.1 * (t.epoch + 1);
        YH_RETURN_IF_ERROR(Fire(Event::kOnFitEpochEnd, &t));
        ++completed;
        for (const auto& [k, v] : t.logged_metrics) job.metrics[k] = v;
        if (t.stop) break;
      }
      job.metrics["metrics/mAP50(B)"] = 0.1 * completed;
      job.metrics["epochs_completed"] = completed;
      if (t.hyperparameters["lr0"] != 0.01)
        job.metrics["lr0"] = t.hyperparameters["lr0"];
      for (Event e : {Event::kOnTrainEnd, Event::kTeardown}) {
        YH_RETURN_IF_ERROR(Fire(e, &t));
      }
      job.save_dir = save_dir;
      if (!save_dir.empty()) {
        job.artifacts = {{"weights_best", save_dir + "/weights/best.pt"},
                         {"weights_last", save_dir + "/weights/last.pt"}};
      }
      return absl::OkStatus();
    }

    absl::Status Val() {
      ValidatorState v;
      v.save_dir = save_dir;
      v.args = job.args;
      v.names = {"circle", "square"};
      v.num_batches = 1;
      for (Event e : {Event::kOnValStart, Event::kOnValBatchStart,
                      Event::kOnValBatchEnd}) {
        YH_RETURN_IF_ERROR(Fire(e, &v));
      }
      v.metrics["metrics/mAP50(B)"] = 0.5;
      YH_RETURN_IF_ERROR(Fire(Event::kOnValEnd, &v));
      job.save_dir = save_dir;
      job.metrics = v.metrics;
      return absl::OkStatus();
    }

    // One image per batch; each gets one box of class 0.
    absl::Status Predict() {
      PredictorState p;
      p.source_type = "memory";
      p.save_dir = save_dir;
      p.args = job.args;
      YH_RETURN_IF_ERROR(Fire(Event::kOnPredictStart, &p));
      for (size_t i = 0; i < run.images.size(); ++i) {
        p.batch_index = static_cast<int>(i);
        p.paths = {run.images[i].name};
        p.results.clear();
        YH_RETURN_IF_ERROR(Fire(Event::kOnPredictBatchStart, &p));
        Result r;
        r.path = run.images[i].name;
        r.orig_height = 32;
        r.orig_width = 32;
        r.names = {"circle", "square"};
        r.boxes.push_back(Box{1, 2, 10, 12, 0.9f, 0, std::nullopt});
        p.results = {r};
        YH_RETURN_IF_ERROR(Fire(Event::kOnPredictPostprocessEnd, &p));
        ++p.seen;
        YH_RETURN_IF_ERROR(Fire(Event::kOnPredictBatchEnd, &p));
        job.results.push_back(p.results.at(0));
      }
      YH_RETURN_IF_ERROR(Fire(Event::kOnPredictEnd, &p));
      job.save_dir = save_dir;
      return absl::OkStatus();
    }

    absl::Status Export() {
      ExporterState x;
      x.format = "onnx";
      x.args = job.args;
      YH_RETURN_IF_ERROR(Fire(Event::kOnExportStart, &x));
      x.output = save_dir.empty() ? "model.onnx" : save_dir + "/model.onnx";
      YH_RETURN_IF_ERROR(Fire(Event::kOnExportEnd, &x));
      job.save_dir = save_dir;
      return absl::OkStatus();
    }
  };

  const std::string root_;
  mutable absl::Mutex mu_;
  std::vector<std::string> started_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::map<std::string, std::string>> args_
      ABSL_GUARDED_BY(mu_);
  std::map<std::string, size_t> images_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> released_ ABSL_GUARDED_BY(mu_);
  bool release_all_ ABSL_GUARDED_BY(mu_) = false;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  int max_running_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace yolohook::testing

#endif  // YOLOHOOK_TESTS_TESTING_FAKE_RUNNER_H_
