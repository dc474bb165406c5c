// A Runner that plays a job's lifecycle without the engine: the events of
// each mode in Ultralytics' order, with plausible state, honouring what
// callbacks do (stop, fail, replaced results). For service tests.
#ifndef YOLOHOOK_TESTS_TESTING_FAKE_RUNNER_H_
#define YOLOHOOK_TESTS_TESTING_FAKE_RUNNER_H_

#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/common/config.h"
#include "server/jobs/job_manager.h"

namespace yolohook::testing {

// Fires one event through the run's callbacks; returns their failure, or
// CANCELLED.
#define YH_FAKE_FIRE(event, member, state)                            \
  do {                                                                \
    absl::Status yh_s =                                               \
        Fire(run, event, [&](EventContext& c) { c.member = state; }); \
    if (!yh_s.ok()) return yh_s;                                      \
  } while (false)

// Thread-safe (keeps no state between runs).
class FakeRunner : public jobs::Runner {
 public:
  absl::Status Run(jobs::JobRecord& job,
                   const engine::RunOptions& run) override {
    switch (job.mode) {
      case Mode::kTrain:
        return Train(job, run);
      case Mode::kPredict:
        return Predict(job, run);
      case Mode::kVal: {
        ValidatorState v;
        for (Event e : {Event::kOnValStart, Event::kOnValBatchStart,
                        Event::kOnValBatchEnd, Event::kOnValEnd}) {
          YH_FAKE_FIRE(e, validator, &v);
        }
        job.metrics["metrics/mAP50(B)"] = 0.5;
        return absl::OkStatus();
      }
      case Mode::kExport: {
        ExporterState x;
        YH_FAKE_FIRE(Event::kOnExportStart, exporter, &x);
        YH_FAKE_FIRE(Event::kOnExportEnd, exporter, &x);
        return absl::OkStatus();
      }
    }
    return absl::OkStatus();
  }

  static int IntArg(const jobs::JobRecord& job, const std::string& key,
                    int fallback) {
    auto it = job.args.find(key);
    int v = fallback;
    if (it != job.args.end() && !absl::SimpleAtoi(it->second, &v)) v = fallback;
    return v;
  }

 private:
  template <typename Set>
  static absl::Status Fire(const engine::RunOptions& run, Event event,
                           Set set) {
    if (run.cancel != nullptr && run.cancel->load())
      return absl::CancelledError("cancelled");
    EventContext ctx;
    ctx.event = event;
    set(ctx);
    if (run.callbacks != nullptr) run.callbacks->Run(ctx);
    if (ctx.fail_reason) {
      return absl::AbortedError(
          absl::StrCat("failed at ", EventName(event), ": ", *ctx.fail_reason));
    }
    return absl::OkStatus();
  }

  static absl::Status Train(jobs::JobRecord& job,
                            const engine::RunOptions& run) {
    TrainerState t;
    t.epochs = IntArg(job, "epochs", 2);
    t.num_batches = 2;
    t.names = {"circle", "square"};
    t.loss_names = {"box_loss", "cls_loss", "dfl_loss"};
    t.hyperparameters["lr0"] = 0.01;
    for (Event e : {Event::kOnPretrainRoutineStart,
                    Event::kOnPretrainRoutineEnd, Event::kOnTrainStart}) {
      YH_FAKE_FIRE(e, trainer, &t);
    }
    for (t.epoch = 0; t.epoch < t.epochs; ++t.epoch) {
      YH_FAKE_FIRE(Event::kOnTrainEpochStart, trainer, &t);
      for (t.batch_index = 0; t.batch_index < t.num_batches; ++t.batch_index) {
        YH_FAKE_FIRE(Event::kOnTrainBatchStart, trainer, &t);
        t.tloss = {1.0 / (t.epoch + 1), 2.0, 3.0};
        YH_FAKE_FIRE(Event::kOnTrainBatchEnd, trainer, &t);
      }
      YH_FAKE_FIRE(Event::kOnTrainEpochEnd, trainer, &t);
      t.metrics["metrics/mAP50(B)"] = 0.1 * (t.epoch + 1);
      YH_FAKE_FIRE(Event::kOnFitEpochEnd, trainer, &t);
      if (t.hyperparameters["lr0"] != 0.01) {
        job.metrics["lr0"] = t.hyperparameters["lr0"];
        YH_FAKE_FIRE(Event::kOnParamsUpdate, trainer, &t);
      }
      for (const auto& [k, v] : t.logged_metrics) job.metrics[k] = v;
      if (t.stop) break;
    }
    job.metrics["epochs_completed"] = std::min(t.epoch + 1, t.epochs);
    YH_FAKE_FIRE(Event::kOnTrainEnd, trainer, &t);
    YH_FAKE_FIRE(Event::kTeardown, trainer, &t);
    return absl::OkStatus();
  }

  // One image per batch; each gets one box of class 0.
  static absl::Status Predict(jobs::JobRecord& job,
                              const engine::RunOptions& run) {
    PredictorState p;
    p.source_type = "memory";
    YH_FAKE_FIRE(Event::kOnPredictStart, predictor, &p);
    for (size_t i = 0; i < run.images.size(); ++i) {
      p.batch_index = static_cast<int>(i);
      p.paths = {run.images[i].name};
      p.results.clear();
      YH_FAKE_FIRE(Event::kOnPredictBatchStart, predictor, &p);
      Result r;
      r.path = run.images[i].name;
      r.orig_height = 32;
      r.orig_width = 32;
      r.names = {"circle", "square"};
      r.boxes.push_back(Box{1, 2, 10, 12, 0.9f, 0, std::nullopt});
      p.results = {r};
      YH_FAKE_FIRE(Event::kOnPredictPostprocessEnd, predictor, &p);
      ++p.seen;
      YH_FAKE_FIRE(Event::kOnPredictBatchEnd, predictor, &p);
      job.results.push_back(p.results.at(0));
    }
    YH_FAKE_FIRE(Event::kOnPredictEnd, predictor, &p);
    return absl::OkStatus();
  }
};

#undef YH_FAKE_FIRE

}  // namespace yolohook::testing

#endif  // YOLOHOOK_TESTS_TESTING_FAKE_RUNNER_H_
