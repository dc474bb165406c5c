// The dashboard's HTTP bridge on a real yolohookd (service::Server with a fake
// runner) on 127.0.0.1: the page, the JSON job API, the Server-Sent Events of
// a job (framing, resume after Last-Event-ID, live delivery) and auth.
#include "server/dashboard/dashboard.h"

#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "server/service/server.h"
#include "tests/testing/fake_runner.h"
#include "tests/testing/http_client.h"
#include "tests/testing/temp_dir.h"
#include "yolohook/v1/jobs.pb.h"

namespace yolohook::dashboard {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::HttpConnection;
using testing::HttpResponse;

// One parsed SSE message.
struct Sse {
  int64_t id = 0;
  std::string event;
  std::string data;
};

std::vector<Sse> ParseSse(const std::string& text) {
  std::vector<Sse> out;
  for (absl::string_view block : absl::StrSplit(text, "\n\n")) {
    Sse m;
    bool any = false;
    for (absl::string_view line : absl::StrSplit(block, '\n')) {
      if (absl::ConsumePrefix(&line, "id: ")) {
        any = absl::SimpleAtoi(line, &m.id);
      } else if (absl::ConsumePrefix(&line, "event: ")) {
        m.event = std::string(line);
        any = true;
      } else if (absl::ConsumePrefix(&line, "data: ")) {
        m.data += std::string(line);
      }
    }
    if (any) out.push_back(m);
  }
  return out;
}

std::vector<int64_t> Ids(const std::vector<Sse>& messages) {
  std::vector<int64_t> out;
  for (const Sse& m : messages) {
    if (m.id > 0) out.push_back(m.id);
  }
  return out;
}

std::vector<int64_t> Range(int64_t from, int64_t to) {
  std::vector<int64_t> out;
  for (int64_t i = from; i <= to; ++i) out.push_back(i);
  return out;
}

class DashboardTest : public ::testing::Test {
 protected:
  void Start(const std::string& tokens = "") {
    service::Server::Options options;
    options.listen = "127.0.0.1:0";
    options.http_listen = "127.0.0.1:0";
    options.data_dir = dir_.path();
    options.runner = &runner_;
    if (!tokens.empty()) {
      options.token_file = dir_.Sub("tokens.csv");
      std::ofstream(options.token_file) << tokens;
    }
    auto server = service::Server::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    port_ = server_->http_port();
    ASSERT_GT(port_, 0);
  }

  HttpResponse Send(const std::string& method, const std::string& path,
                    const std::string& body = "",
                    const std::string& headers = "") {
    HttpConnection connection(port_);
    connection.Send(absl::StrCat(method, " ", path,
                                 " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: "
                                 "close\r\nContent-Length: ",
                                 body.size(), "\r\n", headers, "\r\n", body));
    return connection.Read();
  }

  // Submits a train job through the API; its id.
  std::string SubmitTrain(const std::string& extra_args = "",
                          const std::string& headers = "") {
    HttpResponse response =
        Send("POST", "/api/jobs",
             absl::StrCat(R"({"mode": "MODE_TRAIN", "args": {"epochs": "2")",
                          extra_args, "}}"),
             headers);
    EXPECT_EQ(response.status, 200) << response.body;
    v1::Job job;
    EXPECT_TRUE(
        google::protobuf::util::JsonStringToMessage(response.body, &job).ok())
        << response.body;
    return job.id();
  }

  void WaitDone(const std::string& id) {
    ASSERT_TRUE(server_->manager().Wait(id, absl::Seconds(60)).ok());
  }

  testing::TempDir dir_;
  testing::FakeRunner runner_;
  std::unique_ptr<service::Server> server_;
  int port_ = 0;
};

TEST_F(DashboardTest, ServesThePageFromTheBinary) {
  Start();
  HttpResponse page = Send("GET", "/");
  EXPECT_EQ(page.status, 200);
  EXPECT_THAT(page.Header("Content-Type"), HasSubstr("text/html"));
  EXPECT_THAT(page.body, HasSubstr("<canvas id=\"loss-chart\""));
  HttpResponse script = Send("GET", "/app.js");
  EXPECT_EQ(script.status, 200);
  EXPECT_THAT(script.Header("Content-Type"), HasSubstr("javascript"));
  EXPECT_THAT(script.body, HasSubstr("EventSource"));
  EXPECT_EQ(Send("GET", "/nothing.js").status, 404);
  EXPECT_EQ(Send("GET", "/../CMakeLists.txt").status, 404);
}

TEST_F(DashboardTest, ListsAndGetsJobsAsJson) {
  Start();
  const std::string a = SubmitTrain();
  const std::string b = SubmitTrain();
  WaitDone(a);
  WaitDone(b);
  HttpResponse list = Send("GET", "/api/jobs");
  ASSERT_EQ(list.status, 200) << list.body;
  EXPECT_THAT(list.Header("Content-Type"), HasSubstr("application/json"));
  EXPECT_THAT(list.body, HasSubstr("\"state\":\"JOB_STATE_SUCCEEDED\""));
  v1::ListJobsResponse jobs;
  ASSERT_TRUE(
      google::protobuf::util::JsonStringToMessage(list.body, &jobs).ok());
  ASSERT_EQ(jobs.jobs_size(), 2);
  EXPECT_EQ(jobs.jobs(0).id(), b);  // newest first
  EXPECT_EQ(jobs.jobs(1).id(), a);
  EXPECT_EQ(jobs.jobs(1).last_seq(), testing::FakeRunner::TrainEvents(2));

  HttpResponse one = Send("GET", "/api/jobs/" + a);
  ASSERT_EQ(one.status, 200);
  v1::Job job;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(one.body, &job).ok());
  EXPECT_EQ(job.mode(), v1::MODE_TRAIN);
  EXPECT_EQ(job.args().at("epochs"), "2");

  EXPECT_EQ(Send("GET", "/api/jobs?state=running").status, 200);
  HttpResponse bad_state = Send("GET", "/api/jobs?state=sleeping");
  EXPECT_EQ(bad_state.status, 400);
  EXPECT_THAT(bad_state.body, HasSubstr("sleeping"));
  HttpResponse missing = Send("GET", "/api/jobs/nope");
  EXPECT_EQ(missing.status, 404);
  EXPECT_THAT(missing.body, HasSubstr("\"code\":\"NOT_FOUND\""));
}

TEST_F(DashboardTest, SubmitNamesWhatIsWrong) {
  Start();
  HttpResponse not_json = Send("POST", "/api/jobs", "{mode: train");
  EXPECT_EQ(not_json.status, 400);
  EXPECT_THAT(not_json.body, HasSubstr("SubmitJobRequest"));
  HttpResponse no_mode = Send("POST", "/api/jobs", R"({"args": {}})");
  EXPECT_EQ(no_mode.status, 400);
  HttpResponse bad_key = Send(
      "POST", "/api/jobs", R"({"mode": "MODE_TRAIN", "args": {"epoch": "3"}})");
  EXPECT_EQ(bad_key.status, 400);
  EXPECT_THAT(bad_key.body, HasSubstr("epochs"));
}

TEST_F(DashboardTest, StreamsEveryEventWithIdEventAndData) {
  Start();
  const std::string id = SubmitTrain();
  WaitDone(id);
  HttpResponse stream = Send("GET", "/api/events/" + id);
  ASSERT_EQ(stream.status, 200) << stream.body;
  EXPECT_THAT(stream.Header("Content-Type"), HasSubstr("text/event-stream"));
  EXPECT_THAT(stream.body, HasSubstr("retry: 1000\n\n"));
  const int n = testing::FakeRunner::TrainEvents(2);
  std::vector<Sse> messages = ParseSse(stream.body);
  EXPECT_EQ(Ids(messages), Range(1, n));
  ASSERT_GE(messages.size(), 2u);
  EXPECT_EQ(messages[0].event, "on_pretrain_routine_start");
  v1::Event first;
  ASSERT_TRUE(
      google::protobuf::util::JsonStringToMessage(messages[0].data, &first)
          .ok());
  EXPECT_EQ(first.seq(), 1);
  EXPECT_EQ(first.job_id(), id);
  EXPECT_TRUE(first.has_trainer());
  EXPECT_EQ(messages.back().event, "end");
  EXPECT_THAT(messages.back().data,
              HasSubstr("\"state\":\"JOB_STATE_SUCCEEDED\""));
  EXPECT_THAT(messages.back().data,
              HasSubstr(absl::StrCat("\"last_seq\":", n)));
}

TEST_F(DashboardTest, ResumesExactlyAfterLastEventId) {
  Start();
  const std::string id = SubmitTrain();
  WaitDone(id);
  const int n = testing::FakeRunner::TrainEvents(2);
  HttpResponse header =
      Send("GET", "/api/events/" + id, "", "Last-Event-ID: 7\r\n");
  EXPECT_EQ(Ids(ParseSse(header.body)), Range(8, n));
  HttpResponse param = Send("GET", "/api/events/" + id + "?last_event_id=12");
  EXPECT_EQ(Ids(ParseSse(param.body)), Range(13, n));
  HttpResponse at_end = Send("GET", "/api/events/" + id, "",
                             absl::StrCat("Last-Event-ID: ", n, "\r\n"));
  std::vector<Sse> rest = ParseSse(at_end.body);
  EXPECT_THAT(Ids(rest), ElementsAre());
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].event, "end");
  HttpResponse bad =
      Send("GET", "/api/events/" + id, "", "Last-Event-ID: x\r\n");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(Send("GET", "/api/events/nope").status, 404);
}

TEST_F(DashboardTest, FollowsARunningJobLive) {
  Start();
  const std::string id = SubmitTrain(R"(, "name": "block-live")");
  runner_.AwaitStarted(1);
  HttpConnection connection(port_);
  connection.Send("GET /api/events/" + id +
                  "?events=on_train_epoch_end,on_fit_epoch_end HTTP/1.1\r\n"
                  "Host: 127.0.0.1\r\n\r\n");
  ASSERT_TRUE(connection.ReadUntil("retry: 1000"));
  runner_.Release("block-live");
  ASSERT_TRUE(connection.ReadUntil("event: end"));
  std::vector<Sse> messages = ParseSse(connection.buffer());
  std::vector<std::string> names;
  for (const Sse& m : messages) names.push_back(m.event);
  EXPECT_THAT(names,
              ElementsAre("on_train_epoch_end", "on_fit_epoch_end",
                          "on_train_epoch_end", "on_fit_epoch_end", "end"));
}

TEST_F(DashboardTest, CancelStopsAJob) {
  Start();
  const std::string id = SubmitTrain(R"(, "name": "block-cancel")");
  runner_.AwaitStarted(1);
  HttpResponse cancel = Send("POST", "/api/jobs/" + id + "/cancel");
  EXPECT_EQ(cancel.status, 200) << cancel.body;
  auto job = server_->manager().Wait(id, absl::Seconds(30));
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state, jobs::JobState::kCancelled);
  HttpResponse again = Send("POST", "/api/jobs/" + id + "/cancel");
  EXPECT_EQ(again.status, 409);
  EXPECT_EQ(Send("POST", "/api/jobs/" + id + "/pause").status, 404);
}

TEST_F(DashboardTest, WithoutTokensEveryoneIsAnAdmin) {
  Start();
  HttpResponse who = Send("GET", "/api/whoami");
  EXPECT_EQ(who.status, 200);
  EXPECT_THAT(who.body, HasSubstr("\"role\":\"admin\""));
  EXPECT_THAT(who.body, HasSubstr("\"auth\":false"));
}

TEST_F(DashboardTest, TokensAndRoles) {
  Start("viewer-token,grafana,viewer\noperator-token,ci,operator\n");
  const std::string viewer = "Authorization: Bearer viewer-token\r\n";
  const std::string op = "Authorization: Bearer operator-token\r\n";

  EXPECT_EQ(Send("GET", "/").status, 200);  // the page itself is public
  HttpResponse anonymous = Send("GET", "/api/jobs");
  EXPECT_EQ(anonymous.status, 401);
  EXPECT_EQ(anonymous.Header("WWW-Authenticate"), "Bearer");
  EXPECT_THAT(anonymous.body, HasSubstr("bearer token"));
  EXPECT_EQ(
      Send("GET", "/api/jobs", "", "Authorization: Bearer nope\r\n").status,
      401);
  EXPECT_EQ(Send("GET", "/api/events/x").status, 401);

  HttpResponse who = Send("GET", "/api/whoami", "", viewer);
  EXPECT_THAT(who.body, HasSubstr("\"name\":\"grafana\""));
  EXPECT_THAT(who.body, HasSubstr("\"role\":\"viewer\""));

  HttpResponse viewer_submit =
      Send("POST", "/api/jobs", R"({"mode": "MODE_TRAIN"})", viewer);
  EXPECT_EQ(viewer_submit.status, 403);
  EXPECT_THAT(viewer_submit.body, HasSubstr("operator"));

  const std::string id = SubmitTrain(R"(, "name": "block-auth")", op);
  runner_.AwaitStarted(1);
  EXPECT_EQ(Send("GET", "/api/jobs", "", viewer).status, 200);
  HttpResponse viewer_stop =
      Send("POST", "/api/jobs/" + id + "/cancel", "", viewer);
  EXPECT_EQ(viewer_stop.status, 403);

  // EventSource cannot set headers, and a token in a URL would end up in
  // logs: tokens in URLs are refused, a single-use ticket opens the stream.
  HttpResponse in_url =
      Send("GET", "/api/events/" + id + "?token=viewer-token");
  EXPECT_EQ(in_url.status, 401);
  EXPECT_THAT(in_url.body, HasSubstr("not taken from URLs"));
  EXPECT_EQ(Send("POST", "/api/tickets?for=/api/events/" + id).status, 401);
  EXPECT_EQ(Send("POST", "/api/tickets?for=/api/jobs", "", viewer).status, 400);
  auto ticket_for = [&](const std::string& path) {
    HttpResponse issued = Send("POST", "/api/tickets?for=" + path, "", viewer);
    EXPECT_EQ(issued.status, 200) << issued.body;
    const size_t start = issued.body.find("\"ticket\":\"") + 10;
    return issued.body.substr(start, 64);
  };
  const std::string other = ticket_for("/api/events/job-other");
  EXPECT_EQ(Send("GET", "/api/events/" + id + "?ticket=" + other).status,
            401);  // for another path
  const std::string ticket = ticket_for("/api/events/" + id);
  HttpConnection events(port_);
  events.Send("GET /api/events/" + id + "?ticket=" + ticket +
              " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  ASSERT_TRUE(events.ReadUntil("id: 1\n"));
  HttpResponse again = Send("GET", "/api/events/" + id + "?ticket=" + ticket);
  EXPECT_EQ(again.status, 401);  // single use
  EXPECT_THAT(again.body, HasSubstr("used"));

  EXPECT_EQ(Send("POST", "/api/jobs/" + id + "/cancel", "", op).status, 200);
  ASSERT_TRUE(events.ReadUntil("event: end"));
  EXPECT_THAT(events.buffer(), HasSubstr("JOB_STATE_CANCELLED"));
}

// Every route the dashboard serves, read from its HTTP server so that a
// route added later is covered too, refuses a request without a token and
// one with an unknown token (401). Only the page and its files are public.
TEST_F(DashboardTest, EveryApiRouteNeedsAToken) {
  Start("viewer-token,grafana,viewer\n");
  const std::set<std::pair<std::string, std::string>> kPublic = {{"GET", "/"}};
  const auto routes = server_->dashboard_http()->Routes();
  ASSERT_GE(routes.size(), 6u);
  int checked = 0;
  for (const auto& [method, route] : routes) {
    if (kPublic.count({method, route})) continue;
    // A prefix route is tried below it, as "/api/jobs/" serves
    // "/api/jobs/ID" and "/api/jobs/ID/cancel".
    std::vector<std::string> paths = {route};
    if (absl::EndsWith(route, "/")) {
      paths = {route + "job-x", route + "job-x/cancel"};
    }
    for (const std::string& path : paths) {
      SCOPED_TRACE(method + " " + path);
      EXPECT_EQ(Send(method, path).status, 401);
      EXPECT_EQ(Send(method, path, "", "Authorization: Bearer nope\r\n").status,
                401);
      EXPECT_EQ(Send(method, path, "", "Authorization: Basic eDp5\r\n").status,
                401);
      ++checked;
    }
  }
  EXPECT_GE(checked, 8);
}

TEST(DashboardStartTest, OtherMachinesNeedTokensOrInsecure) {
  testing::TempDir dir;
  testing::FakeRunner runner;
  service::Server::Options options;
  options.listen = "127.0.0.1:0";
  options.http_listen = "0.0.0.0:0";
  options.data_dir = dir.path();
  options.runner = &runner;
  auto refused = service::Server::Start(options);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr("--http_listen=0.0.0.0:0"));
  options.insecure = true;
  auto insecure = service::Server::Start(options);
  ASSERT_TRUE(insecure.ok()) << insecure.status();
  EXPECT_GT((*insecure)->http_port(), 0);
}

}  // namespace
}  // namespace yolohook::dashboard
