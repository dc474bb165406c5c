// The browser dashboard's server side: the page (compiled in) and a small
// JSON + Server-Sent Events bridge to the job manager and the event bus, on
// an http::Server. A thin adapter like server/service: no torch, no gRPC.
//
//   GET  /                        the page (index.html, app.js, style.css)
//   GET  /api/whoami              {"name", "role", "auth"} of the caller
//   GET  /api/info                ServerInfo: the event catalogue, job
//                                 arguments, hyperparameters, limits
//   GET  /api/jobs                ListJobsResponse (?state=RUNNING,QUEUED
//                                 &page_size=N&page_token=T); no results
//   POST /api/jobs                SubmitJobRequest -> Job       (operator)
//   GET  /api/jobs/ID             Job
//   POST /api/jobs/ID/cancel      CancelJob -> Job              (operator)
//   POST /api/tickets?for=PATH    {"ticket", "expires_in"}: a single-use
//                                 ticket that opens PATH (/api/events/ID)
//                                 once, within a minute
//   GET  /api/events/ID           the job's events as text/event-stream:
//                                 "id: <seq>", "event: <name>", "data: <the
//                                 wire Event as JSON>"; resumes after the
//                                 Last-Event-ID header (or ?last_event_id=);
//                                 ?images=1 attaches predictor frames (JPEG);
//                                 ?events=a,b only those events. Ends with an
//                                 "end" event {job_id, state, last_seq} once a
//                                 finished job's events were all sent.
//
// Messages are protobuf's JSON mapping of the yolohook.v1 messages with the
// proto's field names. Errors are {"error": {"code", "message"}} with the
// HTTP status of the code (400, 401, 403, 404, 409, 429, 503).
//
// Auth (when a token file is given): every /api/ request needs a bearer
// token in an `Authorization: Bearer <token>` header. A browser's EventSource
// cannot set headers, and a token in a URL ends up in proxy and access logs,
// so an event stream may instead carry `?ticket=` from POST /api/tickets
// (issued to the token's client, for that path, used up when the stream
// opens). Viewers may read; submitting and cancelling need the operator role.
// The page's files are public (they hold no data).
#ifndef YOLOHOOK_SERVER_DASHBOARD_DASHBOARD_H_
#define YOLOHOOK_SERVER_DASHBOARD_DASHBOARD_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/auth/ticket_book.h"
#include "server/auth/token_registry.h"
#include "server/events/event_bus.h"
#include "server/http/http_server.h"
#include "server/jobs/job_manager.h"
#include "yolohook/v1/info.pb.h"

namespace yolohook::dashboard {

// Registers its routes on an http::Server and serves them on the server's
// connection threads. Thread-safe. The manager, the bus and the token store
// must outlive the http::Server's last request (shut the http::Server down
// before them).
class Dashboard {
 public:
  struct Options {
    // jobs to list, submit and cancel
    jobs::JobManager* manager = nullptr;
    // events to stream
    events::EventBus* bus = nullptr;
    // Bearer tokens and roles; null: no authentication (every caller is an
    // admin).
    const auth::TokenRegistry* tokens = nullptr;
    // How long an event-stream ticket stays good.
    absl::Duration ticket_lifetime = absl::Seconds(60);
    // An SSE comment is sent after this much silence, so that proxies keep
    // the stream open and a vanished browser is noticed.
    absl::Duration heartbeat = absl::Seconds(15);
    // What GET /api/info answers (the server's catalogue and limits).
    v1::ServerInfo info;
  };

  explicit Dashboard(Options options);

  // Adds the page and the /api/ routes to `server`.
  void Register(http::Server& server);

 private:
  // The caller, from the request's token: UNAUTHENTICATED without a valid
  // one, PERMISSION_DENIED when its role is below `need`.
  absl::StatusOr<auth::Principal> Authorize(const http::Request& request,
                                            auth::Role need) const;

  http::Response Page(const http::Request& request) const;
  http::Response WhoAmI(const http::Request& request) const;
  http::Response Info(const http::Request& request) const;
  http::Response ListJobs(const http::Request& request) const;
  http::Response SubmitJob(const http::Request& request) const;
  http::Response GetJob(const http::Request& request) const;
  http::Response CancelJob(const http::Request& request) const;
  http::Response IssueTicket(const http::Request& request) const;
  void StreamEvents(const http::Request& request,
                    http::StreamWriter& writer) const;

  const Options options_;
  // Thread-safe; issued and redeemed by const handlers.
  mutable auth::TicketBook tickets_;
};

}  // namespace yolohook::dashboard

#endif  // YOLOHOOK_SERVER_DASHBOARD_DASHBOARD_H_
