// JobService calls for service tests against an in-process server: a failed
// call is a test failure, so tests read as the steps they take.
#ifndef YOLOHOOK_TESTS_TESTING_JOB_CALLS_H_
#define YOLOHOOK_TESTS_TESTING_JOB_CALLS_H_

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "absl/time/time.h"
#include "server/service/server.h"
#include "yolohook/v1/jobs.grpc.pb.h"

namespace yolohook::testing {

// Submits a job; an empty Job when the call fails.
inline v1::Job SubmitJob(v1::JobService::Stub& jobs, v1::Mode mode,
                         const std::map<std::string, std::string>& args,
                         const std::map<std::string, std::string>& labels) {
  v1::SubmitJobRequest request;
  request.set_mode(mode);
  request.mutable_args()->insert(args.begin(), args.end());
  request.mutable_labels()->insert(labels.begin(), labels.end());
  v1::Job job;
  grpc::ClientContext context;
  grpc::Status status = jobs.SubmitJob(&context, request, &job);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return job;
}

// Waits until the job has finished, then returns it as GetJob gives it.
inline v1::Job WaitJobDone(service::Server& server, v1::JobService::Stub& jobs,
                           const std::string& id, absl::Duration timeout) {
  auto done = server.manager().Wait(id, timeout);
  EXPECT_TRUE(done.ok()) << done.status();
  v1::Job job;
  grpc::ClientContext context;
  v1::GetJobRequest request;
  request.set_id(id);
  EXPECT_TRUE(jobs.GetJob(&context, request, &job).ok());
  return job;
}

}  // namespace yolohook::testing

#endif  // YOLOHOOK_TESTS_TESTING_JOB_CALLS_H_
