// The C++ client with bearer tokens, TLS and mutual TLS against a real server
// on 127.0.0.1, with certificates made by the test.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <string>

#include "client/cpp/client.h"
#include "server/service/server.h"
#include "tests/testing/fake_runner.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/test_certs.h"

namespace yolohook {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

class ClientAuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto certs = testing::MakeTestCerts(dir_.path());
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = *certs;
    tokens_ = dir_.Sub("tokens.csv");
    std::ofstream(tokens_) << "view-token,grafana,viewer\n"
                              "op-token,ci,operator\n";
    std::ofstream(dir_.Sub("viewer.token")) << "view-token\n";
    std::ofstream(dir_.Sub("operator.token")) << "\n  op-token  \n";
  }

  // Starts the server; `options` gets listen, data_dir and runner here.
  void StartServer(service::Server::Options options) {
    options.listen = "127.0.0.1:0";
    options.data_dir = dir_.Sub("data");
    options.runner = &runner_;
    auto server = service::Server::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }

  Client::Options ClientOptions() const {
    Client::Options options;
    options.target = server_->address();
    options.rpc_timeout = absl::Seconds(20);
    options.subscribe_timeout = absl::Seconds(20);
    options.on_error = [](const absl::Status&) {};
    return options;
  }

  static absl::StatusCode ListCode(Client::Options options) {
    Client client(std::move(options));
    return client.List({}).status().code();
  }

  testing::TempDir dir_;
  testing::TestCerts certs_;
  std::string tokens_;
  testing::FakeRunner runner_;
  std::unique_ptr<service::Server> server_;
};

TEST_F(ClientAuthTest, TlsClientConnectsAndPlaintextDoesNot) {
  service::Server::Options options;
  options.tls_cert = certs_.server_cert;
  options.tls_key = certs_.server_key;
  StartServer(options);

  Client::Options tls = ClientOptions();
  tls.tls_ca_file = certs_.ca;
  EXPECT_EQ(ListCode(tls), absl::StatusCode::kOk);
  // By the name on the certificate instead of the address.
  tls.tls_server_name = "localhost";
  EXPECT_EQ(ListCode(tls), absl::StatusCode::kOk);

  EXPECT_EQ(ListCode(ClientOptions()), absl::StatusCode::kUnavailable);
  Client::Options wrong_ca = ClientOptions();
  wrong_ca.tls_ca_file = dir_.Sub("other-ca.pem");
  EXPECT_EQ(ListCode(wrong_ca), absl::StatusCode::kUnavailable);
}

TEST_F(ClientAuthTest, MutualTlsNeedsAClientCertificateSignedByTheCa) {
  service::Server::Options options;
  options.tls_cert = certs_.server_cert;
  options.tls_key = certs_.server_key;
  options.tls_client_ca = certs_.ca;
  StartServer(options);

  Client::Options no_cert = ClientOptions();
  no_cert.tls_ca_file = certs_.ca;
  EXPECT_EQ(ListCode(no_cert), absl::StatusCode::kUnavailable);

  Client::Options other = no_cert;
  other.tls_cert_file = certs_.other_client_cert;
  other.tls_key_file = certs_.other_client_key;
  EXPECT_EQ(ListCode(other), absl::StatusCode::kUnavailable);

  Client::Options signed_cert = no_cert;
  signed_cert.tls_cert_file = certs_.client_cert;
  signed_cert.tls_key_file = certs_.client_key;
  EXPECT_EQ(ListCode(signed_cert), absl::StatusCode::kOk);
}

TEST_F(ClientAuthTest, TokensOverTlsDecideWhatTheClientMayDo) {
  service::Server::Options options;
  options.tls_cert = certs_.server_cert;
  options.tls_key = certs_.server_key;
  options.token_file = tokens_;
  StartServer(options);
  Client::Options base = ClientOptions();
  base.tls_ca_file = certs_.ca;

  Client anonymous(base);
  EXPECT_EQ(anonymous.List({}).status().code(),
            absl::StatusCode::kUnauthenticated);

  Client::Options viewer_options = base;
  viewer_options.token_file = dir_.Sub("viewer.token");
  Client viewer(viewer_options);
  EXPECT_TRUE(viewer.List({}).ok());
  absl::Status submit = viewer.Submit("train", {}).status();
  EXPECT_EQ(submit.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(submit.message(),
              AllOf(HasSubstr("SubmitJob"), HasSubstr("needs role operator")));
  CallbackOptions intercept;
  intercept.mode = CallbackOptions::kIntercept;
  EXPECT_EQ(viewer
                .AddCallback(
                    "on_train_end", [](EventContext&) {}, intercept)
                .code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(viewer.AddCallback("on_train_end", [](EventContext&) {}).ok());

  Client::Options operator_options = base;
  operator_options.token_file = dir_.Sub("operator.token");
  Client op(operator_options);
  EXPECT_TRUE(op.AddCallback(
                    "on_train_end", [](EventContext&) {}, intercept)
                  .ok());
  absl::StatusOr<v1::Job> job = op.Submit("train", {{"epochs", "1"}});
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_TRUE(op.Wait(job->id(), absl::Seconds(30)).ok());

  Client::Options wrong_options = base;
  wrong_options.token = "not-a-token";
  Client wrong(wrong_options);
  absl::Status refused =
      wrong.AddCallback("on_train_end", [](EventContext&) {});
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnauthenticated) << refused;
  EXPECT_THAT(refused.message(), HasSubstr("unknown token"));
}

TEST_F(ClientAuthTest, ACertificateTheTokenFileNamesHasItsRole) {
  // The client certificate's common name is test-client (test_certs.h).
  std::ofstream(tokens_) << "view-token,grafana,viewer\n"
                            "cert:test-client,trainer,operator\n";
  service::Server::Options options;
  options.tls_cert = certs_.server_cert;
  options.tls_key = certs_.server_key;
  options.tls_client_ca = certs_.ca;
  options.token_file = tokens_;
  StartServer(options);
  Client::Options with_cert = ClientOptions();
  with_cert.tls_ca_file = certs_.ca;
  with_cert.tls_cert_file = certs_.client_cert;
  with_cert.tls_key_file = certs_.client_key;
  {
    Client trainer(with_cert);  // no token: the certificate says who it is
    absl::StatusOr<v1::Job> job = trainer.Submit("train", {{"epochs", "1"}});
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_TRUE(trainer.Wait(job->id(), absl::Seconds(30)).ok());
  }
  {
    // A token, when given, decides instead.
    Client::Options viewer_options = with_cert;
    viewer_options.token = "view-token";
    Client viewer(viewer_options);
    EXPECT_EQ(viewer.Submit("train", {}).status().code(),
              absl::StatusCode::kPermissionDenied);
  }
  // A certificate the file does not name is refused, naming its identities.
  std::ofstream(tokens_) << "view-token,grafana,viewer\n"
                            "cert:someone-else,other,operator\n";
  ASSERT_TRUE(server_->ReloadTokens().ok());
  Client unknown(with_cert);
  absl::Status refused = unknown.List({}).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(refused.message(), AllOf(HasSubstr("\"test-client\""),
                                       HasSubstr("not in the token file")));
}

TEST_F(ClientAuthTest, UnusableFilesFailEveryCallNamingTheOption) {
  StartServer({});
  Client::Options missing = ClientOptions();
  missing.tls_ca_file = dir_.Sub("nowhere.pem");
  Client client(missing);
  absl::Status status = client.List({}).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(),
              AllOf(HasSubstr("tls_ca_file"), HasSubstr("nowhere.pem")));
  EXPECT_EQ(client.AddCallback("on_train_end", [](EventContext&) {}).code(),
            absl::StatusCode::kInvalidArgument);
  std::unique_ptr<FrameStream> stream = client.PredictStream({});
  EXPECT_FALSE(stream->Send(0, "a.jpg", "x"));
  EXPECT_EQ(stream->Finish().code(), absl::StatusCode::kInvalidArgument);

  Client::Options not_pem = ClientOptions();
  not_pem.tls_ca_file = tokens_;
  EXPECT_EQ(ListCode(not_pem), absl::StatusCode::kInvalidArgument);
  Client::Options half = ClientOptions();
  half.tls_ca_file = certs_.ca;
  half.tls_cert_file = certs_.client_cert;
  EXPECT_EQ(ListCode(half), absl::StatusCode::kInvalidArgument);
  Client::Options no_token = ClientOptions();
  no_token.token_file = dir_.Sub("missing.token");
  EXPECT_EQ(ListCode(no_token), absl::StatusCode::kInvalidArgument);
}

TEST(ServerTlsTest, BadTlsFilesStopTheServerNamingFlagAndFile) {
  testing::TempDir dir;
  auto certs = testing::MakeTestCerts(dir.path());
  ASSERT_TRUE(certs.ok()) << certs.status();
  testing::FakeRunner runner;
  auto start = [&](const std::string& cert, const std::string& key,
                   const std::string& ca) {
    service::Server::Options options;
    options.listen = "127.0.0.1:0";
    options.data_dir = dir.Sub("data");
    options.runner = &runner;
    options.tls_cert = cert;
    options.tls_key = key;
    options.tls_client_ca = ca;
    return service::Server::Start(options).status();
  };
  const std::string missing = dir.Sub("missing.pem");
  const std::string text = dir.Sub("server.ext");  // not PEM
  absl::Status s = start(missing, certs->server_key, "");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("--tls_cert=" + missing),
                                 HasSubstr("no such file")));
  s = start(certs->server_cert, text, "");
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr("--tls_key=" + text), HasSubstr("not a PEM")));
  s = start(certs->server_cert, certs->server_key, missing);
  EXPECT_THAT(s.message(), HasSubstr("--tls_client_ca=" + missing));
  s = start(certs->server_cert, "", "");
  EXPECT_THAT(s.message(), HasSubstr("--tls_cert and --tls_key go together"));
  s = start("", "", certs->ca);
  EXPECT_THAT(s.message(), HasSubstr("--tls_client_ca needs --tls_cert"));
  // The key where the certificate belongs.
  s = start(certs->server_key, certs->server_key, "");
  EXPECT_THAT(s.message(), HasSubstr("--tls_cert=" + certs->server_key));
}

}  // namespace
}  // namespace yolohook
