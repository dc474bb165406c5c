#include "server/service/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/common/dir_lock.h"
#include "server/common/status_macros.h"
#include "server/engine/config.h"
#include "server/engine/data/dataset_yaml.h"
#include "server/engine/data/frames.h"
#include "server/jobs/engine_runner.h"
#include "server/jobs/paths.h"
#include "server/service/hook_service.h"
#include "server/service/info_service.h"
#include "server/service/job_service.h"

namespace yolohook::service {

absl::StatusOr<std::unique_ptr<Server>> Server::Start(Options options) {
  std::unique_ptr<Server> s(new Server());
  if (!options.token_file.empty()) {
    absl::StatusOr<std::unique_ptr<auth::TokenRegistry>> loaded =
        auth::TokenRegistry::Load(options.token_file);
    if (!loaded.ok()) {
      return absl::Status(
          loaded.status().code(),
          absl::StrCat("--token_file: ", loaded.status().message()));
    }
    s->tokens_ = *std::move(loaded);
  } else if (!options.insecure && !IsLoopback(options.listen)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--listen=", options.listen,
        " accepts connections from other machines, but no --token_file is "
        "given, so anyone who reaches it may run jobs: pass "
        "--token_file=FILE (lines of token,name,role), listen on a loopback "
        "address (127.0.0.1:PORT), or pass --insecure to serve without "
        "authentication anyway"));
  }
  YH_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                      ServerCredentialsFor({options.tls_cert, options.tls_key,
                                            options.tls_client_ca}));
  s->authorizer_ = std::make_unique<Authorizer>(s->tokens_.get());

  Config defaults;
  defaults.data_dir = options.data_dir;
  options.data_dir = ResolveDataDir(defaults);
  s->options_ = options;
  std::error_code ec;
  std::filesystem::create_directories(options.data_dir, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("--data_dir=", options.data_dir, ": ", ec.message()));
  }
  // One server per data directory: the SQLite store is not shared.
  YH_ASSIGN_OR_RETURN(s->data_dir_lock_,
                      DirectoryLock::Acquire(options.data_dir));
  jobs::JobStore::Options store_options;
  store_options.max_bytes = options.max_store_bytes;
  YH_ASSIGN_OR_RETURN(
      s->store_,
      jobs::JobStore::Open(options.data_dir + "/yolohook.db", store_options));
  s->registry_ = std::make_unique<monitoring::Registry>();
  s->server_metrics_ = std::make_unique<ServerMetrics>(*s->registry_);
  ServerMetrics* metrics = s->server_metrics_.get();

  events::EventBus::Options bus;
  bus.queue_limit = options.queue_limit;
  bus.default_reply_timeout = options.reply_timeout;
  bus.max_reply_timeout = options.max_reply_timeout;
  bus.log = s->store_.get();
  bus.encode_jpeg = data::EncodeJpeg;
  bus.on_round_trip = [metrics](absl::Duration d) { metrics->RoundTrip(d); };
  bus.max_subscriptions_per_stream =
      std::max<size_t>(options.max_subscriptions, 1);
  bus.audit_log = options.log;
  s->bus_ = std::make_unique<events::EventBus>(bus);
  metrics->Watch(s->bus_.get(), s->store_.get());

  jobs::Runner* runner = options.runner;
  if (runner == nullptr) {
    jobs::EngineRunner::Options ro;
    ro.data_dir = options.data_dir;
    // Jobs running side by side share the cores rather than each taking all.
    ro.threads =
        options.threads > 0
            ? options.threads
            : std::max(1,
                       static_cast<int>(std::thread::hardware_concurrency()) /
                           std::max(1, options.concurrency));
    s->owned_runner_ = std::make_unique<jobs::EngineRunner>(ro);
    runner = s->owned_runner_.get();
  }
  jobs::JobManager::Options mo;
  mo.concurrency = options.concurrency;
  mo.max_queued = options.max_queued;
  mo.max_images = options.max_images;
  mo.max_image_pixels = options.max_image_pixels;
  mo.log = options.log;
  mo.retention.max_age = options.job_retention;
  mo.retention.direct_max_age = options.predict_retention;
  mo.retention.max_finished_jobs = options.max_finished_jobs;
  mo.retention.max_bytes = options.max_store_bytes / 10 * 8;
  YH_ASSIGN_OR_RETURN(
      PathPolicy paths,
      PathPolicy::Create(options.data_dir, options.allowed_roots,
                         data::DatasetFiles));
  mo.paths = std::make_shared<const PathPolicy>(std::move(paths));
  YH_ASSIGN_OR_RETURN(
      s->manager_,
      jobs::JobManager::Create(mo, s->store_.get(), runner, s->bus_.get()));

  s->services_.push_back(std::make_unique<JobServiceImpl>(
      s->manager_.get(), s->authorizer_.get(), metrics));
  s->services_.push_back(std::make_unique<PredictServiceImpl>(
      s->manager_.get(), s->authorizer_.get(), metrics));

  if (!options.metrics_listen.empty()) {
    http::Server::Options http_options;
    http_options.listen = options.metrics_listen;
    // Scrapers are few; a handful of connections is plenty.
    http_options.max_connections = 16;
    s->http_ = std::make_unique<http::Server>(http_options);
    monitoring::Registry* registry = s->registry_.get();
    s->http_->Handle("GET", "/metrics", [registry](const http::Request&) {
      http::Response response;
      response.content_type = std::string(monitoring::Registry::kContentType);
      response.body = registry->Render();
      return response;
    });
    absl::Status started = s->http_->Start();
    if (!started.ok()) {
      s->manager_->Shutdown(/*checkpoint=*/true);
      return absl::Status(started.code(), absl::StrCat("--metrics_listen: ",
                                                       started.message()));
    }
  }
  s->services_.push_back(std::make_unique<HookServiceImpl>(
      s->bus_.get(), s->authorizer_.get(), options.stream_window));
  s->services_.push_back(std::make_unique<InfoServiceImpl>(
      InfoFor(options), s->authorizer_.get()));

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // One server per port: with SO_REUSEPORT (gRPC's default) a second server
  // on a busy port would start and take a share of its connections.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(options.listen, credentials, &s->port_);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  for (auto& service : s->services_) builder.RegisterService(service.get());
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->port_ == 0) {
    s->manager_->Shutdown(/*checkpoint=*/true);
    if (s->http_ != nullptr) s->http_->Shutdown();
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on --listen=", options.listen,
        " (is another server using the port? one server per port)"));
  }
  s->server_->GetHealthCheckService()->SetServingStatus(true);
  if (s->tokens_ != nullptr &&
      options.token_file_check > absl::ZeroDuration() &&
      options.token_file_check != absl::InfiniteDuration()) {
    Server* self = s.get();
    s->token_watcher_ = std::thread([self] { self->WatchTokenFile(); });
  }

  if (!options.http_listen.empty()) {
    absl::Status http = s->StartDashboard();
    if (!http.ok()) {
      s->Shutdown(absl::ZeroDuration());
      return http;
    }
  }
  return s;
}

v1::ServerInfo Server::InfoFor(const Options& options) {
  const std::map<std::string, int64_t> limits = {
      {"queue_limit", static_cast<int64_t>(options.queue_limit)},
      {"stream_window", std::max<int64_t>(options.stream_window, 1)},
      {"max_subscriptions",
       static_cast<int64_t>(std::max<size_t>(options.max_subscriptions, 1))},
      {"default_reply_timeout_ms",
       absl::ToInt64Milliseconds(options.reply_timeout)},
      {"max_reply_timeout_ms",
       absl::ToInt64Milliseconds(options.max_reply_timeout)},
      {"max_message_bytes", options.max_message_bytes},
      {"max_queued", options.max_queued},
      {"max_images", options.max_images},
      {"max_image_pixels", options.max_image_pixels},
  };
  return MakeServerInfo(limits, !options.token_file.empty());
}

absl::Status Server::StartDashboard() {
  // The token file was loaded by Start.
  if (tokens_ == nullptr && !IsLoopback(options_.http_listen) &&
      !options_.insecure) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--http_listen=", options_.http_listen,
        " accepts connections from other machines: give --token_file, or "
        "--insecure to serve it without authentication"));
  }
  http::Server::Options http_options;
  http_options.listen = options_.http_listen;
  dashboard_http_ = std::make_unique<http::Server>(http_options);
  dashboard::Dashboard::Options dashboard_options;
  dashboard_options.manager = manager_.get();
  dashboard_options.bus = bus_.get();
  dashboard_options.tokens = tokens_.get();
  dashboard_options.info = InfoFor(options_);
  dashboard_ = std::make_unique<dashboard::Dashboard>(dashboard_options);
  dashboard_->Register(*dashboard_http_);
  absl::Status started = dashboard_http_->Start();
  if (!started.ok()) {
    return absl::Status(started.code(),
                        absl::StrCat("--http_listen=", options_.http_listen,
                                     ": ", started.message()));
  }
  return absl::OkStatus();
}

Server::~Server() { Shutdown(absl::ZeroDuration()); }

std::string Server::address() const {
  std::string host = options_.listen.substr(0, options_.listen.rfind(':'));
  return absl::StrCat(host, ":", port_);
}

std::string Server::http_address() const {
  if (dashboard_http_ == nullptr) return "";
  std::string host =
      options_.http_listen.substr(0, options_.http_listen.rfind(':'));
  if (host.empty()) host = "0.0.0.0";
  return absl::StrCat(host, ":", dashboard_http_->port());
}

absl::Status Server::ReloadTokens() {
  if (tokens_ == nullptr) {
    return absl::FailedPreconditionError(
        "no --token_file: authentication is off, there is nothing to reload");
  }
  absl::Status reloaded = tokens_->Reload();
  LogTokenReload(reloaded);
  return reloaded;
}

void Server::LogTokenReload(const absl::Status& status) const {
  const std::string line =
      status.ok() ? absl::StrCat("tokens: reloaded ", tokens_->path(), ", ",
                                 tokens_->size(), " clients")
                  : absl::StrCat("tokens: ", status.message(),
                                 "; the clients loaded before stay in force");
  if (options_.log) {
    options_.log(line);
  } else {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  }
}

void Server::WatchTokenFile() {
  absl::MutexLock lock(&mu_);
  while (!mu_.AwaitWithTimeout(absl::Condition(&shut_down_),
                               options_.token_file_check)) {
    mu_.Unlock();
    absl::StatusOr<bool> changed = tokens_->ReloadIfChanged();
    if (!changed.ok() || *changed) LogTokenReload(changed.status());
    mu_.Lock();
  }
}

void Server::Shutdown(absl::Duration grace) {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
  }
  if (token_watcher_.joinable()) token_watcher_.join();
  if (server_ != nullptr)
    server_->GetHealthCheckService()->SetServingStatus(false);
  if (manager_ != nullptr) manager_->Shutdown(/*checkpoint=*/true);
  if (bus_ != nullptr) bus_->Shutdown();
  // Event streams end with the bus; the dashboard's connections close.
  if (dashboard_http_ != nullptr) dashboard_http_->Shutdown();
  if (server_ != nullptr)
    server_->Shutdown(std::chrono::system_clock::now() +
                      absl::ToChronoSeconds(grace));
  if (http_ != nullptr) http_->Shutdown();
}

void Server::Wait() {
  if (server_ != nullptr) server_->Wait();
}

}  // namespace yolohook::service
