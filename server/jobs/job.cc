#include "server/jobs/job.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/callbacks/callbacks.h"
#include "server/wire/conversions.h"

namespace yolohook::jobs {

absl::string_view JobStateName(JobState state) {
  switch (state) {
    case JobState::kQueued:
      return "QUEUED";
    case JobState::kRunning:
      return "RUNNING";
    case JobState::kSucceeded:
      return "SUCCEEDED";
    case JobState::kFailed:
      return "FAILED";
    case JobState::kCancelled:
      return "CANCELLED";
    case JobState::kInterrupted:
      return "INTERRUPTED";
  }
  return "UNKNOWN";
}

bool IsFinished(JobState state) {
  return state != JobState::kQueued && state != JobState::kRunning;
}

void JobRecord::Enter(JobState new_state, absl::Time time, std::string reason) {
  state = new_state;
  history.push_back({new_state, time, std::move(reason), attempt});
  if (history.size() > kMaxHistory) {
    history.erase(history.begin(),
                  history.begin() + static_cast<std::ptrdiff_t>(history.size() -
                                                                kMaxHistory));
  }
}

v1::JobState StateToProto(JobState state) {
  switch (state) {
    case JobState::kQueued:
      return v1::JOB_STATE_QUEUED;
    case JobState::kRunning:
      return v1::JOB_STATE_RUNNING;
    case JobState::kSucceeded:
      return v1::JOB_STATE_SUCCEEDED;
    case JobState::kFailed:
      return v1::JOB_STATE_FAILED;
    case JobState::kCancelled:
      return v1::JOB_STATE_CANCELLED;
    case JobState::kInterrupted:
      return v1::JOB_STATE_INTERRUPTED;
  }
  return v1::JOB_STATE_UNSPECIFIED;
}

absl::StatusOr<JobState> StateFromProto(v1::JobState state) {
  switch (state) {
    case v1::JOB_STATE_QUEUED:
      return JobState::kQueued;
    case v1::JOB_STATE_RUNNING:
      return JobState::kRunning;
    case v1::JOB_STATE_SUCCEEDED:
      return JobState::kSucceeded;
    case v1::JOB_STATE_FAILED:
      return JobState::kFailed;
    case v1::JOB_STATE_CANCELLED:
      return JobState::kCancelled;
    case v1::JOB_STATE_INTERRUPTED:
      return JobState::kInterrupted;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("job state: unknown value ", static_cast<int>(state)));
  }
}

v1::Job ToProto(const JobRecord& job) {
  v1::Job out;
  out.set_id(job.id);
  out.set_mode(wire::ModeToWire(job.mode));
  out.set_state(StateToProto(job.state));
  for (const auto& [key, value] : job.args) (*out.mutable_args())[key] = value;
  for (const auto& [key, value] : job.labels) {
    (*out.mutable_labels())[key] = value;
  }
  if (job.create_time != absl::InfinitePast()) {
    *out.mutable_create_time() = wire::ToTimestamp(job.create_time);
  }
  if (job.start_time != absl::InfinitePast()) {
    *out.mutable_start_time() = wire::ToTimestamp(job.start_time);
  }
  if (job.end_time != absl::InfinitePast()) {
    *out.mutable_end_time() = wire::ToTimestamp(job.end_time);
  }
  out.set_error(job.error);
  out.set_save_dir(job.save_dir);
  for (const auto& [key, value] : job.metrics) {
    (*out.mutable_metrics())[key] = value;
  }
  for (const Result& result : job.results) {
    *out.add_results() = wire::ToWire(result);
  }
  for (const Artifact& artifact : job.artifacts) {
    v1::Artifact* a = out.add_artifacts();
    a->set_kind(artifact.kind);
    a->set_path(artifact.path);
  }
  out.set_last_seq(job.last_seq);
  out.set_attempt(job.attempt);
  out.set_direct(job.direct);
  for (const StateChange& change : job.history) {
    v1::StateChange* entry = out.add_history();
    entry->set_state(StateToProto(change.state));
    if (change.time != absl::InfinitePast())
      *entry->mutable_time() = wire::ToTimestamp(change.time);
    entry->set_reason(change.reason);
    entry->set_attempt(change.attempt);
  }
  return out;
}

absl::StatusOr<JobRecord> FromProto(const v1::Job& in) {
  JobRecord job;
  job.id = in.id();
  absl::StatusOr<Mode> mode = wire::ModeFromWire(in.mode());
  if (!mode.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("job ", in.id(), ": ", mode.status().message()));
  }
  job.mode = *mode;
  absl::StatusOr<JobState> state = StateFromProto(in.state());
  if (!state.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("job ", in.id(), ": ", state.status().message()));
  }
  job.state = *state;
  job.args.insert(in.args().begin(), in.args().end());
  job.labels.insert(in.labels().begin(), in.labels().end());
  if (in.has_create_time())
    job.create_time = wire::FromTimestamp(in.create_time());
  if (in.has_start_time())
    job.start_time = wire::FromTimestamp(in.start_time());
  if (in.has_end_time()) job.end_time = wire::FromTimestamp(in.end_time());
  job.error = in.error();
  job.save_dir = in.save_dir();
  job.metrics.insert(in.metrics().begin(), in.metrics().end());
  for (const v1::Result& result : in.results()) {
    job.results.push_back(wire::FromWire(result));
  }
  for (const v1::Artifact& artifact : in.artifacts()) {
    job.artifacts.push_back({artifact.kind(), artifact.path()});
  }
  job.last_seq = in.last_seq();
  job.attempt = in.attempt();
  job.direct = in.direct();
  for (const v1::StateChange& entry : in.history()) {
    absl::StatusOr<JobState> entered = StateFromProto(entry.state());
    if (!entered.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "job ", in.id(), ": history: ", entered.status().message()));
    }
    StateChange change;
    change.state = *entered;
    if (entry.has_time()) change.time = wire::FromTimestamp(entry.time());
    change.reason = entry.reason();
    change.attempt = entry.attempt();
    job.history.push_back(std::move(change));
  }
  return job;
}

}  // namespace yolohook::jobs
