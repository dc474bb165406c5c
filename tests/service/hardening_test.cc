// What a server that runs for months must not do, checked through the wire:
// answer a request that does not parse as a missing method, echo or log what
// a client sent without bounds, share its port or data directory with another
// server, keep revoked tokens working, or tell an observer that an
// interrupted job is done.
#include <gmock/gmock.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "server/service/server.h"
#include "tests/testing/fake_runner.h"
#include "tests/testing/hook_stream.h"
#include "tests/testing/job_calls.h"
#include "tests/testing/server_test.h"
#include "tests/testing/temp_dir.h"
#include "yolohook/v1/jobs.grpc.pb.h"
#include "yolohook/v1/predict.grpc.pb.h"

namespace yolohook::service {
namespace {

using ::testing::HasSubstr;
using testing::HookStream;
using ::testing::Not;

// Bytes that are not any message: field 1, length-delimited, longer than
// what follows.
const char kGarbage[] = "\x0a\xff\xff\xff\x0f\x01";

class HardeningTest : public testing::ServerTest {
 protected:
  void SetUp() override { Start(); }

  void Start(const std::string& token_file = "") {
    Server::Options options;
    options.token_file = token_file;
    options.token_file_check = absl::Milliseconds(20);
    StartServer(options);
  }

  grpc::Status ListJobs(const std::string& token, int page_size = 0) {
    grpc::ClientContext context;
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    v1::ListJobsRequest request;
    request.set_page_size(page_size);
    v1::ListJobsResponse response;
    return jobs_->ListJobs(&context, request, &response);
  }

  v1::Job Submit(const std::map<std::string, std::string>& args,
                 const std::string& token = "") {
    grpc::ClientContext context;
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    v1::SubmitJobRequest request;
    request.set_mode(v1::MODE_TRAIN);
    request.mutable_args()->insert(args.begin(), args.end());
    v1::Job job;
    grpc::Status status = jobs_->SubmitJob(&context, request, &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return job;
  }

  v1::Job Get(const std::string& id) {
    grpc::ClientContext context;
    v1::GetJobRequest request;
    request.set_id(id);
    v1::Job job;
    EXPECT_TRUE(jobs_->GetJob(&context, request, &job).ok());
    return job;
  }

  v1::Job WaitDone(const std::string& id) {
    return testing::WaitJobDone(*server_, *jobs_, id, absl::Seconds(30));
  }
};

// Every method of every service, from the descriptors: methods added later
// are covered too.
std::vector<const google::protobuf::MethodDescriptor*> MethodsOf(
    const google::protobuf::ServiceDescriptor* service) {
  std::vector<const google::protobuf::MethodDescriptor*> methods;
  for (int i = 0; i < service->method_count(); ++i)
    methods.push_back(service->method(i));
  return methods;
}

TEST_F(HardeningTest,
       ARequestThatDoesNotParseIsInvalidArgumentNamingTheMethod) {
  grpc::GenericStub generic(channel_);
  const auto* pool = google::protobuf::DescriptorPool::generated_pool();
  for (const auto* service :
       {pool->FindServiceByName("yolohook.v1.JobService"),
        pool->FindServiceByName("yolohook.v1.PredictService")}) {
    ASSERT_NE(service, nullptr);
    for (const auto* method : MethodsOf(service)) {
      SCOPED_TRACE(method->full_name());
      const std::string path =
          absl::StrCat("/", service->full_name(), "/", method->name());
      grpc::Slice slice(kGarbage, sizeof(kGarbage) - 1);
      grpc::ByteBuffer request(&slice, 1);
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::seconds(20));
      grpc::Status status;
      if (!method->client_streaming() && !method->server_streaming()) {
        absl::Notification done;
        grpc::ByteBuffer response;
        generic.UnaryCall(&context, path, grpc::StubOptions(), &request,
                          &response, [&](grpc::Status s) {
                            status = std::move(s);
                            done.Notify();
                          });
        done.WaitForNotification();
      } else {
        grpc::CompletionQueue cq;
        std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
            generic.PrepareCall(&context, path, &cq);
        void* tag;
        bool ok;
        call->StartCall(reinterpret_cast<void*>(1));
        cq.Next(&tag, &ok);
        call->Write(request, reinterpret_cast<void*>(2));
        cq.Next(&tag, &ok);
        grpc::ByteBuffer response;
        call->Read(&response, reinterpret_cast<void*>(3));
        cq.Next(&tag, &ok);
        call->Finish(&status, reinterpret_cast<void*>(4));
        cq.Next(&tag, &ok);
        cq.Shutdown();
        while (cq.Next(&tag, &ok)) {
        }
      }
      EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
          << status.error_message();
      EXPECT_THAT(status.error_message(), HasSubstr(method->name()));
      EXPECT_THAT(status.error_message(), HasSubstr("does not parse"));
    }
  }
}

TEST_F(HardeningTest, NegativePageSizeIsNamed) {
  grpc::Status status = ListJobs("", -5);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("ListJobsRequest.page_size"));
  EXPECT_THAT(status.error_message(), HasSubstr("-5"));
}

TEST_F(HardeningTest, OversizedStringsAreRefusedWithTheirLimitAndNotEchoed) {
  const std::string huge(4 << 20, 'x');
  {
    grpc::ClientContext context;
    v1::GetJobRequest request;
    request.set_id(huge);
    v1::Job job;
    grpc::Status status = jobs_->GetJob(&context, request, &job);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("GetJobRequest.id"));
    EXPECT_THAT(status.error_message(), HasSubstr("limit of 128"));
    EXPECT_LT(status.error_message().size(), 300u);
  }
  {
    grpc::ClientContext context;
    v1::SubmitJobRequest request;
    request.set_mode(v1::MODE_TRAIN);
    (*request.mutable_labels())["team"] = huge;
    v1::Job job;
    grpc::Status status = jobs_->SubmitJob(&context, request, &job);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("labels[\"team\"]"));
    EXPECT_THAT(status.error_message(), HasSubstr("limit of 256"));
    EXPECT_LT(status.error_message().size(), 300u);
  }
  // On the Connect stream: a huge subscription id gets a bounded error that
  // does not carry it back, and the stream stays usable.
  HookStream stream(channel_);
  v1::Subscribe subscribe;
  subscribe.set_subscription_id(huge);
  v1::ClientMessage message;
  *message.mutable_subscribe() = subscribe;
  ASSERT_TRUE(stream.Send(message));
  std::optional<v1::ServerMessage> error = stream.Read();
  ASSERT_TRUE(error.has_value());
  ASSERT_TRUE(error->has_error()) << error->ShortDebugString().substr(0, 200);
  EXPECT_TRUE(error->error().subscription_id().empty());
  EXPECT_THAT(error->error().message(), HasSubstr("limit of 128"));
  EXPECT_LT(error->ByteSizeLong(), 1000u);
  // A reply whose job id would forge a log line is refused and logged
  // escaped, in one line.
  v1::ClientMessage reply;
  reply.mutable_reply()->set_subscription_id("s");
  reply.mutable_reply()->set_job_id("j\n[job-000000000000] train SUCCEEDED");
  ASSERT_TRUE(stream.Send(reply));
  std::optional<v1::ServerMessage> result = stream.Read();
  ASSERT_TRUE(result.has_value());
  EXPECT_FALSE(result->reply_result().applied());
  v1::Subscribe small;
  small.set_subscription_id("ok");
  std::optional<v1::ServerMessage> ack = stream.Subscribe(small);
  ASSERT_TRUE(ack.has_value());
  EXPECT_TRUE(ack->has_subscribed());
  bool audited = false;
  for (const std::string& line : Log()) {
    EXPECT_EQ(line.find('\n'), std::string::npos) << line;
    EXPECT_LT(line.size(), 2000u);
    if (absl::StrContains(line, "audit:") &&
        absl::StrContains(line, "[j\\n[job-000000000000]"))
      audited = true;
  }
  EXPECT_TRUE(audited);
}

TEST_F(HardeningTest, OneServerPerPort) {
  Server::Options options;
  options.listen = server_->address();
  options.data_dir = dir_.Sub("other");
  options.runner = &runner_;
  auto second = Server::Start(options);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr(server_->address()));
  EXPECT_THAT(second.status().message(), HasSubstr("one server per port"));
  // The first one still answers.
  EXPECT_TRUE(ListJobs("").ok());
}

TEST_F(HardeningTest, OneServerPerDataDirectory) {
  Server::Options options;
  options.listen = "127.0.0.1:0";
  options.data_dir = dir_.Sub("data");
  options.runner = &runner_;
  auto second = Server::Start(options);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(second.status().message(), HasSubstr(dir_.Sub("data")));
  EXPECT_THAT(second.status().message(),
              HasSubstr(absl::StrCat("pid ", ::getpid())));
}

TEST_F(HardeningTest, ReloadedTokensTakeEffectAndRevokedStreamsEnd) {
  StopServer();
  const std::string tokens = dir_.Sub("tokens.csv");
  std::ofstream(tokens) << "old-secret,alice,viewer\nkept-secret,bob,viewer\n";
  Start(tokens);
  EXPECT_TRUE(ListJobs("old-secret").ok());
  EXPECT_EQ(ListJobs("new-secret").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  HookStream revoked(channel_, "old-secret");
  HookStream kept(channel_, "kept-secret");
  v1::Subscribe all;
  all.set_subscription_id("all");
  ASSERT_TRUE(revoked.Subscribe(all)->has_subscribed());
  ASSERT_TRUE(kept.Subscribe(all)->has_subscribed());

  // A file that does not parse changes nothing.
  std::ofstream(tokens) << "broken line\n";
  absl::Status bad = server_->ReloadTokens();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.message(), HasSubstr("tokens.csv:1"));
  EXPECT_TRUE(ListJobs("old-secret").ok());

  std::ofstream(tokens)
      << "new-secret,carol,operator\nkept-secret,bob,viewer\n";
  ASSERT_TRUE(server_->ReloadTokens().ok());
  EXPECT_TRUE(ListJobs("new-secret").ok());
  EXPECT_EQ(ListJobs("old-secret").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // The streams learn of it at their next message: the kept one carries on,
  // the revoked one ends UNAUTHENTICATED.
  const v1::Job job = Submit({{"epochs", "1"}}, "new-secret");
  std::optional<v1::ServerMessage> event =
      kept.ReadUntil([](const v1::ServerMessage& m) { return m.has_event(); });
  ASSERT_TRUE(event.has_value());
  EXPECT_EQ(event->event().job_id(), job.id());
  grpc::Status ended = revoked.Finish();
  EXPECT_EQ(ended.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(ended.error_message(), HasSubstr("alice"));
  EXPECT_THAT(Log(), ::testing::Contains(HasSubstr("tokens: reloaded")));

  // Changing the file is enough: the server notices by itself.
  std::ofstream(tokens) << "newer-secret,dave,viewer\n";
  bool works = false;
  for (int i = 0; i < 500 && !works; ++i) {
    works = ListJobs("newer-secret").ok();
    if (!works) absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_TRUE(works);
  EXPECT_EQ(ListJobs("kept-secret").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(HardeningTest, AnInterruptedJobsObserverIsToldTheServerIsGoingAway) {
  const v1::Job job = Submit({{"epochs", "2"}, {"name", "block"}});
  runner_.AwaitStarted(1);
  HookStream watcher(channel_);
  v1::Subscribe follow;
  follow.set_subscription_id("follow");
  follow.add_job_ids(job.id());
  follow.set_from_seq(1);
  ASSERT_TRUE(watcher.Subscribe(follow)->has_subscribed());
  server_->Shutdown();
  std::optional<v1::ServerMessage> end = watcher.ReadUntil(
      [](const v1::ServerMessage& m) { return m.has_subscription_ended(); });
  ASSERT_TRUE(end.has_value());
  const v1::SubscriptionEnded& ended = end->subscription_ended();
  EXPECT_EQ(ended.reason(), v1::END_REASON_SHUTDOWN) << ended.DebugString();
  EXPECT_THAT(ended.message(), HasSubstr(job.id()));
  ASSERT_EQ(ended.resume_seq().count(job.id()), 1u);
  const int64_t resume = ended.resume_seq().at(job.id());
  EXPECT_GT(resume, 1);
  server_.reset();

  // The next server resumes it as attempt 2; following it from resume_seq
  // gives the rest, marked, and then JOBS_DONE.
  runner_.ReleaseAll();
  Start();
  HookStream again(channel_);
  follow.set_from_seq(resume);
  ASSERT_TRUE(again.Subscribe(follow)->has_subscribed());
  int64_t next = resume;
  while (true) {
    std::optional<v1::ServerMessage> m = again.Read();
    ASSERT_TRUE(m.has_value()) << "stopped after seq " << next - 1;
    if (m->has_subscription_ended()) {
      EXPECT_EQ(m->subscription_ended().reason(), v1::END_REASON_JOBS_DONE)
          << m->subscription_ended().DebugString();
      break;
    }
    ASSERT_TRUE(m->has_event());
    EXPECT_EQ(m->event().seq(), next++);
    EXPECT_EQ(m->event().attempt(), 2);
  }
  const v1::Job done = WaitDone(job.id());
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.attempt(), 2);
  EXPECT_EQ(done.last_seq(), next - 1);
  std::vector<v1::JobState> states;
  for (const v1::StateChange& change : done.history())
    states.push_back(change.state());
  EXPECT_THAT(states, ::testing::ElementsAre(
                          v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING,
                          v1::JOB_STATE_INTERRUPTED, v1::JOB_STATE_QUEUED,
                          v1::JOB_STATE_RUNNING, v1::JOB_STATE_SUCCEEDED));
  EXPECT_EQ(done.history(2).reason(), "server shut down");
}

}  // namespace
}  // namespace yolohook::service
