#include "server/dashboard/dashboard.h"

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "google/protobuf/util/json_util.h"
#include "server/common/limits.h"
#include "server/dashboard/assets.h"
#include "server/dashboard/event_feed.h"
#include "server/jobs/job.h"
#include "server/wire/conversions.h"
#include "yolohook/v1/jobs.pb.h"

namespace yolohook::dashboard {
namespace {

constexpr absl::string_view kJson = "application/json; charset=utf-8";
constexpr absl::string_view kJobsPrefix = "/api/jobs/";
constexpr absl::string_view kEventsPrefix = "/api/events/";

// A JSON string literal.
std::string Quote(absl::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += absl::StrFormat("\\u%04x", static_cast<int>(c));
        } else {
          out += c;
        }
    }
  }
  out += "\"";
  return out;
}

int HttpStatus(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

http::Response Json(int status, std::string body) {
  http::Response response;
  response.status = status;
  response.content_type = std::string(kJson);
  response.headers = {{"Cache-Control", "no-store"}};
  response.body = std::move(body);
  return response;
}

http::Response Error(const absl::Status& status) {
  http::Response response =
      Json(HttpStatus(status.code()),
           absl::StrCat("{\"error\":{\"code\":",
                        Quote(absl::StatusCodeToString(status.code())),
                        ",\"message\":", Quote(status.message()), "}}"));
  if (status.code() == absl::StatusCode::kUnauthenticated)
    response.headers.emplace_back("WWW-Authenticate", "Bearer");
  return response;
}

std::string ProtoJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions print;
  print.preserve_proto_field_names = true;
  print.always_print_primitive_fields = true;
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(message, &json, print).ok())
    return "{}";
  return json;
}

std::map<std::string, std::string> ToMap(
    const google::protobuf::Map<std::string, std::string>& in) {
  return std::map<std::string, std::string>(in.begin(), in.end());
}

// "RUNNING" or "JOB_STATE_RUNNING", any case.
absl::StatusOr<jobs::JobState> ParseState(absl::string_view text) {
  std::string name = absl::AsciiStrToUpper(absl::StripAsciiWhitespace(text));
  if (!absl::StartsWith(name, "JOB_STATE_")) name = "JOB_STATE_" + name;
  v1::JobState state;
  if (!v1::JobState_Parse(name, &state) || state == v1::JOB_STATE_UNSPECIFIED) {
    return absl::InvalidArgumentError(absl::StrCat(
        "state \"", text,
        "\" is not one of QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, "
        "INTERRUPTED"));
  }
  return jobs::StateFromProto(state);
}

// The job id in a path below `prefix` ("/api/jobs/ID" or "/api/jobs/ID/..."),
// and what follows it.
std::pair<std::string, std::string> SplitJobPath(absl::string_view path,
                                                 absl::string_view prefix) {
  absl::ConsumePrefix(&path, prefix);
  size_t slash = path.find('/');
  if (slash == absl::string_view::npos) return {std::string(path), ""};
  return {std::string(path.substr(0, slash)),
          std::string(path.substr(slash + 1))};
}

}  // namespace

namespace {

auth::TicketBook::Options TicketOptions(absl::Duration lifetime) {
  auth::TicketBook::Options options;
  options.lifetime = lifetime;
  return options;
}

}  // namespace

Dashboard::Dashboard(Options options)
    : options_(std::move(options)),
      tickets_(TicketOptions(options_.ticket_lifetime)) {}

void Dashboard::Register(http::Server& server) {
  server.Handle("GET", "/", [this](const http::Request& r) { return Page(r); });
  server.Handle("GET", "/api/whoami",
                [this](const http::Request& r) { return WhoAmI(r); });
  server.Handle("GET", "/api/info",
                [this](const http::Request& r) { return Info(r); });
  server.Handle("GET", "/api/jobs",
                [this](const http::Request& r) { return ListJobs(r); });
  server.Handle("POST", "/api/jobs",
                [this](const http::Request& r) { return SubmitJob(r); });
  server.Handle("GET", std::string(kJobsPrefix),
                [this](const http::Request& r) { return GetJob(r); });
  server.Handle("POST", std::string(kJobsPrefix),
                [this](const http::Request& r) { return CancelJob(r); });
  server.Handle("POST", "/api/tickets",
                [this](const http::Request& r) { return IssueTicket(r); });
  server.HandleStream("GET", std::string(kEventsPrefix),
                      [this](const http::Request& r, http::StreamWriter& w) {
                        StreamEvents(r, w);
                      });
}

absl::StatusOr<auth::Principal> Dashboard::Authorize(
    const http::Request& request, auth::Role need) const {
  if (options_.tokens == nullptr) {
    return auth::Principal{"anonymous", auth::Role::kAdmin};
  }
  std::optional<absl::string_view> token;
  const std::string header = request.Header("Authorization");
  if (!header.empty()) {
    token = auth::ParseBearer(header);
    if (!token) {
      return absl::UnauthenticatedError(
          "the Authorization header is not \"Bearer <token>\"");
    }
  } else if (request.HasParam("token")) {
    return absl::UnauthenticatedError(
        "tokens are not taken from URLs (they end up in proxy and access "
        "logs): send an Authorization: Bearer header; an event stream takes "
        "a ?ticket= from POST /api/tickets instead");
  } else {
    return absl::UnauthenticatedError(
        "a bearer token is required (an Authorization: Bearer header; event "
        "streams: a ?ticket= from POST /api/tickets)");
  }
  std::optional<auth::Principal> principal = options_.tokens->Find(*token);
  if (!principal) return absl::UnauthenticatedError("unknown token");
  if (!auth::Allows(principal->role, need)) {
    return absl::PermissionDeniedError(absl::StrCat(
        principal->name, " has the ", auth::RoleName(principal->role),
        " role; this needs ", auth::RoleName(need)));
  }
  return *principal;
}

http::Response Dashboard::Page(const http::Request& request) const {
  const EmbeddedFile* file = FindFile(request.path);
  if (file == nullptr) {
    return Error(
        absl::NotFoundError(absl::StrCat("no page or file at ", request.path)));
  }
  http::Response response;
  response.content_type = std::string(ContentType(file->name));
  response.headers = {{"Cache-Control", "no-cache"}};
  response.body = std::string(file->bytes);
  return response;
}

http::Response Dashboard::WhoAmI(const http::Request& request) const {
  absl::StatusOr<auth::Principal> who = Authorize(request, auth::Role::kViewer);
  if (!who.ok()) return Error(who.status());
  return Json(200,
              absl::StrCat("{\"name\":", Quote(who->name), ",\"role\":",
                           Quote(auth::RoleName(who->role)), ",\"auth\":",
                           options_.tokens != nullptr ? "true" : "false", "}"));
}

http::Response Dashboard::Info(const http::Request& request) const {
  absl::StatusOr<auth::Principal> who = Authorize(request, auth::Role::kViewer);
  if (!who.ok()) return Error(who.status());
  return Json(200, ProtoJson(options_.info));
}

http::Response Dashboard::ListJobs(const http::Request& request) const {
  absl::StatusOr<auth::Principal> who = Authorize(request, auth::Role::kViewer);
  if (!who.ok()) return Error(who.status());
  jobs::ListQuery query;
  const std::string states = request.Param("state");
  for (absl::string_view name :
       absl::StrSplit(states, ',', absl::SkipWhitespace())) {
    absl::StatusOr<jobs::JobState> state = ParseState(name);
    if (!state.ok()) return Error(state.status());
    query.states.push_back(*state);
  }
  if (request.HasParam("page_size") &&
      (!absl::SimpleAtoi(request.Param("page_size"), &query.limit) ||
       query.limit < 0)) {
    return Error(absl::InvalidArgumentError(
        absl::StrCat("page_size \"", request.Param("page_size"),
                     "\" is not a non-negative integer")));
  }
  query.page_token = request.Param("page_token");
  absl::StatusOr<jobs::ListPage> page = options_.manager->List(query);
  if (!page.ok()) return Error(page.status());
  v1::ListJobsResponse response;
  for (const jobs::JobRecord& record : page->jobs) {
    v1::Job* job = response.add_jobs();
    *job = jobs::ToProto(record);
    job->clear_results();  // a list stays small; GET /api/jobs/ID has them
  }
  response.set_next_page_token(page->next_page_token);
  return Json(200, ProtoJson(response));
}

http::Response Dashboard::SubmitJob(const http::Request& request) const {
  absl::StatusOr<auth::Principal> who =
      Authorize(request, auth::Role::kOperator);
  if (!who.ok()) return Error(who.status());
  v1::SubmitJobRequest submit;
  google::protobuf::util::JsonParseOptions parse;
  auto parsed =
      google::protobuf::util::JsonStringToMessage(request.body, &submit, parse);
  if (!parsed.ok()) {
    return Error(absl::InvalidArgumentError(
        absl::StrCat("the body is not a yolohook.v1.SubmitJobRequest in JSON: ",
                     parsed.ToString())));
  }
  absl::StatusOr<Mode> mode = wire::ModeFromWire(submit.mode());
  if (!mode.ok()) return Error(mode.status());
  std::vector<engine::InputImage> images;
  for (const v1::Image& image : submit.images())
    images.push_back({image.name(), image.data()});
  absl::StatusOr<jobs::JobRecord> job = options_.manager->Submit(
      *mode, ToMap(submit.args()), ToMap(submit.labels()), std::move(images));
  if (!job.ok()) return Error(job.status());
  return Json(200, ProtoJson(jobs::ToProto(*job)));
}

http::Response Dashboard::GetJob(const http::Request& request) const {
  absl::StatusOr<auth::Principal> who = Authorize(request, auth::Role::kViewer);
  if (!who.ok()) return Error(who.status());
  auto [id, rest] = SplitJobPath(request.path, kJobsPrefix);
  if (id.empty() || !rest.empty()) {
    return Error(absl::NotFoundError(
        absl::StrCat("no resource at ", request.path,
                     " (GET /api/jobs/ID, /api/events/ID)")));
  }
  absl::StatusOr<jobs::JobRecord> job = options_.manager->Get(id);
  if (!job.ok()) return Error(job.status());
  return Json(200, ProtoJson(jobs::ToProto(*job)));
}

http::Response Dashboard::CancelJob(const http::Request& request) const {
  // Who asks comes first, so that nothing about paths is told to strangers.
  absl::StatusOr<auth::Principal> who =
      Authorize(request, auth::Role::kOperator);
  if (!who.ok()) return Error(who.status());
  auto [id, rest] = SplitJobPath(request.path, kJobsPrefix);
  if (id.empty() || rest != "cancel") {
    return Error(absl::NotFoundError(absl::StrCat(
        "no resource at ", request.path, " (POST /api/jobs/ID/cancel)")));
  }
  absl::StatusOr<jobs::JobRecord> job = options_.manager->Cancel(id);
  if (!job.ok()) return Error(job.status());
  return Json(200, ProtoJson(jobs::ToProto(*job)));
}

http::Response Dashboard::IssueTicket(const http::Request& request) const {
  absl::StatusOr<auth::Principal> who = Authorize(request, auth::Role::kViewer);
  if (!who.ok()) return Error(who.status());
  const std::string target = request.Param("for");
  if (!absl::StartsWith(target, kEventsPrefix) ||
      target.size() == kEventsPrefix.size() ||
      target.size() > kEventsPrefix.size() + kMaxIdBytes) {
    return Error(absl::InvalidArgumentError(absl::StrCat(
        "for: ", Quoted(target),
        " is not an event stream's path (/api/events/ID); tickets open "
        "only those")));
  }
  const std::string ticket = tickets_.Issue(*who, target);
  return Json(
      200, absl::StrCat("{\"ticket\":", Quote(ticket), ",\"expires_in\":",
                        absl::ToInt64Seconds(options_.ticket_lifetime), "}"));
}

void Dashboard::StreamEvents(const http::Request& request,
                             http::StreamWriter& writer) const {
  auto fail = [&writer](const absl::Status& status) {
    http::Response response = Error(status);
    if (writer.WriteHead(response.status, response.content_type,
                         response.headers)) {
      writer.Write(response.body);
    }
  };
  absl::StatusOr<auth::Principal> who;
  if (request.HasParam("ticket") && options_.tokens != nullptr) {
    // Used up here, whether or not it is good.
    std::optional<auth::Principal> holder =
        tickets_.Redeem(request.Param("ticket"), request.path);
    if (holder.has_value()) {
      who = *holder;
    } else {
      who = absl::UnauthenticatedError(
          "the ticket is unknown, used, expired or for another path: get a "
          "new one from POST /api/tickets");
    }
  } else {
    who = Authorize(request, auth::Role::kViewer);
  }
  if (!who.ok()) return fail(who.status());
  auto [id, rest] = SplitJobPath(request.path, kEventsPrefix);
  if (id.empty() || !rest.empty()) {
    return fail(absl::NotFoundError(absl::StrCat(
        "no event stream at ", request.path, " (GET /api/events/ID)")));
  }
  // EventSource sends Last-Event-ID when it reconnects by itself; a page that
  // opens a new stream names the seq in the URL instead.
  std::string last = request.Header("Last-Event-ID");
  if (last.empty()) last = request.Param("last_event_id");
  absl::StatusOr<int64_t> after = ParseLastEventId(last);
  if (!after.ok()) return fail(after.status());

  EventFeed::Options feed_options;
  feed_options.job_id = id;
  feed_options.after_seq = *after;
  const std::string images = request.Param("images");
  feed_options.include_images = images == "1" || images == "true";
  for (absl::string_view name :
       absl::StrSplit(request.Param("events"), ',', absl::SkipWhitespace())) {
    feed_options.events.emplace_back(absl::StripAsciiWhitespace(name));
  }
  absl::StatusOr<std::unique_ptr<EventFeed>> feed =
      EventFeed::Open(*options_.bus, feed_options);
  if (!feed.ok()) return fail(feed.status());

  if (!writer.WriteHead(
          200, "text/event-stream",
          {{"Cache-Control", "no-cache"}, {"X-Accel-Buffering", "no"}})) {
    return;
  }
  // Browsers reconnect a second after a stream ends without "end".
  if (!writer.Write("retry: 1000\n\n")) return;
  const absl::Duration wait = std::min(options_.heartbeat, absl::Seconds(1));
  absl::Time last_write = absl::Now();
  while (!writer.closed()) {
    EventFeed::Chunk chunk = (*feed)->Next(wait);
    if (!chunk.text.empty()) {
      if (!writer.Write(chunk.text)) return;
      last_write = absl::Now();
    } else if (absl::Now() - last_write >= options_.heartbeat) {
      if (!writer.Write(": keepalive\n\n")) return;
      last_write = absl::Now();
    }
    if (!chunk.done) continue;
    // A job waiting to resume (interrupted, queued again) is not over: the
    // browser reconnects and picks up its new events.
    if (chunk.finished) {
      absl::StatusOr<jobs::JobRecord> job = options_.manager->Get(id);
      if (job.ok() && jobs::IsFinished(job->state)) {
        writer.Write(SseMessage(
            0, "end",
            absl::StrCat(
                "{\"job_id\":", Quote(id), ",\"state\":",
                Quote(v1::JobState_Name(jobs::StateToProto(job->state))),
                ",\"last_seq\":", (*feed)->last_seq(), "}")));
      }
    }
    return;
  }
}

}  // namespace yolohook::dashboard
