// A job's record: what it runs, where it is in its lifecycle and what it
// produced. The C++ twin of yolohook.v1.Job; ToProto / FromProto convert in
// one place.
#ifndef YOLOHOOK_SERVER_JOBS_JOB_H_
#define YOLOHOOK_SERVER_JOBS_JOB_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/callbacks/state.h"
#include "server/engine/config.h"
#include "yolohook/v1/jobs.pb.h"

namespace yolohook::jobs {

// A job's lifecycle state.
enum class JobState {
  kQueued,       // waiting for a free runner
  kRunning,      // running
  kSucceeded,    // finished successfully
  kFailed,       // finished with an error (see JobRecord::error)
  kCancelled,    // cancelled by a client
  kInterrupted,  // the server stopped while it was queued or running
};

// "QUEUED", "RUNNING", ...
absl::string_view JobStateName(JobState state);

// True for the states a job never leaves.
bool IsFinished(JobState state);

// A file a job produced.
struct Artifact {
  // weights_best, weights_last, onnx, results_csv, ...
  std::string kind;
  // path on the server
  std::string path;

  bool operator==(const Artifact& other) const {
    return kind == other.kind && path == other.path;
  }
};

// One entry of a job's history: a state it entered.
struct StateChange {
  // The state entered.
  JobState state = JobState::kQueued;
  // When.
  absl::Time time = absl::InfinitePast();
  // Why (empty when there is nothing to say).
  std::string reason;
  // The attempt it belongs to.
  int attempt = 0;

  bool operator==(const StateChange& other) const {
    return state == other.state && time == other.time &&
           reason == other.reason && attempt == other.attempt;
  }
};

struct JobRecord {
  // History entries kept per job; older ones are dropped.
  static constexpr size_t kMaxHistory = 64;

  // server-assigned, unique
  std::string id;
  // what it runs
  Mode mode = Mode::kTrain;
  // where it is in its lifecycle
  JobState state = JobState::kQueued;
  // key=value arguments
  std::map<std::string, std::string> args;
  // for selecting jobs
  std::map<std::string, std::string> labels;
  // accepted (InfinitePast: unset)
  absl::Time create_time = absl::InfinitePast();
  // started running (unset: not yet)
  absl::Time start_time = absl::InfinitePast();
  // finished (unset: not yet)
  absl::Time end_time = absl::InfinitePast();
  // why it failed, was cancelled or interrupted
  std::string error;
  // run directory
  std::string save_dir;
  // final metrics (train, val)
  std::map<std::string, double> metrics;
  // predict: one per image
  std::vector<Result> results;
  // files produced
  std::vector<Artifact> artifacts;
  // seq of the job's last event so far
  int64_t last_seq = 0;
  // Which run of the job this is: 1 from submission, one more each time an
  // interrupted job is queued again to resume.
  int attempt = 0;
  // Started at once by RunNow or RunStream (Predict, PredictStream), outside
  // the queue; such jobs are not resumed after an interruption.
  bool direct = false;
  // The states the job has been in, oldest first (at most kMaxHistory).
  std::vector<StateChange> history;

  // Sets `state` and notes it in the history at `time` with `reason`.
  void Enter(JobState new_state, absl::Time time, std::string reason = "");
};

v1::JobState StateToProto(JobState state);
// INVALID_ARGUMENT for JOB_STATE_UNSPECIFIED or an unknown value.
absl::StatusOr<JobState> StateFromProto(v1::JobState state);

// The record as the wire carries it.
v1::Job ToProto(const JobRecord& job);
// The record from its wire form. Errors: INVALID_ARGUMENT for an unknown mode
// or state.
absl::StatusOr<JobRecord> FromProto(const v1::Job& job);

}  // namespace yolohook::jobs

#endif  // YOLOHOOK_SERVER_JOBS_JOB_H_
