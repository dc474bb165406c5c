#include "client/cpp/subscriptions.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/wire/conversions.h"

namespace yolohook::client_internal {

std::shared_ptr<Subscription> SubscriptionTable::Add(
    std::vector<std::string> events, CallbackOptions options, Callback fn) {
  auto sub = std::make_shared<Subscription>();
  sub->id = absl::StrCat("cb", ++next_);
  sub->events = std::move(events);
  sub->options = std::move(options);
  sub->fn = std::move(fn);
  subs_[sub->id] = sub;
  return sub;
}

std::shared_ptr<Subscription> SubscriptionTable::Find(
    const std::string& id) const {
  auto it = subs_.find(id);
  return it == subs_.end() ? nullptr : it->second;
}

std::shared_ptr<Subscription> SubscriptionTable::FindWire(
    const std::string& wire_id) const {
  std::shared_ptr<Subscription> sub =
      Find(wire_id.substr(0, wire_id.rfind('.')));
  if (sub == nullptr || sub->wire_id != wire_id) return nullptr;
  return sub;
}

v1::ClientMessage SubscriptionTable::BuildSubscribe(Subscription& sub,
                                                    uint64_t generation) {
  ++sub.attempts;
  sub.wire_id = absl::StrCat(sub.id, ".", sub.attempts);
  sub.sent_generation = generation;
  sub.sent_at = absl::Now();
  sub.acked = false;
  const CallbackOptions& o = sub.options;
  v1::ClientMessage message;
  v1::Subscribe* s = message.mutable_subscribe();
  s->set_subscription_id(sub.wire_id);
  for (const std::string& id : o.job_ids) s->add_job_ids(id);
  s->mutable_match_labels()->insert(o.match_labels.begin(),
                                    o.match_labels.end());
  for (const std::string& e : sub.events) s->add_events(e);
  s->set_include_images(o.include_images);
  if (o.mode == CallbackOptions::kIntercept) {
    s->set_mode(v1::SUBSCRIPTION_MODE_INTERCEPT);
    s->set_priority(o.priority);
    const absl::Duration timeout = o.reply_timeout > absl::ZeroDuration()
                                       ? o.reply_timeout
                                       : defaults_.reply_timeout;
    if (timeout > absl::ZeroDuration())
      *s->mutable_reply_timeout() = wire::ToDurationProto(timeout);
    s->set_failure_mode(o.failure_mode != v1::FAILURE_MODE_UNSPECIFIED
                            ? o.failure_mode
                            : defaults_.failure_mode);
    return message;
  }
  s->set_mode(v1::SUBSCRIPTION_MODE_OBSERVE);
  if (o.job_ids.empty()) return message;
  int64_t from = o.from_seq;
  if (sub.ever_acked) {
    from = std::numeric_limits<int64_t>::max();
    for (const std::string& job : o.job_ids) {
      auto it = sub.next_seq.find(job);
      from = std::min(from, it == sub.next_seq.end() ? int64_t{1} : it->second);
    }
    from = std::max<int64_t>(from, 1);
  }
  s->set_from_seq(from);
  return message;
}

std::vector<v1::ClientMessage> SubscriptionTable::SubscribeAll(
    uint64_t generation) {
  std::vector<v1::ClientMessage> out;
  for (auto& [id, sub] : subs_) {
    if (!sub->ending && sub->sent_generation != generation)
      out.push_back(BuildSubscribe(*sub, generation));
  }
  return out;
}

void SubscriptionTable::OnAck(Subscription& sub, const v1::Subscribed& ack) {
  for (const auto& [job, last] : ack.last_seq()) {
    if (sub.next_seq.count(job) > 0) continue;
    sub.next_seq[job] =
        sub.options.from_seq > 0 ? sub.options.from_seq : last + 1;
  }
  sub.ever_acked = true;
  sub.acked = true;
}

bool SubscriptionTable::Accept(Subscription& sub, const v1::Event& event) {
  if (sub.ending) return false;
  auto it = sub.next_seq.find(event.job_id());
  if (it != sub.next_seq.end() && event.seq() < it->second) return false;
  sub.next_seq[event.job_id()] = event.seq() + 1;
  return true;
}

EndAction SubscriptionTable::OnEnded(Subscription& sub,
                                     const v1::SubscriptionEnded& ended,
                                     absl::Status* problem) {
  switch (ended.reason()) {
    case v1::END_REASON_JOBS_DONE:
    case v1::END_REASON_UNSUBSCRIBED:
      sub.ending = true;
      return EndAction::kEnd;
    case v1::END_REASON_SHUTDOWN:
      // The stream closes next; the reconnect subscribes again.
      sub.sent_generation = 0;
      return EndAction::kAwaitReconnect;
    case v1::END_REASON_LAGGING:
    case v1::END_REASON_COMPACTED: {
      if (sub.ending) return EndAction::kIgnore;
      for (const auto& [job, seq] : ended.resume_seq()) {
        auto it = sub.next_seq.find(job);
        if (ended.reason() == v1::END_REASON_COMPACTED &&
            it != sub.next_seq.end() && seq > it->second) {
          *problem = absl::DataLossError(absl::StrCat(
              "subscription ", sub.id, ": events ", it->second, "..", seq - 1,
              " of job ", job, " are no longer retained"));
        }
        if (it == sub.next_seq.end() || seq > it->second)
          sub.next_seq[job] = seq;
      }
      if (sub.options.job_ids.empty() ||
          sub.options.mode == CallbackOptions::kIntercept) {
        *problem = absl::DataLossError(
            absl::StrCat("subscription ", sub.id, " fell behind (",
                         ended.message(), "); events may have been missed"));
      }
      return EndAction::kResubscribe;
    }
    default:
      sub.ending = true;
      sub.end_status = absl::InternalError(
          absl::StrCat("subscription ", sub.id, " ended: ", ended.message()));
      return EndAction::kEnd;
  }
}

std::vector<std::shared_ptr<Subscription>> SubscriptionTable::Ending() const {
  std::vector<std::shared_ptr<Subscription>> out;
  for (const auto& [id, sub] : subs_) {
    if (sub->ending && !sub->ended) out.push_back(sub);
  }
  return out;
}

std::vector<std::shared_ptr<Subscription>> SubscriptionTable::EndAll(
    const absl::Status& status) {
  std::vector<std::shared_ptr<Subscription>> out;
  for (auto& [id, sub] : subs_) {
    if (sub->ending) continue;
    sub->ending = true;
    sub->end_status = status;
    out.push_back(sub);
  }
  return out;
}

bool SubscriptionTable::HasUnanswered(uint64_t generation, absl::Time now,
                                      absl::Duration timeout) const {
  for (const auto& [id, sub] : subs_) {
    if (!sub->ending && !sub->acked && sub->sent_generation == generation &&
        now - sub->sent_at > timeout) {
      return true;
    }
  }
  return false;
}

void SubscriptionTable::MarkAllEnded(const absl::Status& status) {
  for (auto& [id, sub] : subs_) {
    if (!sub->ended) {
      sub->ended = true;
      sub->end_status = status;
    }
  }
}

}  // namespace yolohook::client_internal
