// JobService and PredictService: thin adapters from gRPC to the job manager.
#ifndef YOLOHOOK_SERVER_SERVICE_JOB_SERVICE_H_
#define YOLOHOOK_SERVER_SERVICE_JOB_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include "server/jobs/job_manager.h"
#include "server/service/auth.h"
#include "server/service/server_metrics.h"
#include "yolohook/v1/jobs.grpc.pb.h"
#include "yolohook/v1/predict.grpc.pb.h"

namespace yolohook::service {

// JobService with every method served from raw bytes (see unary_call.h).
using RawJobService = v1::JobService::WithRawCallbackMethod_SubmitJob<
    v1::JobService::WithRawCallbackMethod_GetJob<
        v1::JobService::WithRawCallbackMethod_ListJobs<
            v1::JobService::WithRawCallbackMethod_CancelJob<
                v1::JobService::Service>>>>;
// PredictService likewise.
using RawPredictService = v1::PredictService::WithRawCallbackMethod_Predict<
    v1::PredictService::WithRawCallbackMethod_PredictStream<
        v1::PredictService::Service>>;

// Submit, get, list, cancel. Each handler is quick (a store read or write) and
// answers on the reactor thread. GetJob and ListJobs need role viewer, the
// others operator. A request that does not parse, or whose ids, labels or
// lists pass the limits of server/common/limits.h, is INVALID_ARGUMENT naming
// the method or field. Thread-safe; the manager and authorizer must outlive
// it.
class JobServiceImpl final : public RawJobService {
 public:
  // `metrics` may be null (nothing recorded).
  JobServiceImpl(jobs::JobManager* manager, const Authorizer* authorizer,
                 ServerMetrics* metrics = nullptr)
      : manager_(manager), authorizer_(authorizer), metrics_(metrics) {}

  grpc::ServerUnaryReactor* SubmitJob(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* in,
                                      grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* context,
                                   const grpc::ByteBuffer* in,
                                   grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* in,
                                     grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* in,
                                      grpc::ByteBuffer* out) override;

 private:
  jobs::JobManager* manager_;
  const Authorizer* authorizer_;
  ServerMetrics* metrics_;
};

// Synchronous prediction: runs a predict job outside the queue on a job
// thread and answers when it finishes, so what interceptors replaced is what
// the caller receives. PredictStream runs one predict job per stream, fed
// frame by frame: frames are read ahead up to a small bound (then reading
// pauses until the job catches up) and each result is written as soon as the
// frame's callbacks have run. The stream ends with the job: OK after the
// client half-closes and the last result is written; CANCELLED when the
// client cancels or the job is cancelled; ABORTED with the job's error.
// Both need role operator. Thread-safe; the manager, authorizer (and
// metrics) must outlive it.
class PredictServiceImpl final : public RawPredictService {
 public:
  // `metrics` may be null (nothing recorded).
  PredictServiceImpl(jobs::JobManager* manager, const Authorizer* authorizer,
                     ServerMetrics* metrics = nullptr)
      : manager_(manager), authorizer_(authorizer), metrics_(metrics) {}

  grpc::ServerUnaryReactor* Predict(grpc::CallbackServerContext* context,
                                    const grpc::ByteBuffer* in,
                                    grpc::ByteBuffer* out) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* PredictStream(
      grpc::CallbackServerContext* context) override;

 private:
  jobs::JobManager* manager_;
  const Authorizer* authorizer_;
  ServerMetrics* metrics_;
};

}  // namespace yolohook::service

#endif  // YOLOHOOK_SERVER_SERVICE_JOB_SERVICE_H_
