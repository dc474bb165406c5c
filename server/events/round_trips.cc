// Interceptor round trips: an event sent to one interceptor, the job's thread
// waiting for its reply (or deadline, or disconnect), and the reply's
// mutations validated and applied.
#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "server/common/limits.h"
#include "server/common/status_macros.h"
#include "server/events/bus_core.h"
#include "server/events/mutations.h"
#include "server/wire/conversions.h"

namespace yolohook::events {
namespace {

// The ids of a Reply or ExtendDeadline, checked before they are repeated.
absl::Status CheckReplyIds(absl::string_view what,
                           const std::string& subscription_id,
                           const std::string& job_id) {
  YH_RETURN_IF_ERROR(CheckLength(absl::StrCat(what, ".subscription_id"),
                                 subscription_id, kMaxIdBytes));
  return CheckLength(absl::StrCat(what, ".job_id"), job_id, kMaxIdBytes);
}

// The round trip of `sub` awaiting (job, seq), or null.
RoundTrip* Awaiting(
    const std::map<std::string, std::shared_ptr<Subscription>>& active,
    const std::string& subscription_id, const std::string& job_id,
    int64_t seq) {
  auto it = active.find(subscription_id);
  if (it == active.end()) return nullptr;
  auto p = it->second->pending.find({job_id, seq});
  if (p == it->second->pending.end() ||
      p->second->state != RoundTrip::State::kWaiting) {
    return nullptr;
  }
  return p->second;
}

}  // namespace

void BusCore::RoundTripWith(const std::shared_ptr<Subscription>& sub,
                            const std::string& job_id, int64_t seq,
                            const std::string& event_name, EventContext& ctx,
                            v1::ServerMessage message) {
  RoundTrip trip;
  trip.sub = sub;
  trip.job_id = job_id;
  trip.seq = seq;
  trip.event_name = event_name;
  trip.ctx = &ctx;
  trip.sent = options_.now();
  trip.deadline = trip.sent + sub->reply_timeout;
  trip.real_sent = absl::Now();
  trip.real_deadline = trip.real_sent + sub->reply_timeout;
  v1::Event* event = message.mutable_event();
  event->set_subscription_id(sub->id);
  event->set_reply_required(true);
  *event->mutable_deadline() = wire::ToTimestamp(trip.deadline);
  OutgoingPtr out = Outgoing::Whole(message);
  NotifyList notify;
  {
    absl::MutexLock lock(&mu_);
    if (sub->ended) return;
    sub->pending[{job_id, seq}] = &trip;
    PushLocked(*sub, std::move(out), notify);
    ++stats_.messages_queued;
  }
  Notify(notify);
  absl::MutexLock lock(&mu_);
  bool timed_out = false;
  while (trip.state == RoundTrip::State::kWaiting) {
    if (absl::Now() >= trip.real_deadline) {
      timed_out = true;
      break;
    }
    cv_.WaitWithDeadline(&mu_, trip.real_deadline);
  }
  if (timed_out) {
    sub->pending.erase({job_id, seq});
    ++stats_.reply_timeouts;
  }
  if (trip.state == RoundTrip::State::kReplied ||
      sub->failure_mode != v1::FAILURE_MODE_FAIL_JOB) {
    return;
  }
  if (timed_out) {
    ctx.Fail(absl::StrCat("interceptor ", sub->id, " did not reply to ",
                          event_name, " seq ", seq, " within ",
                          absl::FormatDuration(trip.deadline - trip.sent)));
  } else {
    ctx.Fail(absl::StrCat("interceptor ", sub->id, " ", trip.end_cause,
                          " before replying to ", event_name, " seq ", seq));
  }
}

void StreamImpl::Audit(const AuditEntry& entry) const {
  const std::string line = FormatAuditLine(entry);
  if (bus_->options_.audit_log) {
    bus_->options_.audit_log(line);
  } else {
    // One write per line keeps concurrent lines whole.
    std::fputs(absl::StrCat(line, "\n").c_str(), stdout);
    std::fflush(stdout);
  }
}

v1::ReplyResult StreamImpl::Reply(const v1::Reply& reply) {
  absl::Duration round_trip = -absl::InfiniteDuration();
  v1::ReplyResult result = ReplyOnce(reply, &round_trip);
  if (round_trip >= absl::ZeroDuration() && bus_->options_.on_round_trip) {
    bus_->options_.on_round_trip(round_trip);
  }
  return result;
}

v1::ReplyResult StreamImpl::ReplyOnce(const v1::Reply& reply,
                                      absl::Duration* round_trip) {
  v1::ReplyResult result;
  result.set_seq(reply.seq());
  AuditEntry audit;
  audit.client = client_;
  audit.job_id = reply.job_id();
  audit.seq = reply.seq();
  audit.subscription_id = reply.subscription_id();
  if (absl::Status ids =
          CheckReplyIds("Reply", reply.subscription_id(), reply.job_id());
      !ids.ok()) {
    // Oversized ids are not echoed back.
    {
      absl::MutexLock lock(&bus_->mu_);
      ++bus_->stats_.replies_rejected;
    }
    result.set_reason(std::string(ids.message()));
    audit.rejected = result.reason();
    Audit(audit);
    return result;
  }
  result.set_subscription_id(reply.subscription_id());
  result.set_job_id(reply.job_id());
  {
    absl::MutexLock lock(&bus_->mu_);
    RoundTrip* trip =
        Awaiting(active_, reply.subscription_id(), reply.job_id(), reply.seq());
    if (trip == nullptr) {
      ++bus_->stats_.replies_rejected;
      result.set_reason(absl::StrCat(
          "no event of job ", Quoted(reply.job_id()), " seq ", reply.seq(),
          " awaits a reply on subscription ", Quoted(reply.subscription_id()),
          " (late, duplicate or unknown)"));
    } else {
      audit.event = trip->event_name;
      // A rejected reply ends the round trip too, without changes: the
      // failure mode is for silence (timeouts, disconnects), not for a wrong
      // answer.
      trip->state = RoundTrip::State::kReplied;
      *round_trip = absl::Now() - trip->real_sent;
      trip->sub->pending.erase({reply.job_id(), reply.seq()});
      bus_->cv_.SignalAll();
      for (int i = 0; i < reply.mutations_size(); ++i) {
        absl::Status status = ValidateMutation(reply.mutations(i), *trip->ctx);
        if (!status.ok()) {
          ++bus_->stats_.replies_rejected;
          ++bus_->stats_.mutations_rejected;
          result.set_reason(
              absl::StrCat("mutation ", i, ": ", status.message()));
          break;
        }
      }
      if (result.reason().empty()) {
        for (const v1::Mutation& mutation : reply.mutations()) {
          audit.changes.push_back(SummarizeMutation(mutation, *trip->ctx));
          ApplyMutation(mutation, *trip->ctx);
        }
        ++bus_->stats_.replies_applied;
        result.set_applied(true);
      }
    }
  }
  audit.rejected = result.reason();
  Audit(audit);
  return result;
}

v1::ReplyResult StreamImpl::ExtendDeadline(const v1::ExtendDeadline& request) {
  v1::ReplyResult result;
  result.set_seq(request.seq());
  if (absl::Status ids = CheckReplyIds(
          "ExtendDeadline", request.subscription_id(), request.job_id());
      !ids.ok()) {
    result.set_reason(std::string(ids.message()));
    return result;
  }
  result.set_subscription_id(request.subscription_id());
  result.set_job_id(request.job_id());
  absl::MutexLock lock(&bus_->mu_);
  RoundTrip* trip = Awaiting(active_, request.subscription_id(),
                             request.job_id(), request.seq());
  if (trip == nullptr) {
    result.set_reason(absl::StrCat(
        "no event of job ", Quoted(request.job_id()), " seq ", request.seq(),
        " awaits a reply on subscription ", Quoted(request.subscription_id())));
    return result;
  }
  *result.mutable_deadline() = wire::ToTimestamp(trip->deadline);
  const absl::Duration extension = wire::FromDurationProto(request.extension());
  if (trip->extended) {
    result.set_reason(
        "the deadline of this event was already extended (once per event)");
    return result;
  }
  if (extension <= absl::ZeroDuration()) {
    result.set_reason(absl::StrCat("extension must be positive, got ",
                                   absl::FormatDuration(extension)));
    return result;
  }
  const absl::Time capped =
      std::min(trip->deadline + extension,
               trip->sent + bus_->options_.max_reply_timeout);
  trip->real_deadline += capped - trip->deadline;
  trip->deadline = capped;
  trip->extended = true;
  bus_->cv_.SignalAll();
  result.set_applied(true);
  *result.mutable_deadline() = wire::ToTimestamp(capped);
  return result;
}

}  // namespace yolohook::events
