// The yolohookd server, wired: job store, event bus, job manager, the gRPC
// services (jobs, callbacks, predict, health, reflection) and, optionally,
// Prometheus metrics over HTTP. Used by
// server/main.cc and by tests, which start it in-process on a free port.
#ifndef YOLOHOOK_SERVER_SERVICE_SERVER_H_
#define YOLOHOOK_SERVER_SERVICE_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/auth/token_store.h"
#include "server/common/dir_lock.h"
#include "server/dashboard/dashboard.h"
#include "server/events/event_bus.h"
#include "server/http/http_server.h"
#include "server/jobs/job_manager.h"
#include "server/jobs/job_store.h"
#include "server/monitoring/metrics.h"
#include "server/service/auth.h"
#include "server/service/server_metrics.h"
#include "yolohook/v1/info.pb.h"

namespace yolohook::service {

class Server {
 public:
  struct Options {
    // host:port; port 0 picks a free one
    std::string listen = "127.0.0.1:50051";
    // store, datasets and runs ("" = engine default)
    std::string data_dir;
    // LibTorch threads per job (0 = cores / concurrency)
    int threads = 0;
    // queued jobs running at once
    int concurrency = 1;
    // queued jobs before RESOURCE_EXHAUSTED
    int max_queued = 64;
    // interceptors' default
    absl::Duration reply_timeout = absl::Seconds(5);
    // cap, extensions included
    absl::Duration max_reply_timeout = absl::Seconds(60);
    // messages per subscription before LAGGING
    size_t queue_limit = 1024;
    // Messages a Connect stream whose client sends Acks may have
    // unacknowledged (see HookServiceImpl).
    int64_t stream_window = 256;
    // gRPC receive limit (inline images)
    int max_message_bytes = 64 << 20;
    // host:port serving GET /metrics (Prometheus text format) over plain
    // HTTP, without authentication; "" = off; port 0 picks a free one.
    std::string metrics_listen;
    // The browser dashboard and its JSON / Server-Sent Events API, host:port
    // (port 0 picks a free one); "" = off.
    std::string http_listen;
    // Bearer tokens, `token,name,role` per line ("" = no authentication:
    // every client is an admin). Reloaded by ReloadTokens and when it
    // changes on disk.
    std::string token_file;
    // How often the token file is checked for changes (zero or infinite:
    // only ReloadTokens reloads it).
    absl::Duration token_file_check = absl::Seconds(2);
    // PEM certificate chain; with tls_key: TLS
    std::string tls_cert;
    // PEM private key of tls_cert
    std::string tls_key;
    // PEM CA; clients need a certificate it signed
    std::string tls_client_ca;
    // Serve a non-loopback address without a token file anyway.
    bool insecure = false;
    // Directories besides data_dir that jobs may name (datasets, models);
    // every path a job names must resolve inside one of them or data_dir.
    std::vector<std::string> allowed_roots;
    // per Connect stream; RESOURCE_EXHAUSTED
    size_t max_subscriptions = 64;
    // inline images per request
    int max_images = 256;
    // width x height of an inline image or a frame
    int64_t max_image_pixels = 40'000'000;
    // Finished jobs the store keeps, with their events: by age, jobs
    // started by Predict or PredictStream for less, and at most
    // max_finished_jobs of them (zero: no limit of that kind).
    absl::Duration job_retention = absl::Hours(24 * 30);
    absl::Duration predict_retention = absl::Minutes(10);
    int64_t max_finished_jobs = 10000;
    // The store's size limit in bytes (0: none): retention deletes the
    // oldest finished jobs past 80% of it; writes past it fail with
    // RESOURCE_EXHAUSTED.
    int64_t max_store_bytes = int64_t{4} << 30;
    // Receives the server's log lines (job states, audit), without trailing
    // newlines. Null: stdout.
    std::function<void(absl::string_view line)> log;
    // Runs jobs; null: the YOLO engine. Tests pass a fake. Must outlive the
    // server.
    jobs::Runner* runner = nullptr;
  };

  // Locks data_dir (one server per data directory), opens the store under it,
  // recovers interrupted jobs, and starts serving. Errors:
  // FAILED_PRECONDITION when another server holds data_dir (naming its pid)
  // or data_dir is read-only; the store's; the token file's (naming file and
  // line); INVALID_ARGUMENT naming the flag and file for TLS files that are
  // missing, unreadable or not PEM; INVALID_ARGUMENT for a bad data_dir or
  // allowed root; FAILED_PRECONDITION for a non-loopback listen address without
  // token_file or insecure; UNAVAILABLE when the address (or metrics_listen)
  // cannot be bound; INVALID_ARGUMENT for a malformed metrics_listen.
  static absl::StatusOr<std::unique_ptr<Server>> Start(Options options);
  ~Server();

  // What a server started with `options` reports through
  // InfoService.GetServerInfo and the dashboard's /api/info.
  static v1::ServerInfo InfoFor(const Options& options);

  // The port actually bound.
  int port() const { return port_; }
  std::string address() const;
  // The dashboard's port and address (0 and "" when http_listen is off).
  int http_port() const {
    return dashboard_http_ != nullptr ? dashboard_http_->port() : 0;
  }
  std::string http_address() const;
  // The dashboard's HTTP server (null when http_listen is off): tests walk
  // its routes.
  const http::Server* dashboard_http() const { return dashboard_http_.get(); }
  jobs::JobManager& manager() { return *manager_; }
  events::EventBus& bus() { return *bus_; }
  // The server's metrics, as GET /metrics renders them.
  monitoring::Registry& metrics() { return *registry_; }
  // The port serving /metrics; 0 when metrics_listen is "".
  int metrics_port() const { return http_ == nullptr ? 0 : http_->port(); }

  // Loads the token file again (what SIGHUP does): added tokens work at once,
  // removed ones stop working, and streams opened with them end. On error
  // (naming file and line) the clients loaded before stay in force; the
  // outcome is logged either way. FAILED_PRECONDITION without a token file.
  absl::Status ReloadTokens();

  // Drains: health reports NOT_SERVING, queued jobs are interrupted, running
  // ones stop at their next batch (train jobs keep last.pt from the last
  // finished epoch and resume at the next start), subscriptions end with
  // SHUTDOWN, then RPCs get `grace` to finish. Idempotent.
  void Shutdown(absl::Duration grace = absl::Seconds(5));
  // Blocks until Shutdown.
  void Wait();

 private:
  Server() = default;
  // Serves the dashboard on options_.http_listen. Errors:
  // FAILED_PRECONDITION for a non-loopback address without a token file or
  // insecure; the HTTP server's (naming --http_listen).
  absl::Status StartDashboard();
  // The token file watcher's thread: reloads when the file changed.
  void WatchTokenFile() ABSL_LOCKS_EXCLUDED(mu_);
  void LogTokenReload(const absl::Status& status) const;

  Options options_;
  // Held while the server runs: one server per data directory. Declared
  // before the store, so that it is released after the store is closed.
  std::unique_ptr<DirectoryLock> data_dir_lock_;
  // Declared first: collectors read the bus and store until http_ stops.
  std::unique_ptr<monitoring::Registry> registry_;
  std::unique_ptr<ServerMetrics> server_metrics_;
  std::unique_ptr<jobs::JobStore> store_;
  // The token file's clients (null: no authentication), for the gRPC services
  // (through authorizer_) and the dashboard.
  std::unique_ptr<auth::TokenRegistry> tokens_;
  std::thread token_watcher_;
  std::unique_ptr<Authorizer> authorizer_;
  std::unique_ptr<events::EventBus> bus_;
  std::unique_ptr<jobs::Runner> owned_runner_;
  std::unique_ptr<jobs::JobManager> manager_;
  std::vector<std::unique_ptr<grpc::Service>> services_;
  std::unique_ptr<grpc::Server> server_;
  // /metrics; null when off
  std::unique_ptr<http::Server> http_;
  int port_ = 0;
  // Declared after the manager and the bus: its handlers use them, so it is
  // shut down (Shutdown) and destroyed first.
  std::unique_ptr<dashboard::Dashboard> dashboard_;
  std::unique_ptr<http::Server> dashboard_http_;
  absl::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace yolohook::service

#endif  // YOLOHOOK_SERVER_SERVICE_SERVER_H_
