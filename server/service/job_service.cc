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
#include "server/common/limits.h"
#include "server/common/status_macros.h"
#include "server/events/event_bus.h"
#include "server/service/grpc_status.h"
#include "server/service/unary_call.h"
#include "server/wire/conversions.h"

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

// A job id a client names: non-empty and within kMaxIdBytes.
absl::Status CheckJobId(absl::string_view field, const std::string& id) {
  if (id.empty())
    return absl::InvalidArgumentError(absl::StrCat(field, ": empty"));
  return CheckLength(field, id, kMaxIdBytes);
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
// Frames and results travel as raw bytes, parsed here: a frame that does not
// parse ends the stream with INVALID_ARGUMENT naming it (gRPC's typed reader
// would report it as the client half-closing).
class PredictStreamReactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
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
    frame_.Clear();
    if (!ParseFromByteBuffer(in_, &frame_)) {
      RejectFrame(absl::InvalidArgumentError(absl::StrCat(
          "yolohook.v1.PredictService/PredictStream: message ", frames_read_,
          " is not a valid yolohook.v1.Frame (it does not parse)")));
      return;
    }
    ++frames_read_;
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
    const grpc::ByteBuffer* next = nullptr;
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
    // Frame.index
    int64_t index;
    engine::InputImage image;
    // for the frame's latency
    absl::Time received;
  };
  // What the job's thread and JobManager::Cancel share with the reactor;
  // shared because Cancel may wake the stream after the call has ended.
  struct State {
    absl::Mutex mu;
    // read, not yet predicted
    std::deque<Entry> frames ABSL_GUARDED_BY(mu);
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
    const grpc::ByteBuffer* start = nullptr;
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
      v1::FrameResult out;
      out.set_job_id(job_id_);
      out.set_index(index);
      *out.mutable_result() = wire::ToWire(result);
      SerializeToByteBuffer(out, &writes_.emplace_back());
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
    StartRead(&in_);
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
  // may be null
  ServerMetrics* const metrics_;
  const std::shared_ptr<State> state_;
  // the read in flight
  grpc::ByteBuffer in_;
  // in_, parsed
  v1::Frame frame_;
  // messages parsed so far (reactor's reads only)
  int64_t frames_read_ = 0;
  // "" until the first frame
  std::string job_id_ ABSL_GUARDED_BY(state_->mu);
  // in RunStream
  bool job_starting_ ABSL_GUARDED_BY(state_->mu) = false;
  // frames predicted, result not yet out
  std::deque<int64_t> indices_ ABSL_GUARDED_BY(state_->mu);
  // when each of indices_ arrived
  std::deque<absl::Time> received_ ABSL_GUARDED_BY(state_->mu);
  bool reading_paused_ ABSL_GUARDED_BY(state_->mu) = false;
  // serialized results; front: being written
  std::deque<grpc::ByteBuffer> writes_ ABSL_GUARDED_BY(state_->mu);
  bool writing_ ABSL_GUARDED_BY(state_->mu) = false;
  bool client_gone_ ABSL_GUARDED_BY(state_->mu) = false;
  // set when the job ended
  std::optional<grpc::Status> job_status_ ABSL_GUARDED_BY(state_->mu);
  // a frame broke a limit
  std::optional<grpc::Status> rejected_ ABSL_GUARDED_BY(state_->mu);
  bool issuing_read_ ABSL_GUARDED_BY(state_->mu) = false;
  bool finishing_ ABSL_GUARDED_BY(state_->mu) = false;
  bool finish_deferred_ ABSL_GUARDED_BY(state_->mu) = false;
  grpc::Status final_status_ ABSL_GUARDED_BY(state_->mu);
};

}  // namespace

grpc::ServerUnaryReactor* JobServiceImpl::SubmitJob(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* in,
    grpc::ByteBuffer* out) {
  constexpr absl::string_view kMethod = "yolohook.v1.JobService/SubmitJob";
  auto* call =
      UnaryCall<v1::SubmitJobRequest, v1::Job>::Start(kMethod, in, out);
  if (!call->parsed()) return call;
  call->Finish([&]() -> absl::Status {
    YH_RETURN_IF_ERROR(
        authorizer_->Allow(*context, auth::Role::kOperator, kMethod));
    const v1::SubmitJobRequest& request = call->request();
    YH_ASSIGN_OR_RETURN(const Mode mode, wire::ModeFromWire(request.mode()));
    YH_ASSIGN_OR_RETURN(
        const jobs::JobRecord job,
        manager_->Submit(mode, ToMap(request.args()), ToMap(request.labels()),
                         ToImages(request.images())));
    *call->response() = jobs::ToProto(job);
    if (metrics_ != nullptr) metrics_->JobSubmitted(mode);
    return absl::OkStatus();
  }());
  return call;
}

grpc::ServerUnaryReactor* JobServiceImpl::GetJob(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* in,
    grpc::ByteBuffer* out) {
  constexpr absl::string_view kMethod = "yolohook.v1.JobService/GetJob";
  auto* call = UnaryCall<v1::GetJobRequest, v1::Job>::Start(kMethod, in, out);
  if (!call->parsed()) return call;
  call->Finish([&]() -> absl::Status {
    YH_RETURN_IF_ERROR(
        authorizer_->Allow(*context, auth::Role::kViewer, kMethod));
    YH_RETURN_IF_ERROR(CheckJobId("GetJobRequest.id", call->request().id()));
    YH_ASSIGN_OR_RETURN(const jobs::JobRecord job,
                        manager_->Get(call->request().id()));
    *call->response() = jobs::ToProto(job);
    return absl::OkStatus();
  }());
  return call;
}

grpc::ServerUnaryReactor* JobServiceImpl::ListJobs(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* in,
    grpc::ByteBuffer* out) {
  constexpr absl::string_view kMethod = "yolohook.v1.JobService/ListJobs";
  auto* call = UnaryCall<v1::ListJobsRequest, v1::ListJobsResponse>::Start(
      kMethod, in, out);
  if (!call->parsed()) return call;
  call->Finish([&]() -> absl::Status {
    YH_RETURN_IF_ERROR(
        authorizer_->Allow(*context, auth::Role::kViewer, kMethod));
    const v1::ListJobsRequest& request = call->request();
    YH_RETURN_IF_ERROR(CheckCount("ListJobsRequest.states",
                                  static_cast<size_t>(request.states_size()),
                                  16));
    jobs::ListQuery query;
    for (int state : request.states()) {
      absl::StatusOr<jobs::JobState> s =
          jobs::StateFromProto(static_cast<v1::JobState>(state));
      if (!s.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("ListJobsRequest.states: ", s.status().message()));
      }
      query.states.push_back(*s);
    }
    query.labels = ToMap(request.match_labels());
    YH_RETURN_IF_ERROR(
        CheckLabels("ListJobsRequest.match_labels", query.labels));
    if (request.page_size() < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ListJobsRequest.page_size: must be >= 0 (0: the server default of ",
          jobs::JobStore::kDefaultListLimit, "), got ", request.page_size()));
    }
    YH_RETURN_IF_ERROR(CheckLength("ListJobsRequest.page_token",
                                   request.page_token(), kMaxTextBytes));
    query.limit = request.page_size();
    query.page_token = request.page_token();
    YH_ASSIGN_OR_RETURN(const jobs::ListPage page, manager_->List(query));
    for (const jobs::JobRecord& job : page.jobs)
      *call->response()->add_jobs() = jobs::ToProto(job);
    call->response()->set_next_page_token(page.next_page_token);
    return absl::OkStatus();
  }());
  return call;
}

grpc::ServerUnaryReactor* JobServiceImpl::CancelJob(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* in,
    grpc::ByteBuffer* out) {
  constexpr absl::string_view kMethod = "yolohook.v1.JobService/CancelJob";
  auto* call =
      UnaryCall<v1::CancelJobRequest, v1::Job>::Start(kMethod, in, out);
  if (!call->parsed()) return call;
  call->Finish([&]() -> absl::Status {
    YH_ASSIGN_OR_RETURN(
        const auth::Principal who,
        authorizer_->Check(*context, auth::Role::kOperator, kMethod));
    YH_RETURN_IF_ERROR(CheckJobId("CancelJobRequest.id", call->request().id()));
    YH_ASSIGN_OR_RETURN(
        const jobs::JobRecord job,
        manager_->Cancel(call->request().id(),
                         absl::StrCat("CancelJob by ", who.name)));
    *call->response() = jobs::ToProto(job);
    return absl::OkStatus();
  }());
  return call;
}

grpc::ServerUnaryReactor* PredictServiceImpl::Predict(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* in,
    grpc::ByteBuffer* out) {
  constexpr absl::string_view kMethod = "yolohook.v1.PredictService/Predict";
  using Call = UnaryCall<v1::PredictRequest, v1::PredictResponse>;
  Call* call = Call::Start(kMethod, in, out);
  if (!call->parsed()) return call;
  absl::Status allowed =
      authorizer_->Allow(*context, auth::Role::kOperator, kMethod);
  if (!allowed.ok()) {
    call->Finish(allowed);
    return call;
  }
  const v1::PredictRequest* request = &call->request();
  v1::PredictResponse* response = call->response();
  Call* reactor = call;
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
      *response->add_results() = wire::ToWire(r);
    reactor->Finish(grpc::Status::OK);
  };
  absl::StatusOr<jobs::JobRecord> started = manager_->RunNow(
      Mode::kPredict, ToMap(request->args()), ToMap(request->labels()),
      ToImages(request->images()), std::move(on_done));
  if (!started.ok()) reactor->Finish(ToGrpcStatus(started.status()));
  return reactor;
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>*
PredictServiceImpl::PredictStream(grpc::CallbackServerContext* context) {
  absl::StatusOr<auth::Principal> who =
      authorizer_->Check(*context, auth::Role::kOperator,
                         "yolohook.v1.PredictService/PredictStream");
  if (!who.ok()) {
    return RejectStream<grpc::ByteBuffer, grpc::ByteBuffer>(
        ToGrpcStatus(who.status()));
  }
  return new PredictStreamReactor(context, manager_, metrics_);
}

}  // namespace yolohook::service
