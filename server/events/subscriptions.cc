// Subscriptions, fan-out and replay: what each client stream receives.
//
// Replays are lazy: a subscription with from_seq keeps a cursor per job and
// Next() turns the retained events (memory ring, else EventLog pages) into
// messages one at a time. While a job's cursor exists, its live events are not
// queued; when the cursor passes the job's last delivered seq (checked under
// the lock, where delivery happens too) the cursor is dropped and live
// delivery takes over, so the boundary loses and repeats nothing.
#include <algorithm>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/limits.h"
#include "server/common/status_macros.h"
#include "server/events/bus_core.h"
#include "server/wire/conversions.h"

namespace yolohook::events {
namespace {

// Events read from the EventLog per page during a replay.
constexpr int64_t kReplayPageSize = 256;

std::string Str(absl::string_view s) { return std::string(s.data(), s.size()); }

// Checks the sizes and enum values of a Subscribe before anything of it is
// used or repeated.
absl::Status CheckSubscribe(const v1::Subscribe& request) {
  if (request.subscription_id().empty())
    return absl::InvalidArgumentError("subscription: empty subscription_id");
  YH_RETURN_IF_ERROR(CheckLength("Subscribe.subscription_id",
                                 request.subscription_id(), kMaxIdBytes));
  const std::string sub = Quoted(request.subscription_id());
  YH_RETURN_IF_ERROR(CheckCount(absl::StrCat("subscription ", sub, ": job_ids"),
                                request.job_ids_size(), kMaxJobIds));
  for (int i = 0; i < request.job_ids_size(); ++i) {
    YH_RETURN_IF_ERROR(
        CheckLength(absl::StrCat("subscription ", sub, ": job_ids[", i, "]"),
                    request.job_ids(i), kMaxIdBytes));
  }
  YH_RETURN_IF_ERROR(CheckLabels(
      absl::StrCat("subscription ", sub, ": match_labels"),
      std::map<std::string, std::string>(request.match_labels().begin(),
                                         request.match_labels().end())));
  YH_RETURN_IF_ERROR(CheckCount(absl::StrCat("subscription ", sub, ": events"),
                                request.events_size(), kMaxEventNames));
  for (int i = 0; i < request.events_size(); ++i) {
    YH_RETURN_IF_ERROR(
        CheckLength(absl::StrCat("subscription ", sub, ": events[", i, "]"),
                    request.events(i), kMaxEventNameBytes));
  }
  if (request.mode() != v1::SUBSCRIPTION_MODE_UNSPECIFIED &&
      request.mode() != v1::SUBSCRIPTION_MODE_OBSERVE &&
      request.mode() != v1::SUBSCRIPTION_MODE_INTERCEPT) {
    return absl::InvalidArgumentError(absl::StrCat(
        "subscription ", sub, ": mode: unknown value ",
        static_cast<int>(request.mode()),
        " (SUBSCRIPTION_MODE_OBSERVE = 1, SUBSCRIPTION_MODE_INTERCEPT = 2)"));
  }
  if (request.failure_mode() != v1::FAILURE_MODE_UNSPECIFIED &&
      request.failure_mode() != v1::FAILURE_MODE_CONTINUE &&
      request.failure_mode() != v1::FAILURE_MODE_FAIL_JOB) {
    return absl::InvalidArgumentError(absl::StrCat(
        "subscription ", sub, ": failure_mode: unknown value ",
        static_cast<int>(request.failure_mode()),
        " (FAILURE_MODE_CONTINUE = 1, FAILURE_MODE_FAIL_JOB = 2)"));
  }
  return absl::OkStatus();
}

OutgoingPtr EventFor(const EventRecord& event, const Subscription& sub) {
  return Outgoing::ForEvent(sub.include_images && event.with_images != nullptr
                                ? event.with_images
                                : event.bytes,
                            sub.id);
}

}  // namespace

BusCore::BusCore(Options options)
    : options_(std::move(options)),
      jobs_(options_.memory_retention, options_.log != nullptr) {
  if (!options_.now) options_.now = [] { return absl::Now(); };
  if (options_.log != nullptr) {
    writer_ = std::make_unique<LogWriter>(options_.log,
                                          [this](LogWriter::Batch batch) {
                                            if (!batch.status.ok()) {
                                              absl::MutexLock lock(&mu_);
                                              ++stats_.log_failures;
                                            }
                                            Deliver(batch.events);
                                          });
  }
}

BusCore::~BusCore() { writer_.reset(); }

bool BusCore::Selects(const Subscription& sub, const std::string& job_id,
                      const JobTable::Job& job) const {
  if (!sub.job_ids.empty()) return sub.job_ids.count(job_id) > 0;
  for (const auto& [key, value] : sub.match_labels) {
    auto it = job.labels.find(key);
    if (it == job.labels.end() || it->second != value) return false;
  }
  return true;
}

void BusCore::PushLocked(Subscription& sub, OutgoingPtr message,
                         NotifyList& notify) {
  const bool was_empty = sub.queue.empty();
  sub.queue.push_back(std::move(message));
  if (was_empty) notify.push_back(sub.stream_ref);
}

void BusCore::EndLocked(const std::shared_ptr<Subscription>& sub,
                        v1::EndReason reason, const std::string& message,
                        const std::string& cause, NotifyList& notify,
                        const std::map<std::string, int64_t>& resume_override) {
  if (sub->ended) return;
  v1::ServerMessage end;
  v1::SubscriptionEnded* ended = end.mutable_subscription_ended();
  ended->set_subscription_id(sub->id);
  ended->set_reason(reason);
  ended->set_message(message);
  std::map<std::string, int64_t> resume = ResumeSeqsLocked(*sub);
  for (const auto& [job, seq] : resume_override) resume[job] = seq;
  for (const auto& [job, seq] : resume)
    (*ended->mutable_resume_seq())[job] = seq;
  sub->ended = true;
  sub->replay_cursor.clear();
  sub->replay_buffer.clear();
  subs_.erase(std::remove(subs_.begin(), subs_.end(), sub), subs_.end());
  sub->stream->ForgetLocked(sub->id);
  for (auto& [key, trip] : sub->pending) {
    if (trip->state == RoundTrip::State::kWaiting) {
      trip->state = RoundTrip::State::kEnded;
      trip->end_cause = cause.empty() ? "disconnected" : cause;
    }
  }
  sub->pending.clear();
  cv_.SignalAll();
  PushLocked(*sub, Outgoing::Whole(end), notify);
  for (const std::string& job_id : sub->job_ids) ReleaseIfUnusedLocked(job_id);
}

void BusCore::MaybeJobsDoneLocked(const std::shared_ptr<Subscription>& sub,
                                  NotifyList& notify) {
  if (sub->ended || sub->job_ids.empty() || !sub->replay_cursor.empty()) return;
  for (const std::string& id : sub->job_ids) {
    const JobTable::Job* job = jobs_.Find(id);
    if (job != nullptr && (!job->finished || job->interrupted)) return;
  }
  EndLocked(sub, v1::END_REASON_JOBS_DONE, "every selected job finished", "",
            notify);
}

std::map<std::string, int64_t> BusCore::ResumeSeqsLocked(
    const Subscription& sub) const {
  std::map<std::string, int64_t> out = sub.next_seq;
  for (const auto& [job, cursor] : sub.replay_cursor) out[job] = cursor;
  return out;
}

void BusCore::ReleaseIfUnusedLocked(const std::string& job_id) {
  jobs_.ReleaseIfUnused(
      job_id, [this](const std::string& id) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        for (const auto& sub : subs_) {
          if (sub->job_ids.count(id) || sub->replay_cursor.count(id))
            return true;
        }
        return false;
      });
}

void BusCore::Deliver(const std::vector<EventRecordPtr>& events) {
  NotifyList notify;
  {
    absl::MutexLock lock(&mu_);
    for (const EventRecordPtr& event : events) {
      const std::string& job_id = event->job_id;
      jobs_.Delivered(event);
      const JobTable::Job& job = *jobs_.Find(job_id);
      const size_t index = static_cast<size_t>(event->event);
      // Ending a subscription changes subs_: the laggards end after the walk.
      std::vector<std::shared_ptr<Subscription>> lagging;
      for (const auto& sub : subs_) {
        if (sub->intercept || !sub->events[index] ||
            !Selects(*sub, job_id, job)) {
          continue;
        }
        if (sub->replay_cursor.count(job_id)) continue;  // the replay gets it
        auto min = sub->min_seq.find(job_id);
        if (min != sub->min_seq.end() && event->seq < min->second) continue;
        if (sub->queue.size() >= options_.queue_limit) {
          // Every earlier matching event was queued: this one is the first
          // missed.
          sub->next_seq[job_id] = event->seq;
          lagging.push_back(sub);
          continue;
        }
        PushLocked(*sub, EventFor(*event, *sub), notify);
        sub->next_seq[job_id] = event->seq + 1;
        ++stats_.messages_queued;
      }
      for (const auto& sub : lagging) {
        ++stats_.lagging_ended;
        EndLocked(sub, v1::END_REASON_LAGGING,
                  absl::StrCat("more than ", options_.queue_limit,
                               " messages waiting; resume with from_seq = "
                               "resume_seq"),
                  "", notify);
      }
    }
  }
  Notify(notify);
}

void BusCore::Notify(const NotifyList& streams) {
  std::vector<std::shared_ptr<StreamImpl>> unique;
  for (const auto& weak : streams) {
    std::shared_ptr<StreamImpl> stream = weak.lock();
    if (stream != nullptr &&
        std::find(unique.begin(), unique.end(), stream) == unique.end()) {
      unique.push_back(std::move(stream));
    }
  }
  for (const auto& stream : unique) stream->OnReady();
}

void BusCore::Flush() {
  if (writer_ != nullptr) writer_->Flush();
}

int64_t BusCore::OldestKept(const std::string& job_id, int64_t ring_front,
                            int64_t published) {
  if (options_.log != nullptr) {
    Flush();
    absl::StatusOr<std::vector<EventRecord>> first =
        options_.log->Read(job_id, 1, 1);
    if (first.ok() && !first->empty()) {
      const int64_t seq = first->front().seq;
      return ring_front > 0 ? std::min(seq, ring_front) : seq;
    }
  }
  return ring_front > 0 ? ring_front : published + 1;
}

absl::Status StreamImpl::PinSelectedJobs(const Subscription& sub,
                                         std::vector<std::string>& pinned) {
  // Jobs unknown in memory may still be in the log (a restart, or a job
  // finished and forgotten): look them up without the lock, then register
  // them as finished.
  std::vector<std::string> unknown;
  {
    absl::MutexLock lock(&bus_->mu_);
    for (const std::string& id : sub.job_ids) {
      if (JobTable::Job* job = bus_->jobs_.Find(id)) {
        ++job->pins;
        pinned.push_back(id);
      } else {
        unknown.push_back(id);
      }
    }
  }
  if (unknown.empty()) return absl::OkStatus();
  bus_->Flush();
  std::map<std::string, int64_t> logged_last;
  for (const std::string& id : unknown) {
    int64_t last = 0;
    if (bus_->options_.log != nullptr) {
      absl::StatusOr<int64_t> seq = bus_->options_.log->LastSeq(id);
      if (seq.ok()) last = *seq;
    }
    if (last <= 0) {
      return absl::NotFoundError(absl::StrCat("subscription ", Quoted(sub.id),
                                              ": job ", Quoted(id),
                                              " does not exist"));
    }
    logged_last[id] = last;
  }
  absl::MutexLock lock(&bus_->mu_);
  for (const auto& [id, last] : logged_last) {
    JobTable::Job* job = bus_->jobs_.Find(id);
    if (job == nullptr) job = &bus_->jobs_.AddFinished(id, last);
    ++job->pins;
    pinned.push_back(id);
  }
  return absl::OkStatus();
}

absl::Status StreamImpl::Subscribe(const v1::Subscribe& request) {
  YH_RETURN_IF_ERROR(CheckSubscribe(request));
  const std::string& id = request.subscription_id();
  auto invalid = [&id](const std::string& what) {
    return absl::InvalidArgumentError(
        absl::StrCat("subscription ", Quoted(id), ": ", what));
  };
  auto sub = std::make_shared<Subscription>();
  sub->id = id;
  sub->stream = this;
  sub->stream_ref = weak_from_this();
  sub->events.assign(kNumEvents, request.events().empty());
  for (const std::string& name : request.events()) {
    absl::StatusOr<Event> event = EventFromName(name);
    if (!event.ok()) return invalid(Str(event.status().message()));
    sub->events[static_cast<size_t>(*event)] = true;
  }
  std::vector<std::string> granted;
  for (Event e : AllEvents()) {
    if (sub->events[static_cast<size_t>(e)])
      granted.push_back(Str(EventName(e)));
  }
  sub->job_ids.insert(request.job_ids().begin(), request.job_ids().end());
  sub->match_labels.insert(request.match_labels().begin(),
                           request.match_labels().end());
  if (request.from_seq() < 0)
    return invalid(absl::StrCat("negative from_seq ", request.from_seq()));
  if (request.from_seq() > 0 && sub->job_ids.empty()) {
    return invalid("from_seq requires job_ids");
  }
  sub->intercept = request.mode() == v1::SUBSCRIPTION_MODE_INTERCEPT;
  if (sub->intercept && request.from_seq() > 0) {
    return invalid(
        "from_seq is for observers; interceptors only see new events");
  }
  const absl::Duration requested =
      wire::FromDurationProto(request.reply_timeout());
  if (requested < absl::ZeroDuration()) {
    return invalid(absl::StrCat("negative reply_timeout ",
                                absl::FormatDuration(requested)));
  }
  sub->reply_timeout = requested == absl::ZeroDuration()
                           ? bus_->options_.default_reply_timeout
                           : requested;
  sub->reply_timeout =
      std::min(sub->reply_timeout, bus_->options_.max_reply_timeout);
  sub->failure_mode = request.failure_mode() == v1::FAILURE_MODE_FAIL_JOB
                          ? v1::FAILURE_MODE_FAIL_JOB
                          : v1::FAILURE_MODE_CONTINUE;
  sub->priority = request.priority();
  sub->include_images = request.include_images();

  // The selected jobs stay in memory until the subscription refers to them
  // itself: the steps below drop the lock to read the log.
  std::vector<std::string> pinned;
  auto unpin = absl::MakeCleanup([this, &pinned] {
    absl::MutexLock lock(&bus_->mu_);
    for (const std::string& job : pinned) {
      if (JobTable::Job* entry = bus_->jobs_.Find(job)) --entry->pins;
      bus_->ReleaseIfUnusedLocked(job);
    }
  });
  YH_RETURN_IF_ERROR(PinSelectedJobs(*sub, pinned));
  // Oldest retained seq per selected job (reads the log; no lock).
  std::map<std::string, std::pair<int64_t, int64_t>> ring_info;
  {
    absl::MutexLock lock(&bus_->mu_);
    for (const std::string& job_id : sub->job_ids) {
      const JobTable::Job& job = *bus_->jobs_.Find(job_id);
      ring_info[job_id] = {JobTable::RingFront(job), job.published_seq};
    }
  }
  std::map<std::string, int64_t> oldest;
  for (const auto& [job, info] : ring_info) {
    oldest[job] = bus_->OldestKept(job, info.first, info.second);
  }

  NotifyList notify;
  absl::Status added;
  {
    absl::MutexLock lock(&bus_->mu_);
    added = AddLocked(sub, granted, request.from_seq(), oldest, notify);
  }
  bus_->Notify(notify);
  return added;
}

absl::Status StreamImpl::AddLocked(const std::shared_ptr<Subscription>& sub,
                                   const std::vector<std::string>& granted,
                                   int64_t from_seq,
                                   const std::map<std::string, int64_t>& oldest,
                                   NotifyList& notify) {
  const std::string quoted_id = Quoted(sub->id);
  if (bus_->shutdown_ || closed_) {
    return absl::UnavailableError(absl::StrCat(
        "subscription ", quoted_id, ": the server is shutting down"));
  }
  if (active_.count(sub->id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("subscription ", quoted_id,
                     ": duplicate subscription_id on this "
                     "stream"));
  }
  if (active_.size() >= bus_->options_.max_subscriptions_per_stream) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "subscription ", quoted_id, ": this stream already has ",
        active_.size(),
        " subscriptions, the limit per stream (yolohookd "
        "--max_subscriptions); unsubscribe one or open another stream"));
  }
  sub->order = bus_->next_order_++;
  v1::ServerMessage ack;
  v1::Subscribed* subscribed = ack.mutable_subscribed();
  subscribed->set_subscription_id(sub->id);
  for (const std::string& name : granted) subscribed->add_events(name);
  *subscribed->mutable_reply_timeout() =
      wire::ToDurationProto(sub->reply_timeout);
  std::string compacted;
  std::map<std::string, int64_t> compacted_resume;
  for (const auto& [job_id, job] : bus_->jobs_.jobs()) {
    if (!bus_->Selects(*sub, job_id, job)) continue;
    const int64_t front = JobTable::RingFront(job);
    int64_t first = job.published_seq + 1;
    if (auto it = oldest.find(job_id); it != oldest.end()) {
      first = std::min(it->second, front > 0 ? front : first);
    } else if (front > 0) {
      first = front;
    }
    (*subscribed->mutable_first_retained_seq())[job_id] = first;
    (*subscribed->mutable_last_seq())[job_id] = job.published_seq;
    if (from_seq > 0) {
      if (from_seq < first) {
        compacted_resume[job_id] = first;
        compacted =
            absl::StrCat(compacted.empty() ? "" : "; ", "job ", Quoted(job_id),
                         ": from_seq ", from_seq,
                         " is older than the oldest retained seq ", first);
      }
      sub->min_seq[job_id] = from_seq;
      if (from_seq <= job.published_seq) {
        sub->replay_cursor[job_id] = from_seq;
      } else {
        sub->next_seq[job_id] = from_seq;
      }
    } else {
      sub->next_seq[job_id] = job.published_seq + 1;
    }
  }
  bus_->subs_.push_back(sub);
  order_.push_back(sub);
  active_[sub->id] = sub;
  bus_->PushLocked(*sub, Outgoing::Whole(ack), notify);
  if (!compacted.empty()) {
    // The resume point is the oldest kept seq, not the requested one.
    sub->replay_cursor.clear();
    bus_->EndLocked(sub, v1::END_REASON_COMPACTED, compacted, "", notify,
                    compacted_resume);
  } else {
    bus_->MaybeJobsDoneLocked(sub, notify);
  }
  return absl::OkStatus();
}

absl::Status StreamImpl::Unsubscribe(const std::string& subscription_id) {
  NotifyList notify;
  {
    absl::MutexLock lock(&bus_->mu_);
    auto it = active_.find(subscription_id);
    if (it == active_.end()) {
      return absl::NotFoundError(absl::StrCat("unsubscribe: no subscription ",
                                              Quoted(subscription_id),
                                              " on this stream"));
    }
    std::shared_ptr<Subscription> sub = it->second;
    bus_->EndLocked(sub, v1::END_REASON_UNSUBSCRIBED, "unsubscribed",
                    "unsubscribed", notify);
  }
  bus_->Notify(notify);
  return absl::OkStatus();
}

OutgoingPtr StreamImpl::NextOf(const std::shared_ptr<Subscription>& sub,
                               NotifyList& notify) {
  while (true) {
    if (!sub->queue.empty()) {
      OutgoingPtr out = std::move(sub->queue.front());
      sub->queue.pop_front();
      return out;
    }
    if (sub->ended || sub->replay_cursor.empty()) return nullptr;
    const std::string job_id = sub->replay_cursor.begin()->first;
    int64_t& cursor = sub->replay_cursor.begin()->second;
    // A job with a replay cursor is never forgotten (ReleaseIfUnusedLocked).
    const JobTable::Job& job = *bus_->jobs_.Find(job_id);
    if (cursor > job.published_seq) {
      // Caught up: live delivery continues from here.
      sub->next_seq[job_id] = cursor;
      sub->replay_cursor.erase(job_id);
      sub->replay_buffer.erase(job_id);
      bus_->MaybeJobsDoneLocked(sub, notify);
      bus_->ReleaseIfUnusedLocked(job_id);
      continue;
    }
    const int64_t seq = cursor;
    std::deque<EventRecord>& buffer = sub->replay_buffer[job_id];
    while (!buffer.empty() && buffer.front().seq < seq) buffer.pop_front();
    Event kind;
    SharedBytes bytes;
    if (!buffer.empty() && buffer.front().seq == seq) {
      kind = buffer.front().event;
      bytes = std::move(buffer.front().bytes);
      buffer.pop_front();
    } else if (EventRecordPtr retained = bus_->jobs_.Retained(job, seq)) {
      kind = retained->event;
      bytes = retained->bytes;
    } else {
      // Older than memory: read a page from the log, without the lock.
      absl::StatusOr<std::vector<EventRecord>> page =
          absl::InvalidArgumentError("no event log configured");
      if (bus_->options_.log != nullptr) {
        bus_->mu_.Unlock();
        bus_->Flush();
        page = bus_->options_.log->Read(job_id, seq, kReplayPageSize);
        bus_->mu_.Lock();
      }
      if (sub->ended || !sub->replay_cursor.count(job_id)) continue;
      if (!page.ok() || page->empty() || page->front().seq != seq) {
        const JobTable::Job& now = *bus_->jobs_.Find(job_id);
        const int64_t front = JobTable::RingFront(now) > 0
                                  ? JobTable::RingFront(now)
                                  : now.published_seq + 1;
        const std::string why =
            !page.ok() ? absl::StrCat("reading the event log failed: ",
                                      page.status().message())
                       : absl::StrCat("seq ", seq, " of job ", Quoted(job_id),
                                      " is no longer retained");
        bus_->EndLocked(sub, v1::END_REASON_COMPACTED, why, "", notify,
                        {{job_id, front}});
        continue;
      }
      std::deque<EventRecord>& refill = sub->replay_buffer[job_id];
      refill.assign(std::make_move_iterator(page->begin()),
                    std::make_move_iterator(page->end()));
      continue;
    }
    cursor = seq + 1;
    if (!sub->events[static_cast<size_t>(kind)]) continue;
    // Replayed events carry no images.
    return Outgoing::ForEvent(std::move(bytes), sub->id);
  }
}

OutgoingPtr StreamImpl::Next() {
  absl::MutexLock next_lock(&next_mu_);
  NotifyList notify;
  OutgoingPtr out;
  {
    absl::MutexLock lock(&bus_->mu_);
    const size_t n = order_.size();
    for (size_t i = 0; i < n && out == nullptr; ++i) {
      if (order_.empty()) break;
      const size_t at = (rr_ + i) % order_.size();
      std::shared_ptr<Subscription> sub = order_[at];
      out = NextOf(sub, notify);
      if (out != nullptr) rr_ = at + 1;
      if (out != nullptr && out->kind == Outgoing::Kind::kEvent)
        ++bus_->stats_.events_sent;
    }
    // Ended subscriptions whose last message went out leave the stream.
    order_.erase(std::remove_if(order_.begin(), order_.end(),
                                [](const std::shared_ptr<Subscription>& s) {
                                  return s->ended && s->queue.empty();
                                }),
                 order_.end());
    if (!order_.empty()) rr_ %= order_.size();
  }
  bus_->Notify(notify);
  return out;
}

void StreamImpl::Close() {
  NotifyList notify;
  {
    absl::MutexLock lock(&bus_->mu_);
    if (closed_) return;
    closed_ = true;
    std::vector<std::shared_ptr<Subscription>> subs;
    for (const auto& [id, sub] : active_) subs.push_back(sub);
    for (const auto& sub : subs) {
      bus_->EndLocked(sub, v1::END_REASON_UNSUBSCRIBED,
                      "the client disconnected", "disconnected", notify);
    }
  }
  // The client is gone: no on_ready.
}

}  // namespace yolohook::events
