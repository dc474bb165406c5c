// GET /metrics against a real server (gRPC and HTTP on 127.0.0.1, free
// ports) with the fake engine: the counters and histograms move as jobs,
// subscribers and interceptors do.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "server/service/server.h"
#include "tests/testing/fake_runner.h"
#include "tests/testing/hook_stream.h"
#include "tests/testing/http_client.h"
#include "tests/testing/job_calls.h"
#include "tests/testing/server_test.h"
#include "tests/testing/temp_dir.h"
#include "yolohook/v1/jobs.grpc.pb.h"
#include "yolohook/v1/predict.grpc.pb.h"

namespace yolohook::service {
namespace {

using ::testing::HasSubstr;
using testing::HookStream;

// The samples of a text exposition, by "name{labels}".
std::map<std::string, double> ParseSamples(const std::string& text) {
  std::map<std::string, double> samples;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    size_t space = line.rfind(' ');
    double value = 0;
    EXPECT_TRUE(absl::SimpleAtod(line.substr(space + 1), &value)) << line;
    samples[std::string(line.substr(0, space))] = value;
  }
  return samples;
}

class MetricsServiceTest : public testing::ServerTest {
 protected:
  void SetUp() override {
    Server::Options options;
    options.metrics_listen = "127.0.0.1:0";
    options.data_dir = dir_.path();
    options.reply_timeout = absl::Milliseconds(300);
    StartServer(options);
    ASSERT_NE(server_->metrics_port(), 0);
  }

  // Scrapes /metrics over HTTP.
  std::map<std::string, double> Scrape() {
    testing::HttpResponse response =
        testing::HttpGet(server_->metrics_port(), "/metrics");
    EXPECT_EQ(response.status, 200) << response.body;
    EXPECT_EQ(response.Header("Content-Type"),
              "text/plain; version=0.0.4; charset=utf-8");
    return ParseSamples(response.body);
  }
};

TEST_F(MetricsServiceTest, CountersAndHistogramsFollowJobsAndSubscribers) {
  std::map<std::string, double> before = Scrape();
  EXPECT_EQ(before["yolohook_build_info{version=\"0.1.0\"}"], 1);
  EXPECT_EQ(before["yolohook_events_published_total"], 0);
  EXPECT_EQ(before["yolohook_jobs{state=\"succeeded\"}"], 0);
  EXPECT_EQ(before["yolohook_intercept_rtt_seconds_count"], 0);
  EXPECT_EQ(before.count("process_cpu_seconds_total"), 1u);

  HookStream observer(channel_);
  v1::Subscribe watch;
  watch.set_subscription_id("watch");
  (*watch.mutable_match_labels())["team"] = "m";
  ASSERT_TRUE(observer.Subscribe(watch)->has_subscribed());
  HookStream interceptor(channel_);
  v1::Subscribe hook;
  hook.set_subscription_id("hook");
  (*hook.mutable_match_labels())["team"] = "m";
  hook.add_events("on_train_epoch_end");
  hook.set_mode(v1::SUBSCRIPTION_MODE_INTERCEPT);
  ASSERT_TRUE(interceptor.Subscribe(hook)->has_subscribed());
  std::map<std::string, double> subscribed = Scrape();
  EXPECT_EQ(subscribed["yolohook_subscriptions{mode=\"observe\"}"], 1);
  EXPECT_EQ(subscribed["yolohook_subscriptions{mode=\"intercept\"}"], 1);

  // Three epochs: a rejected reply, an applied one, then silence (timeout).
  v1::Job job = testing::SubmitJob(*jobs_, v1::MODE_TRAIN, {{"epochs", "3"}},
                                   {{"team", "m"}});
  auto is_event = [](const v1::ServerMessage& m) { return m.has_event(); };
  std::optional<v1::ServerMessage> first = interceptor.ReadUntil(is_event);
  ASSERT_TRUE(first.has_value());
  v1::Mutation bad;
  (*bad.mutable_log_metrics()->mutable_metrics())["x"] =
      std::numeric_limits<double>::infinity();
  std::optional<v1::ReplyResult> rejected =
      interceptor.Reply(first->event(), {bad});
  ASSERT_TRUE(rejected.has_value());
  EXPECT_FALSE(rejected->applied());
  std::optional<v1::ServerMessage> second = interceptor.ReadUntil(is_event);
  ASSERT_TRUE(second.has_value());
  v1::Mutation good;
  (*good.mutable_log_metrics()->mutable_metrics())["x"] = 1;
  std::optional<v1::ReplyResult> applied =
      interceptor.Reply(second->event(), {good});
  ASSERT_TRUE(applied.has_value());
  EXPECT_TRUE(applied->applied()) << applied->reason();
  ASSERT_TRUE(interceptor.ReadUntil(is_event).has_value());  // not answered

  int observed = 0;
  while (auto m = observer.Read()) {
    if (!m->has_event()) continue;
    ++observed;
    if (m->event().name() == "teardown") break;
  }
  EXPECT_EQ(observed, testing::FakeRunner::TrainEvents(3));
  EXPECT_EQ(testing::WaitJobDone(*server_, *jobs_, job.id(), absl::Seconds(30))
                .state(),
            v1::JOB_STATE_SUCCEEDED);

  v1::PredictRequest request;
  v1::Image* image = request.add_images();
  image->set_name("a.jpg");
  image->set_data("fake engine: not decoded");
  v1::PredictResponse response;
  grpc::ClientContext context;
  ASSERT_TRUE(predict_->Predict(&context, request, &response).ok());

  std::map<std::string, double> after = Scrape();
  EXPECT_EQ(
      after["yolohook_jobs_submitted_total{task=\"detect\",mode=\"train\"}"],
      1);
  EXPECT_EQ(
      after["yolohook_jobs_submitted_total{task=\"detect\",mode=\"predict\"}"],
      1);
  EXPECT_EQ(after["yolohook_jobs{state=\"succeeded\"}"], 2);
  EXPECT_EQ(after["yolohook_jobs{state=\"running\"}"], 0);
  // Train events, then predict's start, three per image, and end.
  EXPECT_EQ(after["yolohook_events_published_total"],
            testing::FakeRunner::TrainEvents(3) + 5);
  // Every train event to the observer, three epoch ends to the interceptor.
  EXPECT_EQ(after["yolohook_events_sent_total"],
            testing::FakeRunner::TrainEvents(3) + 3);
  EXPECT_EQ(after["yolohook_replies_total{result=\"applied\"}"], 1);
  EXPECT_EQ(after["yolohook_replies_total{result=\"rejected\"}"], 1);
  EXPECT_EQ(after["yolohook_mutations_rejected_total"], 1);
  EXPECT_EQ(after["yolohook_reply_timeouts_total"], 1);
  EXPECT_EQ(after["yolohook_subscribers_lagging_total"], 0);
  EXPECT_EQ(after["yolohook_intercept_rtt_seconds_count"], 2);
  EXPECT_EQ(after["yolohook_intercept_rtt_seconds_bucket{le=\"+Inf\"}"], 2);
  EXPECT_GT(after["yolohook_intercept_rtt_seconds_sum"], 0);
  EXPECT_EQ(after["yolohook_predict_latency_seconds_count{rpc=\"Predict\"}"],
            1);
  EXPECT_EQ(
      after["yolohook_predict_latency_seconds_count{rpc=\"PredictStream\"}"],
      0);
}

TEST_F(MetricsServiceTest, OnlyMetricsIsServed) {
  EXPECT_EQ(testing::HttpGet(server_->metrics_port(), "/").status, 404);
  testing::HttpConnection connection(server_->metrics_port());
  ASSERT_TRUE(connection.Send("POST /metrics HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(connection.Read().status, 405);
}

TEST(MetricsServerOptionsTest, OffByDefaultAndBadAddressesAreErrors) {
  testing::TempDir dir;
  testing::FakeRunner runner;
  Server::Options options;
  options.listen = "127.0.0.1:0";
  options.data_dir = dir.path();
  options.runner = &runner;
  {
    auto server = Server::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    EXPECT_EQ((*server)->metrics_port(), 0);
    // The registry is there for in-process readers all the same.
    EXPECT_THAT((*server)->metrics().Render(),
                HasSubstr("yolohook_events_published_total 0\n"));
  }
  options.metrics_listen = "127.0.0.1:port";
  auto bad = Server::Start(options);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("--metrics_listen"));
}

}  // namespace
}  // namespace yolohook::service
