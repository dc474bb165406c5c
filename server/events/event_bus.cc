// EventBus: the public face of the event layer. Publish's steps: a seq from
// the job table, the interceptors one by one (round_trips.cc), the final
// state converted and serialized once, then the log writer stores it and
// hands it to the fan-out (subscriptions.cc). See bus_core.h for the parts.
#include "server/events/event_bus.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/events/bus_core.h"
#include "server/wire/conversions.h"

namespace yolohook::events {

class EventBus::Impl : public BusCore {
 public:
  using BusCore::BusCore;
};

EventBus::EventBus(Options options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}

EventBus::~EventBus() { Shutdown(); }

std::shared_ptr<Stream> EventBus::Connect(std::function<void()> on_ready,
                                          std::string client) {
  return std::make_shared<StreamImpl>(impl_.get(), std::move(on_ready),
                                      std::move(client));
}

void EventBus::StartJob(const std::string& job_id,
                        const std::map<std::string, std::string>& labels,
                        const std::map<std::string, std::string>& args,
                        int32_t attempt) {
  int64_t last = 0;
  if (impl_->options_.log != nullptr) {
    impl_->Flush();
    absl::StatusOr<int64_t> seq = impl_->options_.log->LastSeq(job_id);
    if (seq.ok()) last = *seq;
  }
  absl::MutexLock lock(&impl_->mu_);
  JobTable::Job& job = impl_->jobs_.Start(job_id, labels, args, last, attempt);
  // Label and all-jobs subscriptions follow it from its next event.
  for (const auto& sub : impl_->subs_) {
    if (impl_->Selects(*sub, job_id, job) && !sub->next_seq.count(job_id) &&
        !sub->replay_cursor.count(job_id)) {
      sub->next_seq[job_id] = job.published_seq + 1;
    }
  }
}

int64_t EventBus::Publish(const std::string& job_id, EventContext& ctx) {
  BusCore& b = *impl_;
  bool known;
  {
    absl::MutexLock lock(&b.mu_);
    known = b.jobs_.Find(job_id) != nullptr;
  }
  if (!known) StartJob(job_id, {}, {});

  // 1. The event's seq, and the interceptors that saw their ack before it.
  const size_t index = static_cast<size_t>(ctx.event);
  const absl::Time time = b.options_.now();
  int64_t seq;
  int32_t attempt;
  std::map<std::string, std::string> args;
  std::vector<std::shared_ptr<Subscription>> interceptors;
  {
    absl::MutexLock lock(&b.mu_);
    seq = b.jobs_.NextSeq(job_id);
    const JobTable::Job& job = *b.jobs_.Find(job_id);
    attempt = job.attempt;
    args = job.args;
    ++b.stats_.events_published;
    if (!b.shutdown_) {
      for (const auto& sub : b.subs_) {
        if (sub->intercept && sub->events[index] &&
            b.Selects(*sub, job_id, job)) {
          interceptors.push_back(sub);
        }
      }
    }
  }
  std::stable_sort(interceptors.begin(), interceptors.end(),
                   [](const std::shared_ptr<Subscription>& a,
                      const std::shared_ptr<Subscription>& c) {
                     return a->priority != c->priority
                                ? a->priority < c->priority
                                : a->order < c->order;
                   });

  // Frames are encoded at most once per event, whoever asks.
  std::map<const uint8_t*, std::string> jpeg_cache;
  std::function<std::string(const FrameView&)> encode;
  if (b.options_.encode_jpeg) {
    encode = [&](const FrameView& frame) {
      auto it = jpeg_cache.find(frame.bgr);
      if (it == jpeg_cache.end())
        it = jpeg_cache.emplace(frame.bgr, b.options_.encode_jpeg(frame)).first;
      return it->second;
    };
  }
  auto wire = [&](bool images) {
    v1::Event event = wire::ToWire(
        job_id, seq, time, ctx, args,
        images ? encode : std::function<std::string(const FrameView&)>());
    event.set_attempt(attempt);
    return event;
  };

  // 2. The interceptors, one after another, each seeing the state the ones
  // before it left.
  const std::string event_name(EventName(ctx.event));
  for (const auto& sub : interceptors) {
    v1::ServerMessage message;
    *message.mutable_event() = wire(sub->include_images);
    b.RoundTripWith(sub, job_id, seq, event_name, ctx, std::move(message));
  }

  // 3. The final state, serialized once (and once more with frames if an
  // observer asked for them).
  bool want_images = false;
  if (encode && ctx.predictor != nullptr && !ctx.predictor->frames.empty()) {
    absl::MutexLock lock(&b.mu_);
    const JobTable::Job& job = *b.jobs_.Find(job_id);
    for (const auto& sub : b.subs_) {
      if (!sub->intercept && sub->include_images && sub->events[index] &&
          b.Selects(*sub, job_id, job)) {
        want_images = true;
        break;
      }
    }
  }
  auto record = std::make_shared<EventRecord>();
  record->job_id = job_id;
  record->seq = seq;
  record->event = ctx.event;
  record->bytes = Serialize(wire(false));
  if (want_images) record->with_images = Serialize(wire(true));

  // 4. Stored, then delivered: what an observer receives is in the log.
  if (b.writer_ != nullptr) {
    b.writer_->Queue(std::move(record));
  } else {
    b.Deliver({std::move(record)});
  }
  return seq;
}

Callback EventBus::CallbackFor(const std::string& job_id) {
  return [this, job_id](EventContext& ctx) { Publish(job_id, ctx); };
}

void EventBus::FlushLog() { impl_->Flush(); }

void EventBus::FinishJob(const std::string& job_id, JobEnd end) {
  // Every event of the job is stored and delivered first.
  impl_->Flush();
  if (impl_->writer_ != nullptr) impl_->writer_->ForgetJob(job_id);
  NotifyList notify;
  {
    absl::MutexLock lock(&impl_->mu_);
    if (impl_->jobs_.Find(job_id) == nullptr) return;
    impl_->jobs_.Finish(job_id, end == JobEnd::kInterrupted);
    std::vector<std::shared_ptr<Subscription>> subs = impl_->subs_;
    for (const auto& sub : subs) {
      if (sub->job_ids.count(job_id)) {
        impl_->MaybeJobsDoneLocked(sub, notify);
      } else if (!sub->replay_cursor.count(job_id)) {
        // Label and all-jobs subscriptions have every event of the job
        // queued by now: nothing of it is left to resume.
        sub->next_seq.erase(job_id);
        sub->min_seq.erase(job_id);
      }
    }
    impl_->ReleaseIfUnusedLocked(job_id);
  }
  impl_->Notify(notify);
}

int64_t EventBus::LastSeq(const std::string& job_id) const {
  {
    absl::MutexLock lock(&impl_->mu_);
    if (const JobTable::Job* job = impl_->jobs_.Find(job_id))
      return job->last_seq;
  }
  // A finished job the bus has forgotten: its events are in the log.
  if (impl_->options_.log == nullptr) return 0;
  impl_->Flush();
  absl::StatusOr<int64_t> seq = impl_->options_.log->LastSeq(job_id);
  return seq.ok() ? *seq : 0;
}

void EventBus::Shutdown() {
  NotifyList notify;
  {
    absl::MutexLock lock(&impl_->mu_);
    impl_->shutdown_ = true;
    std::vector<std::shared_ptr<Subscription>> subs = impl_->subs_;
    for (const auto& sub : subs) {
      std::string message = "the server is shutting down";
      std::vector<std::string> resuming;
      for (const auto& [id, job] : impl_->jobs_.jobs()) {
        if (job.interrupted && impl_->Selects(*sub, id, job))
          resuming.push_back(id);
      }
      if (!resuming.empty()) {
        absl::StrAppend(&message, "; interrupted, resuming when a server ",
                        "starts again: ", absl::StrJoin(resuming, ", "),
                        " (subscribe again with from_seq = resume_seq)");
      }
      impl_->EndLocked(sub, v1::END_REASON_SHUTDOWN, message,
                       "was cut off by the server shutting down", notify);
    }
  }
  impl_->Notify(notify);
}

BusStats EventBus::stats() const {
  absl::MutexLock lock(&impl_->mu_);
  BusStats stats = impl_->stats_;
  stats.jobs_in_memory = static_cast<int64_t>(impl_->jobs_.size());
  for (const auto& sub : impl_->subs_) {
    ++(sub->intercept ? stats.intercept_subscriptions
                      : stats.observer_subscriptions);
  }
  return stats;
}

}  // namespace yolohook::events
