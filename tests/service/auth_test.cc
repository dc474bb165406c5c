// Bearer tokens and roles through the wire: a real server on 127.0.0.1 with a
// token file and the fake engine, called without a token, with a wrong one,
// and as a viewer, an operator and an admin.
#include <gmock/gmock.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "google/protobuf/descriptor.h"
#include "server/auth/token_store.h"
#include "server/service/server.h"
#include "tests/testing/fake_runner.h"
#include "tests/testing/hook_stream.h"
#include "tests/testing/server_test.h"
#include "tests/testing/temp_dir.h"
#include "yolohook/v1/jobs.grpc.pb.h"
#include "yolohook/v1/predict.grpc.pb.h"

namespace yolohook::service {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::HookStream;
using ::testing::Not;

constexpr char kViewer[] = "viewer-secret";
constexpr char kOperator[] = "operator-secret";
constexpr char kAdmin[] = "admin-secret";

class AuthTest : public testing::ServerTest {
 protected:
  void SetUp() override {
    const std::string tokens = dir_.Sub("tokens.csv");
    std::ofstream(tokens) << "# token,name,role\n"
                          << kViewer << ",grafana,viewer\n"
                          << kOperator << ",ci,operator\n"
                          << kAdmin << ",root,admin\n";
    Server::Options options;
    options.reply_timeout = absl::Seconds(10);
    options.token_file = tokens;
    StartServer(options);
  }

  static void Authorize(grpc::ClientContext& context,
                        const std::string& token) {
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  }

  grpc::Status Submit(const std::string& token, v1::Job* job,
                      const std::map<std::string, std::string>& args = {},
                      const std::map<std::string, std::string>& labels = {}) {
    grpc::ClientContext context;
    Authorize(context, token);
    v1::SubmitJobRequest request;
    request.set_mode(v1::MODE_TRAIN);
    request.mutable_args()->insert(args.begin(), args.end());
    request.mutable_labels()->insert(labels.begin(), labels.end());
    return jobs_->SubmitJob(&context, request, job);
  }

  grpc::Status Get(const std::string& token, const std::string& id,
                   v1::Job* job) {
    grpc::ClientContext context;
    Authorize(context, token);
    v1::GetJobRequest request;
    request.set_id(id);
    return jobs_->GetJob(&context, request, job);
  }

  grpc::Status List(const std::string& token) {
    grpc::ClientContext context;
    Authorize(context, token);
    v1::ListJobsResponse response;
    return jobs_->ListJobs(&context, v1::ListJobsRequest(), &response);
  }

  grpc::Status Cancel(const std::string& token, const std::string& id) {
    grpc::ClientContext context;
    Authorize(context, token);
    v1::CancelJobRequest request;
    request.set_id(id);
    v1::Job job;
    return jobs_->CancelJob(&context, request, &job);
  }

  grpc::Status Predict(const std::string& token) {
    grpc::ClientContext context;
    Authorize(context, token);
    v1::PredictRequest request;
    request.add_images()->set_name("a.jpg");
    request.mutable_images(0)->set_data("not decoded by the fake engine");
    v1::PredictResponse response;
    return predict_->Predict(&context, request, &response);
  }

  grpc::Status PredictStream(const std::string& token) {
    grpc::ClientContext context;
    Authorize(context, token);
    auto stream = predict_->PredictStream(&context);
    v1::Frame frame;
    frame.set_index(0);
    frame.mutable_image()->set_name("f0.jpg");
    stream->Write(frame);  // false once refused
    stream->WritesDone();
    v1::FrameResult result;
    while (stream->Read(&result)) {
    }
    return stream->Finish();
  }

  // A finished Connect stream's status, having sent nothing.
  grpc::Status ConnectStatus(const std::string& token) {
    HookStream stream(channel_, token);
    return stream.Finish();
  }

  v1::Job SubmitAsOperator(const std::map<std::string, std::string>& args,
                           const std::map<std::string, std::string>& labels) {
    v1::Job job;
    grpc::Status status = Submit(kOperator, &job, args, labels);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return job;
  }

  static v1::Subscribe Observe(const std::string& id) {
    v1::Subscribe sub;
    sub.set_subscription_id(id);
    sub.set_mode(v1::SUBSCRIPTION_MODE_OBSERVE);
    return sub;
  }
};

void ExpectMissingToken(const grpc::Status& status) {
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("missing bearer token"));
}

void ExpectDenied(const grpc::Status& status, const std::string& method) {
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << status.error_message();
  EXPECT_THAT(status.error_message(),
              AllOf(HasSubstr(method), HasSubstr("needs role operator"),
                    HasSubstr("\"grafana\" has role viewer")));
}

TEST_F(AuthTest, NoTokenIsUnauthenticatedEverywhere) {
  v1::Job job;
  ExpectMissingToken(Submit("", &job));
  ExpectMissingToken(Get("", "job-1", &job));
  ExpectMissingToken(List(""));
  ExpectMissingToken(Cancel("", "job-1"));
  ExpectMissingToken(Predict(""));
  ExpectMissingToken(PredictStream(""));
  ExpectMissingToken(ConnectStatus(""));
}

TEST_F(AuthTest, MalformedHeaderIsAMissingToken) {
  for (const char* header : {"Basic dXNlcjpwdw==", "Bearer", kViewer}) {
    grpc::ClientContext context;
    context.AddMetadata("authorization", header);
    v1::ListJobsResponse response;
    ExpectMissingToken(
        jobs_->ListJobs(&context, v1::ListJobsRequest(), &response));
  }
  // The scheme is case-insensitive.
  grpc::ClientContext context;
  context.AddMetadata("authorization", std::string("bEaReR ") + kViewer);
  v1::ListJobsResponse response;
  EXPECT_TRUE(jobs_->ListJobs(&context, v1::ListJobsRequest(), &response).ok());
}

TEST_F(AuthTest, WrongTokenIsUnauthenticatedWithoutEchoingIt) {
  const std::string wrong = "wrong-secret-1234";
  v1::Job job;
  for (const grpc::Status& status :
       {Submit(wrong, &job), List(wrong), Predict(wrong), ConnectStatus(wrong),
        PredictStream(wrong)}) {
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_THAT(status.error_message(),
                AllOf(HasSubstr("unknown token"), Not(HasSubstr(wrong))));
  }
}

TEST_F(AuthTest, ViewerGetsListsAndObserves) {
  HookStream stream(channel_, kViewer);
  v1::Subscribe sub = Observe("watch");
  sub.add_events("on_train_end");
  (*sub.mutable_match_labels())["run"] = "viewed";
  std::optional<v1::ServerMessage> ack = stream.Subscribe(sub);
  ASSERT_TRUE(ack.has_value());
  ASSERT_TRUE(ack->has_subscribed()) << ack->DebugString();

  v1::Job job = SubmitAsOperator({{"epochs", "1"}}, {{"run", "viewed"}});
  std::optional<v1::ServerMessage> event = stream.ReadUntil(
      [](const v1::ServerMessage& m) { return m.has_event(); });
  ASSERT_TRUE(event.has_value());
  EXPECT_EQ(event->event().job_id(), job.id());
  EXPECT_EQ(event->event().name(), "on_train_end");

  v1::Job got;
  grpc::Status status = Get(kViewer, job.id(), &got);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(got.id(), job.id());
  status = List(kViewer);
  EXPECT_TRUE(status.ok()) << status.error_message();
}

TEST_F(AuthTest, ViewerMayNotSubmitCancelOrPredict) {
  v1::Job job;
  ExpectDenied(Submit(kViewer, &job), "yolohook.v1.JobService/SubmitJob");
  v1::Job running = SubmitAsOperator({{"name", "block-1"}}, {});
  ExpectDenied(Cancel(kViewer, running.id()),
               "yolohook.v1.JobService/CancelJob");
  ExpectDenied(Predict(kViewer), "yolohook.v1.PredictService/Predict");
  ExpectDenied(PredictStream(kViewer),
               "yolohook.v1.PredictService/PredictStream");
  // The job was not cancelled; the operator may.
  EXPECT_TRUE(Cancel(kOperator, running.id()).ok());
  runner_.ReleaseAll();
}

TEST_F(AuthTest, ViewerInterceptAndRepliesAreDeniedOnAStreamThatStaysOpen) {
  HookStream stream(channel_, kViewer);
  v1::Subscribe intercept;
  intercept.set_subscription_id("hook");
  intercept.set_mode(v1::SUBSCRIPTION_MODE_INTERCEPT);
  std::optional<v1::ServerMessage> refused = stream.Subscribe(intercept);
  ASSERT_TRUE(refused.has_value());
  ASSERT_TRUE(refused->has_error()) << refused->DebugString();
  EXPECT_EQ(refused->error().subscription_id(), "hook");
  EXPECT_EQ(refused->error().code(),
            static_cast<int>(grpc::StatusCode::PERMISSION_DENIED));
  EXPECT_THAT(refused->error().message(),
              AllOf(HasSubstr("intercept"), HasSubstr("needs role operator")));

  v1::ClientMessage reply;
  reply.mutable_reply()->set_subscription_id("hook");
  reply.mutable_reply()->set_job_id("job-1");
  reply.mutable_reply()->set_seq(1);
  reply.mutable_reply()->add_mutations()->mutable_stop_training();
  ASSERT_TRUE(stream.Send(reply));
  std::optional<v1::ServerMessage> error = stream.Read();
  ASSERT_TRUE(error.has_value());
  ASSERT_TRUE(error->has_error()) << error->DebugString();
  EXPECT_EQ(error->error().code(),
            static_cast<int>(grpc::StatusCode::PERMISSION_DENIED));
  EXPECT_THAT(error->error().message(), HasSubstr("Reply"));

  v1::ClientMessage extend;
  extend.mutable_extend_deadline()->set_subscription_id("hook");
  extend.mutable_extend_deadline()->set_job_id("job-1");
  extend.mutable_extend_deadline()->set_seq(1);
  ASSERT_TRUE(stream.Send(extend));
  error = stream.Read();
  ASSERT_TRUE(error.has_value());
  ASSERT_TRUE(error->has_error()) << error->DebugString();
  EXPECT_EQ(error->error().code(),
            static_cast<int>(grpc::StatusCode::PERMISSION_DENIED));
  EXPECT_THAT(error->error().message(), HasSubstr("ExtendDeadline"));

  // Still usable for what a viewer may do.
  std::optional<v1::ServerMessage> ack = stream.Subscribe(Observe("watch"));
  ASSERT_TRUE(ack.has_value());
  EXPECT_TRUE(ack->has_subscribed()) << ack->DebugString();
  EXPECT_TRUE(stream.Finish().ok());
}

TEST_F(AuthTest, OperatorInterceptsAndMutates) {
  HookStream stream(channel_, kOperator);
  v1::Subscribe sub;
  sub.set_subscription_id("stopper");
  (*sub.mutable_match_labels())["run"] = "stop";
  sub.add_events("on_train_epoch_end");
  sub.set_mode(v1::SUBSCRIPTION_MODE_INTERCEPT);
  std::optional<v1::ServerMessage> ack = stream.Subscribe(sub);
  ASSERT_TRUE(ack.has_value());
  ASSERT_TRUE(ack->has_subscribed()) << ack->DebugString();

  v1::Job job = SubmitAsOperator({{"epochs", "5"}}, {{"run", "stop"}});
  std::optional<v1::ServerMessage> event = stream.ReadUntil(
      [](const v1::ServerMessage& m) { return m.has_event(); });
  ASSERT_TRUE(event.has_value());
  ASSERT_TRUE(event->event().reply_required());
  v1::Mutation stop;
  stop.mutable_stop_training()->set_reason("enough");
  std::optional<v1::ReplyResult> result = stream.Reply(event->event(), {stop});
  ASSERT_TRUE(result.has_value());
  EXPECT_TRUE(result->applied()) << result->reason();

  auto done = server_->manager().Wait(job.id(), absl::Seconds(30));
  ASSERT_TRUE(done.ok()) << done.status();
  v1::Job finished;
  ASSERT_TRUE(Get(kOperator, job.id(), &finished).ok());
  EXPECT_EQ(finished.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(finished.metrics().at("epochs_completed"), 1);
}

TEST_F(AuthTest, AdminMayDoWhatAnOperatorMay) {
  v1::Job job;
  grpc::Status status = Submit(kAdmin, &job, {{"name", "block-admin"}});
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(Cancel(kAdmin, job.id()).ok());
  HookStream stream(channel_, kAdmin);
  v1::Subscribe intercept = Observe("hook");
  intercept.set_mode(v1::SUBSCRIPTION_MODE_INTERCEPT);
  std::optional<v1::ServerMessage> ack = stream.Subscribe(intercept);
  ASSERT_TRUE(ack.has_value());
  EXPECT_TRUE(ack->has_subscribed()) << ack->DebugString();
}

TEST_F(AuthTest, HealthNeedsNoToken) {
  grpc::GenericStub stub(channel_);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(30));
  grpc::Slice empty;  // HealthCheckRequest{service: ""} is no bytes
  grpc::ByteBuffer request(&empty, 1);
  grpc::ByteBuffer response;
  absl::Notification done;
  grpc::Status status;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(),
                 &request, &response, [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& slice : slices)
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));  // status: SERVING
}

// The status of calling `method` (a "/package.Service/Method" path) with an
// empty request and `token`, whatever its kind: unary calls send the empty
// message, streams half-close at once and drain what the server sends.
grpc::Status CallEmpty(const std::shared_ptr<grpc::Channel>& channel,
                       const google::protobuf::MethodDescriptor& method,
                       const std::string& token) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(30));
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  const std::string path =
      absl::StrCat("/", method.service()->full_name(), "/", method.name());
  absl::Notification done;
  grpc::Status status;
  if (!method.client_streaming() && !method.server_streaming()) {
    grpc::ByteBuffer request;
    grpc::Slice empty;
    request = grpc::ByteBuffer(&empty, 1);
    grpc::ByteBuffer response;
    stub.UnaryCall(&context, path, grpc::StubOptions(), &request, &response,
                   [&](grpc::Status s) {
                     status = std::move(s);
                     done.Notify();
                   });
    done.WaitForNotification();
    return status;
  }
  // Streams: half-close at once, read whatever comes, report how it ended.
  class Reactor
      : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
   public:
    Reactor(grpc::Status* status, absl::Notification* done)
        : status_(status), done_(done) {}
    void Begin() {
      StartRead(&incoming_);
      StartWritesDone();
      StartCall();
    }
    void OnReadDone(bool ok) override {
      if (ok) StartRead(&incoming_);
    }
    void OnDone(const grpc::Status& s) override {
      *status_ = s;
      done_->Notify();
    }

   private:
    grpc::ByteBuffer incoming_;
    grpc::Status* status_;
    absl::Notification* done_;
  };
  Reactor reactor(&status, &done);
  stub.PrepareBidiStreamingCall(&context, path, grpc::StubOptions(), &reactor);
  reactor.Begin();
  done.WaitForNotification();
  return status;
}

// Every method of every yolohook service, read from the contract itself so
// that a method added later is covered too: without a token and with an
// unknown one it is UNAUTHENTICATED; a role below its own is
// PERMISSION_DENIED naming the method; its role and those above get past
// authorization (whatever the empty request then earns).
TEST_F(AuthTest, EveryMethodChecksTokensAndRoles) {
  // The role each method needs. A method missing here fails the test: say
  // which role it needs.
  const std::map<std::string, auth::Role> needs = {
      {"yolohook.v1.JobService.SubmitJob", auth::Role::kOperator},
      {"yolohook.v1.JobService.GetJob", auth::Role::kViewer},
      {"yolohook.v1.JobService.ListJobs", auth::Role::kViewer},
      {"yolohook.v1.JobService.CancelJob", auth::Role::kOperator},
      {"yolohook.v1.HookService.Connect", auth::Role::kViewer},
      {"yolohook.v1.PredictService.Predict", auth::Role::kOperator},
      {"yolohook.v1.PredictService.PredictStream", auth::Role::kOperator},
  };
  const std::vector<std::pair<auth::Role, std::string>> callers = {
      {auth::Role::kViewer, kViewer},
      {auth::Role::kOperator, kOperator},
      {auth::Role::kAdmin, kAdmin},
  };
  const google::protobuf::DescriptorPool* pool =
      google::protobuf::DescriptorPool::generated_pool();
  int methods = 0;
  for (const char* file :
       {"yolohook/v1/jobs.proto", "yolohook/v1/callbacks.proto",
        "yolohook/v1/predict.proto"}) {
    const google::protobuf::FileDescriptor* fd = pool->FindFileByName(file);
    ASSERT_NE(fd, nullptr) << file;
    for (int s = 0; s < fd->service_count(); ++s) {
      const google::protobuf::ServiceDescriptor* service = fd->service(s);
      for (int m = 0; m < service->method_count(); ++m) {
        const google::protobuf::MethodDescriptor& method = *service->method(m);
        SCOPED_TRACE(method.full_name());
        ++methods;
        auto need = needs.find(method.full_name());
        ASSERT_NE(need, needs.end())
            << method.full_name() << " is not in this test's role table";
        grpc::Status none = CallEmpty(channel_, method, "");
        EXPECT_EQ(none.error_code(), grpc::StatusCode::UNAUTHENTICATED)
            << none.error_message();
        grpc::Status unknown = CallEmpty(channel_, method, "not-a-token");
        EXPECT_EQ(unknown.error_code(), grpc::StatusCode::UNAUTHENTICATED)
            << unknown.error_message();
        for (const auto& [role, token] : callers) {
          grpc::Status status = CallEmpty(channel_, method, token);
          if (auth::Allows(role, need->second)) {
            EXPECT_NE(status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
                << auth::RoleName(role) << ": " << status.error_message();
            EXPECT_NE(status.error_code(), grpc::StatusCode::PERMISSION_DENIED)
                << auth::RoleName(role) << ": " << status.error_message();
          } else {
            EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED)
                << auth::RoleName(role) << ": " << status.error_message();
            EXPECT_THAT(status.error_message(), HasSubstr(method.name()));
          }
        }
      }
    }
  }
  EXPECT_EQ(methods, static_cast<int>(needs.size()))
      << "the role table names a method the contract no longer has";
}

TEST(AuthStartTest, TokenFileErrorsStopTheServerNamingFileAndLine) {
  testing::TempDir dir;
  const std::string tokens = dir.Sub("tokens.csv");
  std::ofstream(tokens) << "a,alice,viewer\nb,bob,superuser\n";
  Server::Options options;
  options.listen = "127.0.0.1:0";
  options.data_dir = dir.Sub("data");
  testing::FakeRunner runner;
  options.runner = &runner;
  options.token_file = tokens;
  auto server = Server::Start(options);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(server.status().message(),
              AllOf(HasSubstr("--token_file"),
                    HasSubstr(tokens + ":2: unknown role \"superuser\"")));
}

TEST(AuthStartTest, NonLoopbackWithoutTokensNeedsInsecure) {
  testing::TempDir dir;
  testing::FakeRunner runner;
  Server::Options options;
  options.listen = "0.0.0.0:0";
  options.data_dir = dir.Sub("data");
  options.runner = &runner;
  auto refused = Server::Start(options);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(),
              AllOf(HasSubstr("--listen=0.0.0.0:0"), HasSubstr("--token_file"),
                    HasSubstr("--insecure")));
  options.insecure = true;
  auto server = Server::Start(options);
  EXPECT_TRUE(server.ok()) << server.status();
}

TEST(IsLoopbackTest, KnowsLoopbackAddresses) {
  for (const char* listen : {"127.0.0.1:50051", "127.1.2.3:1",
                             "localhost:50051", "[::1]:50051", "LOCALHOST:0"}) {
    EXPECT_TRUE(IsLoopback(listen)) << listen;
  }
  for (const char* listen :
       {"0.0.0.0:50051", "[::]:50051", ":50051", "10.0.0.1:50051",
        "example.com:50051", "128.0.0.1:1", "[::2]:1"}) {
    EXPECT_FALSE(IsLoopback(listen)) << listen;
  }
}

}  // namespace
}  // namespace yolohook::service
