#include "server/service/job_service.h"

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/events/conversions.h"
#include "server/events/event_bus.h"
#include "server/service/grpc_status.h"

namespace yolohook::service {
namespace {

using Map = std::map<std::string, std::string>;

Map ToMap(const google::protobuf::Map<std::string, std::string>& in) {
  return Map(in.begin(), in.end());
}

std::vector<engine::InputImage> ToImages(
    const google::protobuf::RepeatedPtrField<v1::Image>& images) {
  std::vector<engine::InputImage> out;
  out.reserve(images.size());
  for (const v1::Image& image : images)
    out.push_back({image.name(), image.data()});
  return out;
}

grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* context,
                                 const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// A finished predict job as the caller's status.
grpc::Status PredictStatus(const jobs::JobRecord& job) {
  switch (job.state) {
    case jobs::JobState::kSucceeded:
      return grpc::Status::OK;
    case jobs::JobState::kCancelled:
      return grpc::Status(grpc::StatusCode::CANCELLED,
                          absl::StrCat("predict job ", job.id, " cancelled"));
    case jobs::JobState::kInterrupted:
      return grpc::Status(
          grpc::StatusCode::UNAVAILABLE,
          absl::StrCat("predict job ", job.id, " interrupted: ", job.error));
    default:
      return grpc::Status(
          grpc::StatusCode::ABORTED,
          absl::StrCat("predict job ", job.id, " ",
                       jobs::JobStateName(job.state), ": ", job.error));
  }
}

// Frames read ahead of the job before reading pauses, and results waiting for
// the client before the job waits: both bound the memory a stream holds.
constexpr size_t kFramesAhead = 4;
constexpr size_t kResultsBehind = 16;

// One PredictStream call and its job. Owns itself: deleted in OnDone, which
// comes after Finish, which comes after the job ended (or when it never
// started), so the job's thread may use the reactor while the job runs.
// Finish is never called while a StartRead is being issued (see FinishOnce).
class PredictStreamReactor final
    : public grpc::ServerBidiReactor<v1::Frame, v1::FrameResult> {
 public:
  PredictStreamReactor(grpc::CallbackServerContext* context,
                       jobs::JobManager* manager, ServerMetrics* metrics)
      : context_(context),
        manager_(manager),
        metrics_(metrics),
        state_(std::make_shared<State>()) {
    ReadNext();
  }

  void OnReadDone(bool ok) override {
    if (!ok && context_->IsCancelled()) {  // the client went away
      OnCancel();
      return;
    }
    if (!ok) {  // the client half-closed
      bool started;
      {
        absl::MutexLock lock(&state_->mu);
        state_->input_closed = true;
        started = !job_id_.empty();
      }
      if (!started) FinishOnce(grpc::Status::OK);  // no frame, no job
      return;
    }
    absl::Status frame_ok = manager_->CheckFrame(
        frame_.index(), frame_.image().name(), frame_.image().data());
    if (!frame_ok.ok()) {
      RejectFrame(frame_ok);
      return;
    }
    if (!StartJobOnce()) return;
    bool more;
    {
      absl::MutexLock lock(&state_->mu);
      engine::InputImage image{
          frame_.image().name(),
          std::move(*frame_.mutable_image()->mutable_data())};
      state_->frames.push_back({frame_.index(), std::move(image), absl::Now()});
      more = state_->frames.size() < kFramesAhead;
      reading_paused_ = !more;
    }
    if (more) ReadNext();
  }

  void OnWriteDone(bool ok) override {
    std::optional<grpc::Status> finish;
    const v1::FrameResult* next = nullptr;
    {
      absl::MutexLock lock(&state_->mu);
      writes_.pop_front();
      if (!ok) {  // the client is gone: nobody takes the results
        writes_.clear();
        client_gone_ = true;
      }
      if (!writes_.empty()) {
        next = &writes_.front();
      } else {
        writing_ = false;
        if (job_status_) finish = job_status_;
      }
    }
    if (!ok) CancelJob("the PredictStream client stopped reading");
    if (next != nullptr) StartWrite(next);
    if (finish) FinishOnce(*finish);
  }

  void OnCancel() override {
    // The cancel flag first: a stream that ends before the flag is set would
    // end the job as a success.
    CancelJob("the PredictStream call was cancelled");
    bool started;
    {
      absl::MutexLock lock(&state_->mu);
      client_gone_ = true;
      state_->input_closed = true;
      started = !job_id_.empty() || job_starting_;
    }
    if (!started) FinishOnce(grpc::Status::CANCELLED);
  }

  void OnDone() override { delete this; }

 private:
  struct Entry {
    int64_t index;  // Frame.index
    engine::InputImage image;
    absl::Time received;  // for the frame's latency
  };
  // What the job's thread and JobManager::Cancel share with the reactor;
  // shared because Cancel may wake the stream after the call has ended.
  struct State {
    absl::Mutex mu;
    std::deque<Entry> frames ABSL_GUARDED_BY(mu);   // read, not yet predicted
    bool input_closed ABSL_GUARDED_BY(mu) = false;  // no frame will follow
  };

  // Starts the job on the first frame (its args and labels); false when the
  // job could not start (the call is finished with the reason).
  bool StartJobOnce() {
    {
      absl::MutexLock lock(&state_->mu);
      if (!job_id_.empty()) return true;
      if (client_gone_) return false;  // OnCancel finished the call
      job_starting_ = true;
    }
    engine::FrameStream stream;
    stream.next = [this](engine::InputImage* frame) {
      return NextFrame(frame);
    };
    stream.on_result = [this](const Result& result) { OnResult(result); };
    stream.interrupt = [state = state_] {
      absl::MutexLock lock(&state->mu);
      state->input_closed = true;
    };
    absl::StatusOr<jobs::JobRecord> job = manager_->RunStream(
        ToMap(frame_.args()), ToMap(frame_.labels()), std::move(stream),
        [this](absl::StatusOr<jobs::JobRecord> done) { OnJobDone(done); });
    if (!job.ok()) {
      {
        absl::MutexLock lock(&state_->mu);
        job_starting_ = false;
        state_->input_closed = true;
      }
      FinishOnce(ToGrpcStatus(job.status()));
      return false;
    }
    if (metrics_ != nullptr) metrics_->JobSubmitted(Mode::kPredict);
    bool gone;
    {
      absl::MutexLock lock(&state_->mu);
      job_id_ = job->id;
      job_starting_ = false;
      gone = client_gone_;
    }
    if (gone) {  // cancelled while the job was starting
      CancelJob("the PredictStream call was cancelled");
    }
    return true;
  }

  // Ends the stream with `status` for a frame that breaks a limit: no further
  // frame is read, and a running job is cancelled; the call finishes with
  // `status` once it has ended.
  void RejectFrame(const absl::Status& status) {
    bool started;
    {
      absl::MutexLock lock(&state_->mu);
      state_->input_closed = true;
      rejected_ = ToGrpcStatus(status);
      started = !job_id_.empty();
    }
    if (!started) {
      FinishOnce(ToGrpcStatus(status));
      return;
    }
    CancelJob(std::string(status.message()));
  }

  // The job's thread: the next frame, waiting for the client; false at the
  // end of the stream.
  bool NextFrame(engine::InputImage* frame) {
    bool resume = false;
    {
      absl::MutexLock lock(&state_->mu);
      state_->mu.Await(absl::Condition(
          +[](State* s) ABSL_NO_THREAD_SAFETY_ANALYSIS {
            return !s->frames.empty() || s->input_closed;
          },
          state_.get()));
      if (state_->frames.empty()) return false;
      Entry& entry = state_->frames.front();
      *frame = std::move(entry.image);
      indices_.push_back(entry.index);
      received_.push_back(entry.received);
      state_->frames.pop_front();
      if (reading_paused_ && !state_->input_closed) {
        reading_paused_ = false;
        resume = true;
      }
    }
    if (resume) ReadNext();
    return true;
  }

  // The job's thread: queues the frame's result for the client, waiting while
  // kResultsBehind results are already waiting.
  void OnResult(const Result& result) {
    const v1::FrameResult* start = nullptr;
    {
      absl::MutexLock lock(&state_->mu);
      state_->mu.Await(absl::Condition(
          +[](PredictStreamReactor* r) ABSL_NO_THREAD_SAFETY_ANALYSIS {
            return r->writes_.size() < kResultsBehind || r->client_gone_;
          },
          this));
      const int64_t index = indices_.empty() ? -1 : indices_.front();
      if (!indices_.empty()) indices_.pop_front();
      if (!received_.empty()) {
        if (metrics_ != nullptr) {
          metrics_->FrameDone(absl::Now() - received_.front());
        }
        received_.pop_front();
      }
      if (client_gone_) return;
      v1::FrameResult& out = writes_.emplace_back();
      out.set_job_id(job_id_);
      out.set_index(index);
      *out.mutable_result() = events::ToWire(result);
      if (!writing_) {
        writing_ = true;
        start = &writes_.front();
      }
    }
    if (start != nullptr) StartWrite(start);
  }

  // The job's thread, after the job ended.
  void OnJobDone(const absl::StatusOr<jobs::JobRecord>& done) {
    grpc::Status status =
        done.ok() ? PredictStatus(*done) : ToGrpcStatus(done.status());
    {
      absl::MutexLock lock(&state_->mu);
      if (rejected_) status = *rejected_;
      state_->input_closed = true;
      job_status_ = status;
      if (writing_) return;  // OnWriteDone finishes after the last result
    }
    FinishOnce(status);
  }

  void CancelJob(const std::string& reason) {
    std::string id;
    {
      absl::MutexLock lock(&state_->mu);
      id = job_id_;
    }
    // The job may have ended meanwhile: FAILED_PRECONDITION then, nothing to
    // do.
    if (!id.empty()) manager_->Cancel(id, reason).IgnoreError();
  }

  // Issues the next read unless the call is finishing. Finish must not run
  // while StartRead is being issued, so FinishOnce leaves it to this.
  void ReadNext() {
    {
      absl::MutexLock lock(&state_->mu);
      if (finishing_) return;
      issuing_read_ = true;
    }
    StartRead(&frame_);
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&state_->mu);
      issuing_read_ = false;
      if (finish_deferred_) finish = final_status_;
    }
    if (finish) Finish(*finish);
  }

  void FinishOnce(grpc::Status status) {
    {
      absl::MutexLock lock(&state_->mu);
      if (finishing_) return;
      finishing_ = true;
      final_status_ = status;
      if (issuing_read_) {
        finish_deferred_ = true;
        return;
      }
    }
    Finish(status);
  }

  grpc::CallbackServerContext* const context_;
  jobs::JobManager* const manager_;
  ServerMetrics* const metrics_;  // may be null
  const std::shared_ptr<State> state_;
  v1::Frame frame_;                                 // the read in flight
  std::string job_id_ ABSL_GUARDED_BY(state_->mu);  // "" until the first frame
  bool job_starting_ ABSL_GUARDED_BY(state_->mu) = false;  // in RunStream
  std::deque<int64_t> indices_
      ABSL_GUARDED_BY(state_->mu);  // frames predicted, result not yet out
  std::deque<absl::Time> received_
      ABSL_GUARDED_BY(state_->mu);  // when each of indices_ arrived
  bool reading_paused_ ABSL_GUARDED_BY(state_->mu) = false;
  std::deque<v1::FrameResult> writes_
      ABSL_GUARDED_BY(state_->mu);  // front: being written
  bool writing_ ABSL_GUARDED_BY(state_->mu) = false;
  bool client_gone_ ABSL_GUARDED_BY(state_->mu) = false;
  std::optional<grpc::Status> job_status_
      ABSL_GUARDED_BY(state_->mu);  // set when the job ended
  std::optional<grpc::Status> rejected_
      ABSL_GUARDED_BY(state_->mu);  // a frame broke a limit
  bool issuing_read_ ABSL_GUARDED_BY(state_->mu) = false;
  bool finishing_ ABSL_GUARDED_BY(state_->mu) = false;
  bool finish_deferred_ ABSL_GUARDED_BY(state_->mu) = false;
  grpc::Status final_status_ ABSL_GUARDED_BY(state_->mu);
};

}  // namespace

grpc::ServerUnaryReactor* JobServiceImpl::SubmitJob(
    grpc::CallbackServerContext* context, const v1::SubmitJobRequest* request,
    v1::Job* response) {
  absl::Status allowed = authorizer_->Allow(*context, auth::Role::kOperator,
                                            "yolohook.v1.JobService/SubmitJob");
  if (!allowed.ok()) return Answer(context, allowed);
  absl::StatusOr<Mode> mode = events::ModeFromWire(request->mode());
  if (!mode.ok()) return Answer(context, mode.status());
  absl::StatusOr<jobs::JobRecord> job =
      manager_->Submit(*mode, ToMap(request->args()), ToMap(request->labels()),
                       ToImages(request->images()));
  if (job.ok()) {
    *response = jobs::ToProto(*job);
    if (metrics_ != nullptr) metrics_->JobSubmitted(*mode);
  }
  return Answer(context, job.status());
}

grpc::ServerUnaryReactor* JobServiceImpl::GetJob(
    grpc::CallbackServerContext* context, const v1::GetJobRequest* request,
    v1::Job* response) {
  absl::Status allowed = authorizer_->Allow(*context, auth::Role::kViewer,
                                            "yolohook.v1.JobService/GetJob");
  if (!allowed.ok()) return Answer(context, allowed);
  absl::StatusOr<jobs::JobRecord> job = manager_->Get(request->id());
  if (job.ok()) *response = jobs::ToProto(*job);
  return Answer(context, job.status());
}

grpc::ServerUnaryReactor* JobServiceImpl::ListJobs(
    grpc::CallbackServerContext* context, const v1::ListJobsRequest* request,
    v1::ListJobsResponse* response) {
  absl::Status allowed = authorizer_->Allow(*context, auth::Role::kViewer,
                                            "yolohook.v1.JobService/ListJobs");
  if (!allowed.ok()) return Answer(context, allowed);
  jobs::ListQuery query;
  for (int state : request->states()) {
    absl::StatusOr<jobs::JobState> s =
        jobs::StateFromProto(static_cast<v1::JobState>(state));
    if (!s.ok()) return Answer(context, s.status());
    query.states.push_back(*s);
  }
  query.labels = ToMap(request->match_labels());
  query.limit = request->page_size();
  query.page_token = request->page_token();
  absl::StatusOr<jobs::ListPage> page = manager_->List(query);
  if (page.ok()) {
    for (const jobs::JobRecord& job : page->jobs)
      *response->add_jobs() = jobs::ToProto(job);
    response->set_next_page_token(page->next_page_token);
  }
  return Answer(context, page.status());
}

grpc::ServerUnaryReactor* JobServiceImpl::CancelJob(
    grpc::CallbackServerContext* context, const v1::CancelJobRequest* request,
    v1::Job* response) {
  absl::StatusOr<auth::Principal> who = authorizer_->Check(
      *context, auth::Role::kOperator, "yolohook.v1.JobService/CancelJob");
  if (!who.ok()) return Answer(context, who.status());
  absl::StatusOr<jobs::JobRecord> job =
      manager_->Cancel(request->id(), absl::StrCat("CancelJob by ", who->name));
  if (job.ok()) *response = jobs::ToProto(*job);
  return Answer(context, job.status());
}

grpc::ServerUnaryReactor* PredictServiceImpl::Predict(
    grpc::CallbackServerContext* context, const v1::PredictRequest* request,
    v1::PredictResponse* response) {
  absl::Status allowed = authorizer_->Allow(
      *context, auth::Role::kOperator, "yolohook.v1.PredictService/Predict");
  if (!allowed.ok()) return Answer(context, allowed);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (request->images().empty()) {
    reactor->Finish(grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        "PredictRequest.images is empty: send at least one image"));
    return reactor;
  }
  // The job runs on a manager thread; the reactor finishes from there. The
  // job counts as submitted when it ends (done is called exactly once for a
  // started job), so the count has moved by the time the caller has its
  // answer.
  const absl::Time start = absl::Now();
  auto on_done = [reactor, response, start,
                  metrics = metrics_](absl::StatusOr<jobs::JobRecord> done) {
    if (metrics != nullptr) {
      metrics->JobSubmitted(Mode::kPredict);
      metrics->PredictDone(absl::Now() - start);
    }
    if (!done.ok()) {
      reactor->Finish(ToGrpcStatus(done.status()));
      return;
    }
    if (done->state != jobs::JobState::kSucceeded) {
      reactor->Finish(PredictStatus(*done));
      return;
    }
    response->set_job_id(done->id);
    for (const Result& r : done->results)
      *response->add_results() = events::ToWire(r);
    reactor->Finish(grpc::Status::OK);
  };
  absl::StatusOr<jobs::JobRecord> started = manager_->RunNow(
      Mode::kPredict, ToMap(request->args()), ToMap(request->labels()),
      ToImages(request->images()), std::move(on_done));
  if (!started.ok()) reactor->Finish(ToGrpcStatus(started.status()));
  return reactor;
}

grpc::ServerBidiReactor<v1::Frame, v1::FrameResult>*
PredictServiceImpl::PredictStream(grpc::CallbackServerContext* context) {
  absl::StatusOr<auth::Principal> who =
      authorizer_->Check(*context, auth::Role::kOperator,
                         "yolohook.v1.PredictService/PredictStream");
  if (!who.ok()) {
    return RejectStream<v1::Frame, v1::FrameResult>(ToGrpcStatus(who.status()));
  }
  return new PredictStreamReactor(context, manager_, metrics_);
}

}  // namespace yolohook::service
