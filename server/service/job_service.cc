#include "server/service/job_service.h"

#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
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

}  // namespace

grpc::ServerUnaryReactor* JobServiceImpl::SubmitJob(
    grpc::CallbackServerContext* context, const v1::SubmitJobRequest* request,
    v1::Job* response) {
  absl::StatusOr<Mode> mode = jobs::ModeFromProto(request->mode());
  if (!mode.ok()) return Answer(context, mode.status());
  absl::StatusOr<jobs::JobRecord> job =
      manager_->Submit(*mode, ToMap(request->args()), ToMap(request->labels()),
                       ToImages(request->images()));
  if (job.ok()) *response = jobs::ToProto(*job);
  return Answer(context, job.status());
}

grpc::ServerUnaryReactor* JobServiceImpl::GetJob(
    grpc::CallbackServerContext* context, const v1::GetJobRequest* request,
    v1::Job* response) {
  absl::StatusOr<jobs::JobRecord> job = manager_->Get(request->id());
  if (job.ok()) *response = jobs::ToProto(*job);
  return Answer(context, job.status());
}

grpc::ServerUnaryReactor* JobServiceImpl::ListJobs(
    grpc::CallbackServerContext* context, const v1::ListJobsRequest* request,
    v1::ListJobsResponse* response) {
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
  absl::StatusOr<jobs::JobRecord> job = manager_->Cancel(request->id());
  if (job.ok()) *response = jobs::ToProto(*job);
  return Answer(context, job.status());
}

grpc::ServerUnaryReactor* PredictServiceImpl::Predict(
    grpc::CallbackServerContext* context, const v1::PredictRequest* request,
    v1::PredictResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (request->images().empty()) {
    reactor->Finish(grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        "PredictRequest.images is empty: send at least one image"));
    return reactor;
  }
  // The job runs on a manager thread; the reactor finishes from there.
  absl::StatusOr<jobs::JobRecord> started = manager_->RunNow(
      Mode::kPredict, ToMap(request->args()), ToMap(request->labels()),
      ToImages(request->images()),
      [reactor, response](absl::StatusOr<jobs::JobRecord> done) {
        if (!done.ok()) {
          reactor->Finish(ToGrpcStatus(done.status()));
          return;
        }
        if (done->state != jobs::JobState::kSucceeded) {
          reactor->Finish(ToGrpcStatus(absl::AbortedError(absl::StrCat(
              "predict job ", done->id, " ", jobs::JobStateName(done->state),
              ": ", done->error))));
          return;
        }
        response->set_job_id(done->id);
        for (const Result& r : done->results)
          *response->add_results() = events::ToWire(r);
        reactor->Finish(grpc::Status::OK);
      });
  if (!started.ok()) reactor->Finish(ToGrpcStatus(started.status()));
  return reactor;
}

}  // namespace yolohook::service
