// A small embedded HTTP/1.1 server for operator endpoints (Prometheus
// metrics, a dashboard's JSON and Server-Sent Events). POSIX sockets, one
// thread per connection, no dependencies beyond abseil. Not a general web
// server: no TLS, no chunked request bodies, no HTTP/2.
//
//   http::Server::Options options;
//   options.listen = "127.0.0.1:9464";
//   http::Server server(options);
//   server.Handle("GET", "/metrics", [&](const http::Request&) {
//     http::Response response;
//     response.content_type = "text/plain; version=0.0.4";
//     response.body = registry.Render();
//     return response;
//   });
//   YH_RETURN_IF_ERROR(server.Start());
//
// What it speaks:
// - Requests: a request line, headers (at most max_header_bytes together) and
//   a body of Content-Length bytes (at most max_body_bytes). Keep-alive by
//   default on HTTP/1.1 ("Connection: close" ends it), opt-in on HTTP/1.0;
//   pipelined requests are answered in order.
// - Errors it answers itself, with a plain-text body naming the problem:
//   400 (malformed request line, header or Content-Length), 404 (no route),
//   405 (a route for the path but not the method; Allow lists the methods),
//   408 (a request not complete within read_timeout), 411 (Transfer-Encoding
//   on a request: send Content-Length instead), 413 (body over
//   max_body_bytes), 431 (headers over max_header_bytes), 500 (a handler
//   threw), 503 (max_connections already open), 505 (not HTTP/1.x).
// - HEAD is answered by the GET handler (not a streaming one) without the
//   body.
// - Streaming handlers (HandleStream) write a head, then bytes as they come
//   (Server-Sent Events); the connection closes when the handler returns.
#ifndef YOLOHOOK_SERVER_HTTP_HTTP_SERVER_H_
#define YOLOHOOK_SERVER_HTTP_HTTP_SERVER_H_

#include <atomic>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace yolohook::http {

using Headers = std::vector<std::pair<std::string, std::string>>;

// One parsed request, as handlers see it.
struct Request {
  // "GET", "POST", ... (HEAD reaches GET handlers as HEAD)
  std::string method;
  // percent-decoded, without the query
  std::string path;
  // raw, without the '?'
  std::string query;
  // in arrival order, names as sent
  Headers headers;
  // Content-Length bytes
  std::string body;
  // "ip:port" of the client
  std::string peer;

  // The first header called `name` (case-insensitive); "" when absent.
  std::string Header(absl::string_view name) const;
  // The first query parameter called `name`, percent-decoded ('+' is a
  // space); "" when absent.
  std::string Param(absl::string_view name) const;
  // Whether the query has a parameter called `name` (even an empty one).
  bool HasParam(absl::string_view name) const;
};

// What a handler answers. Content-Length and Connection are set by the
// server; headers must not repeat them.
struct Response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  Headers headers;
  std::string body;
};

// The sink of a streaming handler: write the head once, then bytes. The
// response has no Content-Length; the connection closes when the handler
// returns. Used by one handler thread at a time.
class StreamWriter {
 public:
  virtual ~StreamWriter() = default;
  // Sends the status line and headers. False when the peer has gone, the
  // server is shutting down, or the head was already sent.
  virtual bool WriteHead(int status, std::string content_type,
                         Headers headers = {}) = 0;
  // Sends bytes as they are (first a 200 text/event-stream head if none was
  // sent). False
  // once the peer has gone (or stopped reading for write_timeout) or the
  // server is shutting down; the handler should then return.
  virtual bool Write(absl::string_view bytes) = 0;
  // True once the peer has closed the connection or the server is shutting
  // down. Cheap, non-blocking; handlers waiting on their own source of data
  // should check it every second or so.
  virtual bool closed() const = 0;
  // Waits up to `timeout` for closed() to become true and returns it: for
  // handlers that only sleep between writes (heartbeats).
  virtual bool WaitClosed(absl::Duration timeout) = 0;
};

using Handler = std::function<Response(const Request&)>;
using StreamHandler = std::function<void(const Request&, StreamWriter&)>;

// Serves registered routes on one listening socket. Owns its threads: one
// accepting, one per open connection (at most max_connections; beyond that a
// connection gets 503 and is closed). Thread-safe.
//
// Handlers run on connection threads, several at once; they must be
// thread-safe and must not call Shutdown. A streaming handler must return
// soon after closed() turns true: Shutdown waits for it.
class Server {
 public:
  struct Options {
    // host:port to listen on ("127.0.0.1:9464", "[::1]:0", ":9464" for every
    // interface); port 0 picks a free one.
    std::string listen = "127.0.0.1:0";
    // Open connections served at once; more get 503 and are closed.
    int max_connections = 64;
    // Request line and headers together, bytes; more is 431.
    size_t max_header_bytes = 16 << 10;
    // Request body, bytes; more is 413.
    size_t max_body_bytes = 1 << 20;
    // Time for a whole request once its first byte arrived; then 408.
    absl::Duration read_timeout = absl::Seconds(10);
    // Time a keep-alive connection may stay quiet between requests.
    absl::Duration idle_timeout = absl::Seconds(60);
    // Time a write may wait for a peer that does not read; then the
    // connection is dropped.
    absl::Duration write_timeout = absl::Seconds(10);
  };

  explicit Server(Options options);
  // Shuts down.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Routes `method` requests for `path` to `handler`. A path ending in '/'
  // is a prefix ("/api/" serves "/api/jobs/1"); otherwise it must match
  // exactly. Exact routes win, then the longest prefix. A later route for
  // the same method and path replaces the earlier one. May be called before
  // or after Start.
  void Handle(std::string method, std::string path, Handler handler)
      ABSL_LOCKS_EXCLUDED(mu_);
  // As Handle, for a streaming handler.
  void HandleStream(std::string method, std::string path, StreamHandler handler)
      ABSL_LOCKS_EXCLUDED(mu_);

  // The routes registered so far as (method, path) pairs, in registration
  // order; a path ending in '/' is a prefix. For tests that walk every route.
  std::vector<std::pair<std::string, std::string>> Routes() const
      ABSL_LOCKS_EXCLUDED(mu_);

  // Binds options.listen and starts serving. Errors: INVALID_ARGUMENT for an
  // unparsable address, UNAVAILABLE when it cannot be bound,
  // FAILED_PRECONDITION when already started.
  absl::Status Start() ABSL_LOCKS_EXCLUDED(mu_);

  // The port bound (0 before Start).
  int port() const { return port_.load(); }

  // Stops accepting, wakes every connection (streaming handlers see
  // closed()), and joins all threads. Idempotent.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Route;
  struct Connection;
  class Writer;

  // Adds `route`, replacing one for the same method and path.
  void AddRoute(std::string method, std::string path,
                std::shared_ptr<Route> route) ABSL_LOCKS_EXCLUDED(mu_);
  void AcceptLoop();
  void Serve(Connection* connection);
  // The route for a request; sets *status to 404 or 405 (with *allow)
  // when none fits.
  std::shared_ptr<const Route> FindRoute(absl::string_view method,
                                         absl::string_view path, int* status,
                                         std::string* allow) const
      ABSL_LOCKS_EXCLUDED(mu_);
  void ReapLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  std::atomic<int> port_{0};
  std::atomic<bool> stopping_{false};
  int listen_fd_ = -1;
  // readable once Shutdown starts: wakes every poll
  int wake_read_ = -1;
  int wake_write_ = -1;
  std::thread acceptor_;

  mutable absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::shared_ptr<const Route>> routes_ ABSL_GUARDED_BY(mu_);
  std::list<std::unique_ptr<Connection>> connections_ ABSL_GUARDED_BY(mu_);
};

// The reason phrase of an HTTP status code ("Not Found"); "" when unknown.
absl::string_view StatusReason(int status);

// Decodes %XX escapes (and '+' as a space when `plus_is_space`). False on a
// malformed escape.
bool PercentDecode(absl::string_view in, bool plus_is_space, std::string* out);

}  // namespace yolohook::http

#endif  // YOLOHOOK_SERVER_HTTP_HTTP_SERVER_H_
