#include "server/jobs/job.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/timestamp.pb.h"

namespace yolohook::jobs {
namespace {

void TimeToProto(absl::Time time, google::protobuf::Timestamp* out) {
  const int64_t seconds = absl::ToUnixSeconds(time);
  out->set_seconds(seconds);
  out->set_nanos(static_cast<int32_t>((time - absl::FromUnixSeconds(seconds)) /
                                      absl::Nanoseconds(1)));
}

absl::Time TimeFromProto(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

void ResultToProto(const Result& result, v1::Result* out) {
  out->set_path(result.path);
  out->set_orig_height(result.orig_height);
  out->set_orig_width(result.orig_width);
  for (const Box& box : result.boxes) {
    v1::Box* b = out->add_boxes();
    b->set_x1(box.x1);
    b->set_y1(box.y1);
    b->set_x2(box.x2);
    b->set_y2(box.y2);
    b->set_conf(box.conf);
    b->set_cls(box.cls);
    if (box.track_id) b->set_track_id(*box.track_id);
  }
  for (size_t i = 0; i < result.names.size(); ++i) {
    (*out->mutable_names())[static_cast<int32_t>(i)] = result.names[i];
  }
  out->mutable_speed()->set_preprocess_ms(result.speed.preprocess_ms);
  out->mutable_speed()->set_inference_ms(result.speed.inference_ms);
  out->mutable_speed()->set_postprocess_ms(result.speed.postprocess_ms);
}

Result ResultFromProto(const v1::Result& in) {
  Result result;
  result.path = in.path();
  result.orig_height = in.orig_height();
  result.orig_width = in.orig_width();
  for (const v1::Box& b : in.boxes()) {
    Box box;
    box.x1 = b.x1();
    box.y1 = b.y1();
    box.x2 = b.x2();
    box.y2 = b.y2();
    box.conf = b.conf();
    box.cls = b.cls();
    if (b.has_track_id()) box.track_id = b.track_id();
    result.boxes.push_back(box);
  }
  // names is a map on the wire; class ids are dense from 0 in the engine.
  int32_t max_id = -1;
  for (const auto& [id, name] : in.names()) {
    if (id > max_id) max_id = id;
  }
  if (max_id >= 0) {
    result.names.resize(static_cast<size_t>(max_id) + 1);
    for (const auto& [id, name] : in.names()) {
      if (id >= 0) result.names[static_cast<size_t>(id)] = name;
    }
  }
  result.speed.preprocess_ms = in.speed().preprocess_ms();
  result.speed.inference_ms = in.speed().inference_ms();
  result.speed.postprocess_ms = in.speed().postprocess_ms();
  return result;
}

}  // namespace

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

v1::Mode ModeToProto(Mode mode) {
  switch (mode) {
    case Mode::kTrain:
      return v1::MODE_TRAIN;
    case Mode::kVal:
      return v1::MODE_VAL;
    case Mode::kPredict:
      return v1::MODE_PREDICT;
    case Mode::kExport:
      return v1::MODE_EXPORT;
  }
  return v1::MODE_UNSPECIFIED;
}

absl::StatusOr<Mode> ModeFromProto(v1::Mode mode) {
  switch (mode) {
    case v1::MODE_TRAIN:
      return Mode::kTrain;
    case v1::MODE_VAL:
      return Mode::kVal;
    case v1::MODE_PREDICT:
      return Mode::kPredict;
    case v1::MODE_EXPORT:
      return Mode::kExport;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("mode: expected MODE_TRAIN, MODE_VAL, MODE_PREDICT or ",
                       "MODE_EXPORT, got ", static_cast<int>(mode)));
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
  out.set_mode(ModeToProto(job.mode));
  out.set_state(StateToProto(job.state));
  for (const auto& [key, value] : job.args) (*out.mutable_args())[key] = value;
  for (const auto& [key, value] : job.labels) {
    (*out.mutable_labels())[key] = value;
  }
  if (job.create_time != absl::InfinitePast()) {
    TimeToProto(job.create_time, out.mutable_create_time());
  }
  if (job.start_time != absl::InfinitePast()) {
    TimeToProto(job.start_time, out.mutable_start_time());
  }
  if (job.end_time != absl::InfinitePast()) {
    TimeToProto(job.end_time, out.mutable_end_time());
  }
  out.set_error(job.error);
  out.set_save_dir(job.save_dir);
  for (const auto& [key, value] : job.metrics) {
    (*out.mutable_metrics())[key] = value;
  }
  for (const Result& result : job.results) {
    ResultToProto(result, out.add_results());
  }
  for (const Artifact& artifact : job.artifacts) {
    v1::Artifact* a = out.add_artifacts();
    a->set_kind(artifact.kind);
    a->set_path(artifact.path);
  }
  out.set_last_seq(job.last_seq);
  return out;
}

absl::StatusOr<JobRecord> FromProto(const v1::Job& in) {
  JobRecord job;
  job.id = in.id();
  absl::StatusOr<Mode> mode = ModeFromProto(in.mode());
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
  if (in.has_create_time()) job.create_time = TimeFromProto(in.create_time());
  if (in.has_start_time()) job.start_time = TimeFromProto(in.start_time());
  if (in.has_end_time()) job.end_time = TimeFromProto(in.end_time());
  job.error = in.error();
  job.save_dir = in.save_dir();
  job.metrics.insert(in.metrics().begin(), in.metrics().end());
  for (const v1::Result& result : in.results()) {
    job.results.push_back(ResultFromProto(result));
  }
  for (const v1::Artifact& artifact : in.artifacts()) {
    job.artifacts.push_back({artifact.kind(), artifact.path()});
  }
  job.last_seq = in.last_seq();
  return job;
}

}  // namespace yolohook::jobs
