// The fixture of the service tests: a yolohookd started in the test process on
// 127.0.0.1 (a port the OS picks) over a temporary data directory and, unless
// a test asks for the real engine, the fake one; a channel to it, the service
// stubs, and the server's log lines.
#ifndef YOLOHOOK_TESTS_TESTING_SERVER_TEST_H_
#define YOLOHOOK_TESTS_TESTING_SERVER_TEST_H_

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "server/service/server.h"
#include "tests/testing/fake_runner.h"
#include "tests/testing/temp_dir.h"
#include "yolohook/v1/info.grpc.pb.h"
#include "yolohook/v1/jobs.grpc.pb.h"
#include "yolohook/v1/predict.grpc.pb.h"

namespace yolohook::testing {

class ServerTest : public ::testing::Test {
 protected:
  // The server goes first: it logs while it shuts down.
  ~ServerTest() override { StopServer(); }

  // Starts the server (after stopping one already running) with `options`,
  // filling in what a test leaves at its default: listen on 127.0.0.1:0,
  // data_dir under the test's temporary directory, the fake engine (unless
  // real_engine), and a log that StartServer's caller can read with Log().
  // Fails the test when the server does not start.
  void StartServer(service::Server::Options options = {},
                   bool real_engine = false) {
    StopServer();
    if (options.listen == service::Server::Options().listen)
      options.listen = "127.0.0.1:0";
    if (options.data_dir.empty()) options.data_dir = dir_.Sub("data");
    if (options.runner == nullptr && !real_engine) options.runner = &runner_;
    if (!options.log) {
      options.log = [this](absl::string_view line) {
        absl::MutexLock lock(&log_mu_);
        log_.emplace_back(line);
      };
    }
    auto server = service::Server::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    channel_ = grpc::CreateChannel(server_->address(),
                                   grpc::InsecureChannelCredentials());
    jobs_ = v1::JobService::NewStub(channel_);
    predict_ = v1::PredictService::NewStub(channel_);
    info_ = v1::InfoService::NewStub(channel_);
  }

  // Shuts the server down (its jobs are interrupted), if one runs.
  void StopServer() {
    if (server_ == nullptr) return;
    server_->Shutdown();
    server_.reset();
  }

  // Every line the server logged so far.
  std::vector<std::string> Log() {
    absl::MutexLock lock(&log_mu_);
    return log_;
  }

  // The lines the server logged about `job_id`, without the "[job_id] "
  // prefix.
  std::vector<std::string> LogOf(const std::string& job_id) {
    const std::string prefix = absl::StrCat("[", job_id, "] ");
    std::vector<std::string> out;
    for (const std::string& line : Log()) {
      if (absl::StartsWith(line, prefix))
        out.push_back(line.substr(prefix.size()));
    }
    return out;
  }

  TempDir dir_;
  FakeRunner runner_;
  std::unique_ptr<service::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::JobService::Stub> jobs_;
  std::unique_ptr<v1::PredictService::Stub> predict_;
  std::unique_ptr<v1::InfoService::Stub> info_;

 private:
  absl::Mutex log_mu_;
  std::vector<std::string> log_ ABSL_GUARDED_BY(log_mu_);
};

}  // namespace yolohook::testing

#endif  // YOLOHOOK_TESTS_TESTING_SERVER_TEST_H_
