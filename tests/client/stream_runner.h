// A Runner for client tests of PredictStream: frame-stream predict jobs are
// played here without the engine, every other job by testing::FakeRunner.
//
// A stream job fires on_predict_start, then per frame (one frame per batch)
// on_predict_batch_start, on_predict_postprocess_end (one box of class 0 at
// (1, 2, 10, 12), conf 0.9, names circle and square, orig size 32x32),
// on_predict_batch_end, hands the frame's final result to
// run.stream.on_result, and ends with on_predict_end. A frame whose data is
// "bad" ends the job with INVALID_ARGUMENT naming it, like an undecodable
// frame in the engine. Like the engine, a cancelled job stops before its next
// frame (CANCELLED "cancelled") and a callback that fails the job ends it with
// ABORTED naming the event. Thread-safe.
#ifndef YOLOHOOK_TESTS_CLIENT_STREAM_RUNNER_H_
#define YOLOHOOK_TESTS_CLIENT_STREAM_RUNNER_H_

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/callbacks/state.h"
#include "server/common/status_macros.h"
#include "server/jobs/job_manager.h"
#include "tests/testing/fake_runner.h"

namespace yolohook::testing {

class StreamRunner : public jobs::Runner {
 public:
  absl::Status Run(jobs::JobRecord& job,
                   const engine::RunOptions& run) override {
    if (job.mode != Mode::kPredict || !run.stream) return fake_.Run(job, run);
    PredictorState p;
    p.source_type = "stream";
    p.args = job.args;
    YH_RETURN_IF_ERROR(Fire(run, Event::kOnPredictStart, p));
    engine::InputImage frame;
    for (int n = 0; run.stream.next(&frame); ++n) {
      if (frame.data == "bad") {
        return absl::InvalidArgumentError(absl::StrCat(
            "frame ", n, " ('", frame.name, "') is not a JPEG or PNG image"));
      }
      p.batch_index = n;
      p.paths = {frame.name};
      p.results.clear();
      YH_RETURN_IF_ERROR(Fire(run, Event::kOnPredictBatchStart, p));
      Result r;
      r.path = frame.name;
      r.orig_height = 32;
      r.orig_width = 32;
      r.names = {"circle", "square"};
      r.boxes.push_back(Box{1, 2, 10, 12, 0.9f, 0, std::nullopt});
      p.results = {r};
      YH_RETURN_IF_ERROR(Fire(run, Event::kOnPredictPostprocessEnd, p));
      ++p.seen;
      YH_RETURN_IF_ERROR(Fire(run, Event::kOnPredictBatchEnd, p));
      run.stream.on_result(p.results.at(0));
    }
    if (run.cancel != nullptr && run.cancel->load())
      return absl::CancelledError("cancelled");
    return Fire(run, Event::kOnPredictEnd, p);
  }

  // Plays every job that is not a frame stream.
  FakeRunner& fake() { return fake_; }

 private:
  static absl::Status Fire(const engine::RunOptions& run, Event event,
                           PredictorState& p) {
    if (run.cancel != nullptr && run.cancel->load())
      return absl::CancelledError("cancelled");
    EventContext ctx;
    ctx.event = event;
    ctx.predictor = &p;
    if (run.callbacks != nullptr) run.callbacks->Run(ctx);
    if (ctx.fail_reason) {
      return absl::AbortedError(absl::StrCat("failed by a callback at ",
                                             EventName(event), ": ",
                                             *ctx.fail_reason));
    }
    return absl::OkStatus();
  }

  FakeRunner fake_;
};

}  // namespace yolohook::testing

#endif  // YOLOHOOK_TESTS_CLIENT_STREAM_RUNNER_H_
