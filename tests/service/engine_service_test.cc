// The server with the real engine: every event of a tiny train, val, predict
// and export job reaches a remote observer in order, with gap-free seqs.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "server/service/server.h"
#include "tests/testing/callback_stream.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/tiny_shapes.h"
#include "yolohook/v1/jobs.grpc.pb.h"

namespace yolohook::service {
namespace {

TEST(EngineServiceTest, EveryModesEventsArriveInOrderWithGapFreeSeq) {
  testing::TempDir dir;
  ASSERT_TRUE(testing::MakeTinyShapes(dir.Sub("shapes")).ok());
  Server::Options options;
  options.listen = "127.0.0.1:0";
  options.data_dir = dir.path();
  options.threads = 2;
  auto server = Server::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = grpc::CreateChannel((*server)->address(),
                                     grpc::InsecureChannelCredentials());
  auto jobs = v1::JobService::NewStub(channel);

  testing::CallbackStream stream(channel);
  v1::ClientMessage subscribe;
  subscribe.mutable_subscribe()->set_subscription_id("all");
  ASSERT_TRUE(stream.Send(subscribe));
  ASSERT_TRUE(stream.ReadUntil(
      [](const v1::ServerMessage& m) { return m.has_subscribed(); }));

  const std::string data = dir.Sub("shapes") + "/data.yaml";
  auto run = [&](v1::Mode mode, std::map<std::string, std::string> args,
                 const std::string& first, const std::string& last) {
    args["verbose"] = "false";
    v1::SubmitJobRequest request;
    request.set_mode(mode);
    request.mutable_args()->insert(args.begin(), args.end());
    v1::Job job;
    grpc::ClientContext context;
    grpc::Status status = jobs->SubmitJob(&context, request, &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    std::vector<v1::Event> events;
    while (auto m = stream.Read(absl::Seconds(120))) {
      if (!m->has_event() || m->event().job_id() != job.id()) continue;
      events.push_back(m->event());
      if (m->event().name() == last) break;
    }
    EXPECT_FALSE(events.empty());
    for (size_t i = 0; i < events.size(); ++i) {
      EXPECT_EQ(events[i].seq(), static_cast<int64_t>(i + 1))
          << events[i].name();
    }
    if (!events.empty()) {
      EXPECT_EQ(events.front().name(), first);
      EXPECT_EQ(events.back().name(), last);
    }
    auto done = (*server)->manager().Wait(job.id(), absl::Seconds(120));
    EXPECT_TRUE(done.ok()) << done.status();
    EXPECT_EQ(done->state, jobs::JobState::kSucceeded) << done->error;
    EXPECT_EQ(done->last_seq, static_cast<int64_t>(events.size()));
    return *done;
  };

  jobs::JobRecord train =
      run(v1::MODE_TRAIN,
          {{"data", data}, {"imgsz", "64"}, {"batch", "4"}, {"epochs", "1"}},
          "on_pretrain_routine_start", "teardown");
  std::string best;
  for (const jobs::Artifact& a : train.artifacts) {
    if (a.kind == "weights_best") best = a.path;
  }
  ASSERT_FALSE(best.empty());
  run(v1::MODE_VAL, {{"model", best}, {"data", data}, {"imgsz", "64"}},
      "on_val_start", "on_val_end");
  jobs::JobRecord predict = run(v1::MODE_PREDICT,
                                {{"model", best},
                                 {"source", dir.Sub("shapes") + "/images/val"},
                                 {"imgsz", "64"}},
                                "on_predict_start", "on_predict_end");
  EXPECT_EQ(predict.results.size(), 4u);
  run(v1::MODE_EXPORT, {{"model", best}, {"imgsz", "64"}}, "on_export_start",
      "on_export_end");
}

}  // namespace
}  // namespace yolohook::service
