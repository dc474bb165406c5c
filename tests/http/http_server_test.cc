#include "server/http/http_server.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "tests/testing/http_client.h"

namespace yolohook::http {
namespace {

using testing::HttpConnection;
using testing::HttpGet;
using testing::HttpResponse;

class HttpServerTest : public ::testing::Test {
 protected:
  // Starts a server with a few routes; `options` may shrink its limits.
  void StartServer(Server::Options options = {}) {
    server_ = std::make_unique<Server>(options);
    server_->Handle("GET", "/hello", [](const Request& request) {
      Response response;
      response.body = absl::StrCat("hello ", request.Param("name"));
      response.headers.emplace_back("X-Peer-Known",
                                    request.peer.empty() ? "no" : "yes");
      return response;
    });
    server_->Handle("POST", "/echo", [](const Request& request) {
      Response response;
      response.content_type = request.Header("content-type");
      response.body = request.body;
      return response;
    });
    server_->Handle("GET", "/api/", [](const Request& request) {
      Response response;
      response.body = "api " + request.path;
      return response;
    });
    server_->Handle("GET", "/throws", [](const Request&) -> Response {
      throw std::runtime_error("boom");
    });
    ASSERT_TRUE(server_->Start().ok());
    ASSERT_GT(server_->port(), 0);
  }

  std::unique_ptr<Server> server_;
};

TEST_F(HttpServerTest, GetReturnsTheHandlersResponse) {
  StartServer();
  HttpResponse response = HttpGet(server_->port(), "/hello?name=a%20b+c");
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.body, "hello a b c");
  EXPECT_EQ(response.Header("Content-Type"), "text/plain; charset=utf-8");
  EXPECT_EQ(response.Header("X-Peer-Known"), "yes");
}

TEST_F(HttpServerTest, HeadAnswersWithTheLengthButNoBody) {
  StartServer();
  HttpConnection connection(server_->port());
  ASSERT_TRUE(connection.Send("HEAD /hello?name=x HTTP/1.1\r\n\r\n"));
  HttpResponse head = connection.Read(/*head_only=*/true);
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.Header("Content-Length"), "7");
  // The next response on the connection starts right away: no body was sent.
  ASSERT_TRUE(connection.Send("GET /hello?name=y HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(connection.Read().body, "hello y");
}

TEST_F(HttpServerTest, PostBodyReachesTheHandler) {
  StartServer();
  HttpConnection connection(server_->port());
  ASSERT_TRUE(connection.Send(
      "POST /echo HTTP/1.1\r\nContent-Type: application/json\r\n"
      "Content-Length: 11\r\n\r\n{\"a\": true}"));
  HttpResponse response = connection.Read();
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.body, "{\"a\": true}");
  EXPECT_EQ(response.Header("Content-Type"), "application/json");
}

TEST_F(HttpServerTest, KeepAliveServesTwoRequestsOnOneConnection) {
  StartServer();
  HttpConnection connection(server_->port());
  ASSERT_TRUE(connection.Send("GET /hello?name=1 HTTP/1.1\r\n\r\n"));
  HttpResponse first = connection.Read();
  EXPECT_EQ(first.body, "hello 1");
  EXPECT_EQ(first.Header("Connection"), "keep-alive");
  ASSERT_TRUE(connection.Send(
      "GET /hello?name=2 HTTP/1.1\r\nConnection: close\r\n\r\n"));
  HttpResponse second = connection.Read();
  EXPECT_EQ(second.body, "hello 2");
  EXPECT_EQ(second.Header("Connection"), "close");
  EXPECT_TRUE(connection.ReadUntilClosed());
}

TEST_F(HttpServerTest, PipelinedRequestsAreAnsweredInOrder) {
  StartServer();
  HttpConnection connection(server_->port());
  ASSERT_TRUE(connection.Send(
      "GET /hello?name=1 HTTP/1.1\r\n\r\nPOST /echo "
      "HTTP/1.1\r\nContent-Length: 2\r\n\r\nokGET /hello?name=3 "
      "HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(connection.Read().body, "hello 1");
  EXPECT_EQ(connection.Read().body, "ok");
  EXPECT_EQ(connection.Read().body, "hello 3");
}

TEST_F(HttpServerTest, Http10ClosesUnlessAskedToKeepAlive) {
  StartServer();
  HttpConnection connection(server_->port());
  ASSERT_TRUE(connection.Send("GET /hello HTTP/1.0\r\n\r\n"));
  EXPECT_EQ(connection.Read().status, 200);
  EXPECT_TRUE(connection.ReadUntilClosed());
}

TEST_F(HttpServerTest, BadRequestLineIs400) {
  StartServer();
  HttpConnection connection(server_->port());
  ASSERT_TRUE(connection.Send("this is not http\r\n\r\n"));
  HttpResponse response = connection.Read();
  EXPECT_EQ(response.status, 400);
  EXPECT_NE(response.body.find("malformed request line"), std::string::npos)
      << response.body;
  EXPECT_TRUE(connection.ReadUntilClosed());
}

TEST_F(HttpServerTest, MalformedHeadersAndVersionsAreRejected) {
  StartServer();
  struct Case {
    const char* request;
    int status;
  };
  for (const Case& c : {
           Case{"GET /hello HTTP/1.1\r\nno colon here\r\n\r\n", 400},
           Case{"GET /hello HTTP/1.1\r\nBad Name: x\r\n\r\n", 400},
           Case{"GET /hello HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400},
           Case{"POST /echo HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400},
           Case{"POST /echo HTTP/1.1\r\nContent-Length: 1\r\n"
                "Content-Length: 2\r\n\r\n",
                400},
           Case{"GET hello HTTP/1.1\r\n\r\n", 400},
           Case{"GET /a%zz HTTP/1.1\r\n\r\n", 400},
           Case{"GET /hello HTTP/2.0\r\n\r\n", 505},
           Case{"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                "2\r\nok\r\n0\r\n\r\n",
                411},
       }) {
    HttpConnection connection(server_->port());
    ASSERT_TRUE(connection.Send(c.request));
    HttpResponse response = connection.Read();
    EXPECT_EQ(response.status, c.status) << c.request;
    EXPECT_FALSE(response.body.empty()) << c.request;
  }
}

TEST_F(HttpServerTest, OversizedHeaderIs431) {
  Server::Options options;
  options.max_header_bytes = 1024;
  StartServer(options);
  HttpConnection connection(server_->port());
  ASSERT_TRUE(connection.Send(
      "GET /hello HTTP/1.1\r\nX-Big: " + std::string(4000, 'a') + "\r\n\r\n"));
  HttpResponse response = connection.Read();
  EXPECT_EQ(response.status, 431);
  EXPECT_NE(response.body.find("1024 bytes"), std::string::npos)
      << response.body;
}

TEST_F(HttpServerTest, OversizedBodyIs413) {
  Server::Options options;
  options.max_body_bytes = 100;
  StartServer(options);
  HttpConnection connection(server_->port());
  ASSERT_TRUE(
      connection.Send("POST /echo HTTP/1.1\r\nContent-Length: 101\r\n\r\n" +
                      std::string(101, 'x')));
  HttpResponse response = connection.Read();
  EXPECT_EQ(response.status, 413);
  EXPECT_NE(response.body.find("exceeds 100 bytes"), std::string::npos)
      << response.body;
}

TEST_F(HttpServerTest, IncompleteRequestTimesOutWith408) {
  Server::Options options;
  options.read_timeout = absl::Milliseconds(200);
  StartServer(options);
  HttpConnection connection(server_->port());
  ASSERT_TRUE(connection.Send("GET /hello HTTP/1.1\r\nHost: x"));
  EXPECT_EQ(connection.Read().status, 408);
  EXPECT_TRUE(connection.ReadUntilClosed());
}

TEST_F(HttpServerTest, QuietKeepAliveConnectionsAreClosedAfterTheIdleTimeout) {
  Server::Options options;
  options.idle_timeout = absl::Milliseconds(200);
  StartServer(options);
  HttpConnection connection(server_->port());
  ASSERT_TRUE(connection.Send("GET /hello HTTP/1.1\r\n\r\n"));
  ASSERT_EQ(connection.Read().status, 200);
  EXPECT_TRUE(connection.ReadUntilClosed());  // without sending anything
}

TEST_F(HttpServerTest, UnknownPathIs404) {
  StartServer();
  HttpResponse response = HttpGet(server_->port(), "/nothing");
  EXPECT_EQ(response.status, 404);
  EXPECT_NE(response.body.find("/nothing"), std::string::npos);
}

TEST_F(HttpServerTest, WrongMethodIs405AndListsTheAllowedOnes) {
  StartServer();
  HttpConnection connection(server_->port());
  ASSERT_TRUE(connection.Send("DELETE /hello HTTP/1.1\r\n\r\n"));
  HttpResponse response = connection.Read();
  EXPECT_EQ(response.status, 405);
  EXPECT_EQ(response.Header("Allow"), "GET, HEAD");
}

TEST_F(HttpServerTest, PrefixRoutesServeTheirSubtree) {
  StartServer();
  EXPECT_EQ(HttpGet(server_->port(), "/api/jobs/1").body, "api /api/jobs/1");
  EXPECT_EQ(HttpGet(server_->port(), "/api").status, 404);
}

TEST_F(HttpServerTest, HandlerExceptionIs500) {
  StartServer();
  HttpResponse response = HttpGet(server_->port(), "/throws");
  EXPECT_EQ(response.status, 500);
  EXPECT_NE(response.body.find("boom"), std::string::npos);
}

TEST_F(HttpServerTest, ConnectionsBeyondTheLimitGet503) {
  Server::Options options;
  options.max_connections = 1;
  StartServer(options);
  HttpConnection first(server_->port());
  ASSERT_TRUE(first.Send("GET /hello HTTP/1.1\r\n\r\n"));
  ASSERT_EQ(first.Read().status, 200);  // accepted and still open
  HttpConnection second(server_->port());
  HttpResponse refused = second.Read();
  EXPECT_EQ(refused.status, 503);
  EXPECT_NE(refused.body.find("too many connections"), std::string::npos);
  // The first connection still works.
  ASSERT_TRUE(first.Send("GET /hello?name=again HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(first.Read().body, "hello again");
}

TEST_F(HttpServerTest, StreamingHandlerSeesClosedAfterTheClientDisconnects) {
  absl::Notification saw_closed;
  Server server({});
  server.HandleStream("GET", "/events", [&](const Request&, StreamWriter& w) {
    w.WriteHead(200, "text/event-stream", {{"Cache-Control", "no-cache"}});
    w.Write("data: hello\n\n");
    while (!w.WaitClosed(absl::Seconds(1))) {
    }
    EXPECT_FALSE(w.Write("data: late\n\n"));
    saw_closed.Notify();
  });
  ASSERT_TRUE(server.Start().ok());
  HttpConnection connection(server.port());
  ASSERT_TRUE(connection.Send("GET /events HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(connection.ReadUntil("data: hello\n\n"));
  EXPECT_NE(connection.buffer().find("Content-Type: text/event-stream"),
            std::string::npos);
  EXPECT_EQ(connection.buffer().find("Content-Length"), std::string::npos);
  connection.Close();
  EXPECT_TRUE(saw_closed.WaitForNotificationWithTimeout(absl::Seconds(30)));
}

TEST_F(HttpServerTest, StreamingRoutesDoNotAnswerHead) {
  Server server({});
  server.HandleStream("GET", "/events",
                      [](const Request&, StreamWriter& w) { w.Write("x"); });
  ASSERT_TRUE(server.Start().ok());
  HttpConnection connection(server.port());
  ASSERT_TRUE(connection.Send("HEAD /events HTTP/1.1\r\n\r\n"));
  HttpResponse response = connection.Read(/*head_only=*/true);
  EXPECT_EQ(response.status, 405);
  EXPECT_EQ(response.Header("Allow"), "GET");
}

TEST_F(HttpServerTest, ShutdownEndsAnOpenStream) {
  absl::Notification handler_returned;
  Server server({});
  server.HandleStream("GET", "/ticks", [&](const Request&, StreamWriter& w) {
    while (w.Write("data: tick\n\n") && !w.WaitClosed(absl::Milliseconds(50))) {
    }
    EXPECT_TRUE(w.closed());
    handler_returned.Notify();
  });
  ASSERT_TRUE(server.Start().ok());
  HttpConnection connection(server.port());
  ASSERT_TRUE(connection.Send("GET /ticks HTTP/1.1\r\n\r\n"));
  ASSERT_TRUE(connection.ReadUntil("data: tick\n\n"));
  server.Shutdown();  // returns once the handler has
  EXPECT_TRUE(handler_returned.HasBeenNotified());
  EXPECT_TRUE(connection.ReadUntilClosed());
}

TEST_F(HttpServerTest, ShutdownClosesIdleKeepAliveConnections) {
  StartServer();
  HttpConnection connection(server_->port());
  ASSERT_TRUE(connection.Send("GET /hello HTTP/1.1\r\n\r\n"));
  ASSERT_EQ(connection.Read().status, 200);
  server_->Shutdown();
  EXPECT_TRUE(connection.ReadUntilClosed());
}

TEST(HttpServerStartTest, BadAddressesAreErrors) {
  Server::Options options;
  options.listen = "127.0.0.1";
  EXPECT_EQ(Server(options).Start().code(), absl::StatusCode::kInvalidArgument);
  options.listen = "127.0.0.1:99999";
  EXPECT_EQ(Server(options).Start().code(), absl::StatusCode::kInvalidArgument);

  Server first({});
  ASSERT_TRUE(first.Start().ok());
  options.listen = absl::StrCat("127.0.0.1:", first.port());
  absl::Status taken = Server(options).Start();
  EXPECT_EQ(taken.code(), absl::StatusCode::kUnavailable) << taken;
  EXPECT_EQ(first.Start().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(HttpRequestTest, HeadersAreCaseInsensitiveAndParamsDecoded) {
  Request request;
  request.headers = {{"Content-Type", "a"}, {"X-Two", "b"}};
  request.query = "a=1&b=x%2Fy&flag&c=%zz";
  EXPECT_EQ(request.Header("content-type"), "a");
  EXPECT_EQ(request.Header("missing"), "");
  EXPECT_EQ(request.Param("b"), "x/y");
  EXPECT_TRUE(request.HasParam("flag"));
  EXPECT_FALSE(request.HasParam("d"));
  EXPECT_EQ(request.Param("c"), "");
}

}  // namespace
}  // namespace yolohook::http
