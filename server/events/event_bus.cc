// EventBus and its streams. One mutex (BusCore::mu_) guards every job, every
// subscription and every pending round trip; nothing calls out while holding
// it (on_ready, EventLog, encode_jpeg and the conversions run outside).
//
// EventLog appends run on a thread of the bus, in publish order, so that a job
// does not wait for storage: Publish returns once its event is queued for the
// log, waiting only while kMaxUnstored of the job's earlier events are not
// stored yet. The memory ring keeps events until they are stored, and every
// read of the log first waits for the queued appends, so replays see every
// published event.
//
// Replays are lazy: a subscription with from_seq keeps a cursor per job and
// Next() turns the retained events (memory ring, else EventLog pages) into
// messages one at a time. While a job's cursor exists, its live events are not
// queued; when the cursor passes the job's last published seq (checked under
// the lock, where publishing happens too) the cursor is dropped and live
// delivery takes over, so the boundary loses and repeats nothing.
#include "server/events/event_bus.h"

#include <algorithm>
#include <cstdio>
#include <deque>
#include <set>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/arena.h"
#include "server/common/limits.h"
#include "server/common/status_macros.h"
#include "server/events/audit.h"
#include "server/events/conversions.h"

namespace yolohook::events {
namespace {

using EventPtr = std::shared_ptr<const v1::Event>;
using MessagePtr = std::shared_ptr<const v1::ServerMessage>;

// Events read from the EventLog per page during a replay.
constexpr int64_t kReplayPageSize = 256;

// A job's events that may wait for the EventLog when Publish returns: enough
// to keep the job's thread from waiting for each append, few enough that a
// crash loses little.
constexpr size_t kMaxUnstored = 64;

std::string Str(absl::string_view s) { return std::string(s.data(), s.size()); }

// `event` addressed to one subscription. The copy lives on an arena owned by
// the returned pointer: one allocation per message instead of one per map
// entry and string, which dominated delivery to many observers.
MessagePtr EventMessage(const v1::Event& event,
                        const std::string& subscription_id) {
  google::protobuf::ArenaOptions options;
  options.start_block_size = std::max<size_t>(1024, 4 * event.ByteSizeLong());
  auto arena = std::make_shared<google::protobuf::Arena>(options);
  auto* message =
      google::protobuf::Arena::CreateMessage<v1::ServerMessage>(arena.get());
  v1::Event* copy = message->mutable_event();
  *copy = event;
  copy->set_subscription_id(subscription_id);
  return MessagePtr(std::move(arena), message);
}

}  // namespace

class StreamImpl;
struct RoundTrip;
using NotifyList = std::vector<std::weak_ptr<StreamImpl>>;

// One subscription. All fields are guarded by the bus mutex.
struct Subscription {
  std::string id;
  StreamImpl* stream = nullptr;  // the owning stream; valid while not ended
  std::weak_ptr<StreamImpl> stream_ref;  // for on_ready outside the lock
  int64_t order = 0;                     // bus-wide creation order
  std::set<std::string> job_ids;
  std::map<std::string, std::string> match_labels;
  std::vector<bool> events;  // by Event index
  bool intercept = false;
  absl::Duration reply_timeout;
  v1::FailureMode failure_mode = v1::FAILURE_MODE_CONTINUE;
  int32_t priority = 0;
  bool include_images = false;

  bool ended = false;
  std::deque<MessagePtr> queue;
  // Per job: the next seq this subscription expects (the resume point).
  std::map<std::string, int64_t> next_seq;
  // Per job: live events below this seq are skipped (from_seq in the future).
  std::map<std::string, int64_t> min_seq;
  // Per job being replayed: the next seq to replay, and events read ahead
  // from the EventLog.
  std::map<std::string, int64_t> replay_cursor;
  std::map<std::string, std::deque<v1::Event>> replay_buffer;
  // Pending round trips by (job, seq).
  std::map<std::pair<std::string, int64_t>, RoundTrip*> pending;
};

// One interceptor's wait for a reply. Guarded by the bus mutex.
struct RoundTrip {
  enum class State { kWaiting, kReplied, kEnded };
  std::shared_ptr<Subscription> sub;
  std::string job_id;
  int64_t seq = 0;
  std::string event_name;
  EventContext* ctx = nullptr;
  absl::Time sent;           // bus clock
  absl::Time real_sent;      // real clock, for the round trip's duration
  absl::Time deadline;       // bus clock
  absl::Time real_deadline;  // real clock, for the wait
  bool extended = false;
  State state = State::kWaiting;
  std::string end_cause;  // "disconnected", "unsubscribed", "server shut down"
};

// A job the bus knows: one that is running, or a finished one that a
// subscription still refers to (by id or by a replay cursor). With an
// EventLog, finished jobs nobody refers to are forgotten (their events stay
// in the log), so that memory follows live jobs, not every job ever run.
struct JobRecord {
  std::map<std::string, std::string> labels;
  std::map<std::string, std::string> args;
  int64_t last_seq = 0;       // last seq handed out
  int64_t published_seq = 0;  // last seq whose final event is retained
  int64_t logged_seq = 0;     // last seq the EventLog stored
  std::deque<EventPtr> ring;  // the last memory_retention events, and any
                              // not yet stored
  int32_t attempt = 1;        // the run its events belong to
  // Subscribe calls in progress that hold the job in memory.
  int pins = 0;
  bool finished = false;
  // Stopped by a server going away; it resumes (here or on another server),
  // so subscriptions that follow it do not end with JOBS_DONE.
  bool interrupted = false;
};

// Everything the bus shares with its streams.
class BusCore {
 public:
  using Options = EventBus::Options;
  explicit BusCore(Options options) : options_(std::move(options)) {
    if (!options_.now) options_.now = [] { return absl::Now(); };
    if (options_.log != nullptr)
      log_thread_ = std::thread([this] { LogLoop(); });
  }

  // Stores what is still queued for the log, then stops its thread.
  ~BusCore() {
    if (!log_thread_.joinable()) return;
    {
      absl::MutexLock lock(&log_mu_);
      log_stop_ = true;
    }
    log_thread_.join();
  }

  Options options_;
  mutable absl::Mutex mu_;
  absl::CondVar cv_;  // round trips changed state
  std::map<std::string, JobRecord> jobs_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<Subscription>> subs_
      ABSL_GUARDED_BY(mu_);  // active, in order
  int64_t next_order_ ABSL_GUARDED_BY(mu_) = 0;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  BusStats stats_ ABSL_GUARDED_BY(mu_);

  // The log writer's queue. Never held together with mu_.
  absl::Mutex log_mu_;
  std::deque<EventPtr> log_queue_ ABSL_GUARDED_BY(log_mu_);
  int64_t log_queued_ ABSL_GUARDED_BY(log_mu_) = 0;   // events ever queued
  int64_t log_written_ ABSL_GUARDED_BY(log_mu_) = 0;  // events ever stored
  bool appending_ ABSL_GUARDED_BY(log_mu_) = false;   // a batch is being stored
  // Per job: the tickets (log_queued_ after queueing) of its last
  // kMaxUnstored events.
  std::map<std::string, std::deque<int64_t>> log_tickets_
      ABSL_GUARDED_BY(log_mu_);
  bool log_stop_ ABSL_GUARDED_BY(log_mu_) = false;
  std::thread log_thread_;

  // Queues the job's event for the log once all but its last kMaxUnstored
  // events are stored. When it must wait and nobody is storing (the log
  // thread has not been scheduled yet, e.g. while training keeps the cores
  // busy), the job's thread stores the queue itself rather than wait for a
  // wake-up. Called by Publish, without mu_.
  void QueueForLog(const std::string& job_id, EventPtr event)
      ABSL_LOCKS_EXCLUDED(mu_, log_mu_) {
    absl::MutexLock lock(&log_mu_);
    std::deque<int64_t>& tickets = log_tickets_[job_id];
    if (tickets.size() >= kMaxUnstored) {
      const int64_t oldest = tickets.front();
      tickets.pop_front();
      auto progress = [this, oldest]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(log_mu_) {
        return log_written_ >= oldest || (!appending_ && !log_queue_.empty());
      };
      while (log_written_ < oldest) {
        log_mu_.Await(absl::Condition(&progress));
        if (log_written_ < oldest) AppendQueuedLocked();
      }
    }
    log_queue_.push_back(std::move(event));
    tickets.push_back(++log_queued_);
  }

  // Waits until every event queued so far is stored (read-your-writes for
  // log reads). No-op without a log.
  void FlushLog() ABSL_LOCKS_EXCLUDED(mu_, log_mu_) {
    if (options_.log == nullptr) return;
    absl::MutexLock lock(&log_mu_);
    const int64_t target = log_queued_;
    auto stored = [this, target]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(log_mu_) {
      return log_written_ >= target;
    };
    log_mu_.Await(absl::Condition(&stored));
  }

  // Drops the ring's oldest events beyond memory_retention that the log (if
  // any) has stored.
  void TrimRingLocked(JobRecord& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const size_t keep = std::max<size_t>(options_.memory_retention, 1);
    while (job.ring.size() > keep &&
           (options_.log == nullptr ||
            job.ring.front()->seq() <= job.logged_seq)) {
      job.ring.pop_front();
    }
  }

  // Stores everything queued, in order, as the only appender; releases
  // log_mu_ meanwhile. Requires a non-empty queue and nobody appending.
  void AppendQueuedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(log_mu_)
      ABSL_LOCKS_EXCLUDED(mu_) {
    std::deque<EventPtr> batch;
    batch.swap(log_queue_);
    appending_ = true;
    log_mu_.Unlock();
    std::vector<const v1::Event*> events;
    events.reserve(batch.size());
    for (const EventPtr& event : batch) events.push_back(event.get());
    // A failed append costs only replays beyond memory; the job goes on.
    options_.log->AppendAll(events).IgnoreError();
    {
      absl::MutexLock lock(&mu_);
      for (const EventPtr& event : batch) {
        auto it = jobs_.find(event->job_id());
        if (it == jobs_.end()) continue;
        it->second.logged_seq = std::max(it->second.logged_seq, event->seq());
        TrimRingLocked(it->second);
      }
    }
    log_mu_.Lock();
    appending_ = false;
    log_written_ += static_cast<int64_t>(batch.size());
  }

  // The log thread: stores queued events in order, a batch at a time, until
  // stopped with nothing left to store.
  void LogLoop() ABSL_LOCKS_EXCLUDED(mu_, log_mu_) {
    absl::MutexLock lock(&log_mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(log_mu_) {
      return !appending_ && (!log_queue_.empty() || log_stop_);
    };
    while (true) {
      log_mu_.Await(absl::Condition(&ready));
      if (log_queue_.empty()) return;  // stopping, and everything stored
      AppendQueuedLocked();
    }
  }

  bool Selects(const Subscription& sub, const std::string& job_id,
               const JobRecord& job) const {
    if (!sub.job_ids.empty()) return sub.job_ids.count(job_id) > 0;
    for (const auto& [key, value] : sub.match_labels) {
      auto it = job.labels.find(key);
      if (it == job.labels.end() || it->second != value) return false;
    }
    return true;
  }

  // Queues `message` for `sub`; notes the stream for on_ready when the queue
  // was empty.
  void PushLocked(Subscription& sub, MessagePtr message, NotifyList& notify)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const bool was_empty = sub.queue.empty();
    sub.queue.push_back(std::move(message));
    if (was_empty) notify.push_back(sub.stream_ref);
  }

  void EndLocked(const std::shared_ptr<Subscription>& sub, v1::EndReason reason,
                 const std::string& message, const std::string& cause,
                 NotifyList& notify,
                 const std::map<std::string, int64_t>& resume_override = {})
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Ends a job-id subscription whose jobs have all finished (an interrupted
  // job has not: it resumes) once its replays are done.
  void MaybeJobsDoneLocked(const std::shared_ptr<Subscription>& sub,
                           NotifyList& notify)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (sub->ended || sub->job_ids.empty() || !sub->replay_cursor.empty())
      return;
    for (const std::string& id : sub->job_ids) {
      auto it = jobs_.find(id);
      if (it != jobs_.end() &&
          (!it->second.finished || it->second.interrupted)) {
        return;
      }
    }
    EndLocked(sub, v1::END_REASON_JOBS_DONE, "every selected job finished", "",
              notify);
  }

  // Forgets a finished job that no subscription refers to any more (see
  // JobRecord). Its events are in the log by then (FinishJob flushed it).
  void ReleaseIfUnusedLocked(const std::string& job_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (options_.log == nullptr) return;
    auto it = jobs_.find(job_id);
    if (it == jobs_.end() || !it->second.finished || it->second.pins > 0)
      return;
    for (const auto& sub : subs_) {
      if (sub->job_ids.count(job_id) || sub->replay_cursor.count(job_id))
        return;
    }
    jobs_.erase(it);
  }

  std::map<std::string, int64_t> ResumeSeqsLocked(const Subscription& sub) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::map<std::string, int64_t> out = sub.next_seq;
    for (const auto& [job, cursor] : sub.replay_cursor) out[job] = cursor;
    return out;
  }

  void Notify(const NotifyList& streams) ABSL_LOCKS_EXCLUDED(mu_);

  // The oldest seq still retained for `job_id` (memory or log); reads the log,
  // so call without the lock. `ring_front` is the ring's first seq (0: empty)
  // and `published` the job's last published seq.
  int64_t OldestKept(const std::string& job_id, int64_t ring_front,
                     int64_t published) {
    if (options_.log != nullptr) {
      FlushLog();
      absl::StatusOr<std::vector<v1::Event>> first =
          options_.log->Read(job_id, 1, 1);
      if (first.ok() && !first->empty()) {
        const int64_t seq = first->front().seq();
        return ring_front > 0 ? std::min(seq, ring_front) : seq;
      }
    }
    return ring_front > 0 ? ring_front : published + 1;
  }

  void StartJobLocked(const std::string& job_id,
                      const std::map<std::string, std::string>& labels,
                      const std::map<std::string, std::string>& args,
                      int64_t last_seq, int32_t attempt)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    JobRecord& job = jobs_[job_id];
    job.labels = labels;
    job.args = args;
    job.attempt = std::max(attempt, 1);
    job.finished = false;
    job.interrupted = false;
    job.last_seq = std::max(job.last_seq, last_seq);
    job.published_seq = std::max(job.published_seq, last_seq);
    for (const auto& sub : subs_) {
      if (Selects(*sub, job_id, job) && !sub->next_seq.count(job_id) &&
          !sub->replay_cursor.count(job_id)) {
        sub->next_seq[job_id] = job.published_seq + 1;
      }
    }
  }
};

// The stream: a list of subscriptions in delivery order (ended ones stay
// until their queue drains) and a map of the active ones by id.
class StreamImpl : public Stream,
                   public std::enable_shared_from_this<StreamImpl> {
 public:
  StreamImpl(BusCore* bus, std::function<void()> on_ready, std::string client)
      : bus_(bus), on_ready_(std::move(on_ready)), client_(std::move(client)) {}
  ~StreamImpl() override { Close(); }

  absl::Status Subscribe(const v1::Subscribe& request) override;
  absl::Status Unsubscribe(const std::string& subscription_id) override;
  v1::ReplyResult Reply(const v1::Reply& reply) override;
  // Reply without the round-trip notification; sets *round_trip when the
  // reply ended a round trip.
  v1::ReplyResult ReplyOnce(const v1::Reply& reply, absl::Duration* round_trip);
  v1::ReplyResult ExtendDeadline(const v1::ExtendDeadline& request) override;
  std::shared_ptr<const v1::ServerMessage> Next() override;
  void Close() override;
  const std::string& client() const override { return client_; }

  // Drops an ended subscription's id (it may be reused). The caller holds the
  // bus mutex, which is this stream's bus_->mu_; the analysis cannot see
  // through the alias.
  void ForgetLocked(const std::string& id) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    active_.erase(id);
  }

  void OnReady() {
    if (on_ready_) on_ready_();
  }

  std::vector<std::shared_ptr<Subscription>> order_ ABSL_GUARDED_BY(bus_->mu_);
  std::map<std::string, std::shared_ptr<Subscription>> active_
      ABSL_GUARDED_BY(bus_->mu_);
  bool closed_ ABSL_GUARDED_BY(bus_->mu_) = false;

 private:
  // Produces the next message of `sub` (queue first, then replay). May drop
  // and retake the bus lock to read the EventLog. Null when it has none.
  MessagePtr NextOf(const std::shared_ptr<Subscription>& sub,
                    NotifyList& notify)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(bus_->mu_);

  // Writes the audit line of a reply (without bus locks held).
  void Audit(const AuditEntry& entry) const;

  BusCore* const bus_;
  const std::function<void()> on_ready_;
  const std::string client_;  // who the stream belongs to
  absl::Mutex next_mu_;       // serialises Next() (replay cursors, log reads)
  size_t rr_ ABSL_GUARDED_BY(next_mu_) = 0;  // round-robin position
};

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

void BusCore::EndLocked(const std::shared_ptr<Subscription>& sub,
                        v1::EndReason reason, const std::string& message,
                        const std::string& cause, NotifyList& notify,
                        const std::map<std::string, int64_t>& resume_override) {
  if (sub->ended) return;
  auto end = std::make_shared<v1::ServerMessage>();
  v1::SubscriptionEnded* ended = end->mutable_subscription_ended();
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
  PushLocked(*sub, std::move(end), notify);
  for (const std::string& job_id : sub->job_ids) ReleaseIfUnusedLocked(job_id);
}

namespace {

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

// The ids of a Reply or ExtendDeadline, checked before they are repeated.
absl::Status CheckReplyIds(absl::string_view what,
                           const std::string& subscription_id,
                           const std::string& job_id) {
  YH_RETURN_IF_ERROR(CheckLength(absl::StrCat(what, ".subscription_id"),
                                 subscription_id, kMaxIdBytes));
  return CheckLength(absl::StrCat(what, ".job_id"), job_id, kMaxIdBytes);
}

}  // namespace

absl::Status StreamImpl::Subscribe(const v1::Subscribe& request) {
  YH_RETURN_IF_ERROR(CheckSubscribe(request));
  const std::string& id = request.subscription_id();
  const std::string quoted_id = Quoted(id);
  auto invalid = [&quoted_id](const std::string& what) {
    return absl::InvalidArgumentError(
        absl::StrCat("subscription ", quoted_id, ": ", what));
  };
  auto sub = std::make_shared<Subscription>();
  sub->id = id;
  sub->stream = this;
  sub->stream_ref = weak_from_this();
  sub->events.assign(kNumEvents, request.events().empty());
  std::vector<std::string> granted;
  for (const std::string& name : request.events()) {
    absl::StatusOr<Event> event = EventFromName(name);
    if (!event.ok()) return invalid(Str(event.status().message()));
    sub->events[static_cast<size_t>(*event)] = true;
  }
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
  const absl::Duration requested = FromDurationProto(request.reply_timeout());
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

  // The selected jobs are pinned in memory until the subscription refers to
  // them itself, so that none is released between the steps below (which
  // drop the lock to read the log).
  std::vector<std::string> pinned;
  auto unpin = absl::MakeCleanup([this, &pinned] {
    absl::MutexLock lock(&bus_->mu_);
    for (const std::string& job : pinned) {
      auto it = bus_->jobs_.find(job);
      if (it != bus_->jobs_.end()) --it->second.pins;
      bus_->ReleaseIfUnusedLocked(job);
    }
  });
  // Jobs unknown in memory may still be in the log (a restart, or a job
  // finished and released): look them up without the lock, then register
  // them as finished.
  std::map<std::string, int64_t> logged_last;
  std::vector<std::string> unknown;
  {
    absl::MutexLock lock(&bus_->mu_);
    for (const std::string& job : sub->job_ids) {
      auto it = bus_->jobs_.find(job);
      if (it == bus_->jobs_.end()) {
        unknown.push_back(job);
      } else {
        ++it->second.pins;
        pinned.push_back(job);
      }
    }
  }
  if (!unknown.empty()) bus_->FlushLog();
  for (const std::string& job : unknown) {
    int64_t last = 0;
    if (bus_->options_.log != nullptr) {
      absl::StatusOr<int64_t> seq = bus_->options_.log->LastSeq(job);
      if (seq.ok()) last = *seq;
    }
    if (last <= 0) {
      return absl::NotFoundError(absl::StrCat("subscription ", quoted_id,
                                              ": job ", Quoted(job),
                                              " does not exist"));
    }
    logged_last[job] = last;
  }
  // Oldest retained seq per selected job id (reads the log; no lock).
  std::map<std::string, std::pair<int64_t, int64_t>>
      ring_info;  // front, published
  {
    absl::MutexLock lock(&bus_->mu_);
    for (const auto& [job, last] : logged_last) {
      if (!bus_->jobs_.count(job)) {
        bus_->StartJobLocked(job, {}, {}, last, 1);
        bus_->jobs_[job].finished = true;
      }
      ++bus_->jobs_[job].pins;
      pinned.push_back(job);
    }
    for (const std::string& job : sub->job_ids) {
      const JobRecord& record = bus_->jobs_[job];
      ring_info[job] = {record.ring.empty() ? 0 : record.ring.front()->seq(),
                        record.published_seq};
    }
  }
  std::map<std::string, int64_t> oldest;
  for (const auto& [job, info] : ring_info) {
    oldest[job] = bus_->OldestKept(job, info.first, info.second);
  }

  NotifyList notify;

  {
    absl::MutexLock lock(&bus_->mu_);
    if (bus_->shutdown_ || closed_) {
      return absl::UnavailableError(absl::StrCat(
          "subscription ", quoted_id, ": the server is shutting down"));
    }
    if (active_.count(id))
      return invalid("duplicate subscription_id on this stream");
    if (active_.size() >= bus_->options_.max_subscriptions_per_stream) {
      return absl::ResourceExhaustedError(
          absl::StrCat("subscription ", quoted_id, ": this stream already has ",
                       active_.size(),
                       " subscriptions, the limit per stream (yolohookd "
                       "--max_subscriptions); unsubscribe one or open another "
                       "stream"));
    }
    sub->order = bus_->next_order_++;
    auto ack = std::make_shared<v1::ServerMessage>();
    v1::Subscribed* subscribed = ack->mutable_subscribed();
    subscribed->set_subscription_id(id);
    for (const std::string& name : granted) subscribed->add_events(name);
    *subscribed->mutable_reply_timeout() = ToDurationProto(sub->reply_timeout);
    std::string compacted;
    std::map<std::string, int64_t> compacted_resume;
    for (auto& [job_id, job] : bus_->jobs_) {
      if (!bus_->Selects(*sub, job_id, job)) continue;
      const int64_t front = job.ring.empty() ? 0 : job.ring.front()->seq();
      int64_t first = job.published_seq + 1;
      if (oldest.count(job_id)) {
        first = std::min(oldest[job_id], front > 0 ? front : first);
      } else if (front > 0) {
        first = front;
      }
      (*subscribed->mutable_first_retained_seq())[job_id] = first;
      (*subscribed->mutable_last_seq())[job_id] = job.published_seq;
      const int64_t from = request.from_seq();
      if (from > 0) {
        if (from < first) {
          compacted_resume[job_id] = first;
          compacted = absl::StrCat(
              compacted.empty() ? "" : "; ", "job \"", job_id, "\": from_seq ",
              from, " is older than the oldest retained seq ", first);
        }
        sub->min_seq[job_id] = from;
        if (from <= job.published_seq) {
          sub->replay_cursor[job_id] = from;
        } else {
          sub->next_seq[job_id] = from;
        }
      } else {
        sub->next_seq[job_id] = job.published_seq + 1;
      }
    }
    bus_->subs_.push_back(sub);
    order_.push_back(sub);
    active_[id] = sub;
    bus_->PushLocked(*sub, std::move(ack), notify);
    if (!compacted.empty()) {
      // The resume point is the oldest kept seq, not the requested one.
      sub->replay_cursor.clear();
      bus_->EndLocked(sub, v1::END_REASON_COMPACTED, compacted, "", notify,
                      compacted_resume);
    } else {
      bus_->MaybeJobsDoneLocked(sub, notify);
    }
  }
  bus_->Notify(notify);
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
    auto it = active_.find(reply.subscription_id());
    RoundTrip* trip = nullptr;
    if (it != active_.end()) {
      auto p = it->second->pending.find({reply.job_id(), reply.seq()});
      if (p != it->second->pending.end() &&
          p->second->state == RoundTrip::State::kWaiting) {
        trip = p->second;
      }
    }
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
      it->second->pending.erase({reply.job_id(), reply.seq()});
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
  auto it = active_.find(request.subscription_id());
  RoundTrip* trip = nullptr;
  if (it != active_.end()) {
    auto p = it->second->pending.find({request.job_id(), request.seq()});
    if (p != it->second->pending.end() &&
        p->second->state == RoundTrip::State::kWaiting) {
      trip = p->second;
    }
  }
  if (trip == nullptr) {
    result.set_reason(absl::StrCat(
        "no event of job ", Quoted(request.job_id()), " seq ", request.seq(),
        " awaits a reply on subscription ", Quoted(request.subscription_id())));
    return result;
  }
  *result.mutable_deadline() = ToTimestamp(trip->deadline);
  const absl::Duration extension = FromDurationProto(request.extension());
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
  *result.mutable_deadline() = ToTimestamp(capped);
  return result;
}

MessagePtr StreamImpl::NextOf(const std::shared_ptr<Subscription>& sub,
                              NotifyList& notify) {
  while (true) {
    if (!sub->queue.empty()) {
      MessagePtr out = std::move(sub->queue.front());
      sub->queue.pop_front();
      return out;
    }
    if (sub->ended || sub->replay_cursor.empty()) return nullptr;
    const std::string job_id = sub->replay_cursor.begin()->first;
    int64_t& cursor = sub->replay_cursor.begin()->second;
    // A job with a replay cursor is never released (ReleaseIfUnusedLocked).
    JobRecord& job = bus_->jobs_[job_id];
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
    EventPtr event;
    std::deque<v1::Event>& buffer = sub->replay_buffer[job_id];
    while (!buffer.empty() && buffer.front().seq() < seq) buffer.pop_front();
    if (!buffer.empty() && buffer.front().seq() == seq) {
      event = std::make_shared<const v1::Event>(std::move(buffer.front()));
      buffer.pop_front();
    } else if (!job.ring.empty() && job.ring.front()->seq() <= seq) {
      event = job.ring[static_cast<size_t>(seq - job.ring.front()->seq())];
    } else {
      // Older than memory: read a page from the log, without the lock.
      absl::StatusOr<std::vector<v1::Event>> page =
          absl::InvalidArgumentError("no event log configured");
      if (bus_->options_.log != nullptr) {
        bus_->mu_.Unlock();
        bus_->FlushLog();
        page = bus_->options_.log->Read(job_id, seq, kReplayPageSize);
        bus_->mu_.Lock();
      }
      if (sub->ended || !sub->replay_cursor.count(job_id)) continue;
      if (!page.ok() || page->empty() || page->front().seq() != seq) {
        const int64_t front =
            job.ring.empty() ? job.published_seq + 1 : job.ring.front()->seq();
        const std::string why =
            !page.ok() ? absl::StrCat("reading the event log failed: ",
                                      page.status().message())
                       : absl::StrCat("seq ", seq, " of job \"", job_id,
                                      "\" is no longer retained");
        bus_->EndLocked(sub, v1::END_REASON_COMPACTED, why, "", notify,
                        {{job_id, front}});
        continue;
      }
      std::deque<v1::Event>& refill = sub->replay_buffer[job_id];
      refill.assign(std::make_move_iterator(page->begin()),
                    std::make_move_iterator(page->end()));
      continue;
    }
    cursor = seq + 1;
    auto it = EventFromName(event->name());
    if (!it.ok() || !sub->events[static_cast<size_t>(*it)]) continue;
    return EventMessage(*event, sub->id);
  }
}

std::shared_ptr<const v1::ServerMessage> StreamImpl::Next() {
  absl::MutexLock next_lock(&next_mu_);
  NotifyList notify;
  MessagePtr out;
  {
    absl::MutexLock lock(&bus_->mu_);
    const size_t n = order_.size();
    for (size_t i = 0; i < n && out == nullptr; ++i) {
      if (order_.empty()) break;
      const size_t at = (rr_ + i) % order_.size();
      std::shared_ptr<Subscription> sub = order_[at];
      out = NextOf(sub, notify);
      if (out != nullptr) rr_ = at + 1;
      if (out != nullptr && out->has_event()) ++bus_->stats_.events_sent;
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
    impl_->FlushLog();
    absl::StatusOr<int64_t> seq = impl_->options_.log->LastSeq(job_id);
    if (seq.ok()) last = *seq;
  }
  absl::MutexLock lock(&impl_->mu_);
  impl_->StartJobLocked(job_id, labels, args, last, attempt);
}

int64_t EventBus::Publish(const std::string& job_id, EventContext& ctx) {
  Impl& b = *impl_;
  bool known;
  {
    absl::MutexLock lock(&b.mu_);
    known = b.jobs_.count(job_id) > 0;
  }
  if (!known) StartJob(job_id, {}, {});

  const size_t event_index = static_cast<size_t>(ctx.event);
  const absl::Time time = b.options_.now();
  int64_t seq;
  int32_t attempt;
  std::map<std::string, std::string> args;
  std::vector<std::shared_ptr<Subscription>> interceptors;
  {
    absl::MutexLock lock(&b.mu_);
    JobRecord& job = b.jobs_[job_id];
    seq = ++job.last_seq;
    attempt = job.attempt;
    ++b.stats_.events_published;
    args = job.args;
    if (!b.shutdown_) {
      for (const auto& sub : b.subs_) {
        if (sub->intercept && sub->events[event_index] &&
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
  const std::string event_name = Str(EventName(ctx.event));

  for (const auto& sub : interceptors) {
    auto message = std::make_shared<v1::ServerMessage>();
    v1::Event* event = message->mutable_event();
    *event = ToWire(job_id, seq, time, ctx, args,
                    sub->include_images
                        ? encode
                        : std::function<std::string(const FrameView&)>());
    event->set_attempt(attempt);
    event->set_subscription_id(sub->id);
    event->set_reply_required(true);
    RoundTrip trip;
    trip.sub = sub;
    trip.job_id = job_id;
    trip.seq = seq;
    trip.event_name = event_name;
    trip.ctx = &ctx;
    trip.sent = b.options_.now();
    trip.deadline = trip.sent + sub->reply_timeout;
    trip.real_sent = absl::Now();
    trip.real_deadline = trip.real_sent + sub->reply_timeout;
    *event->mutable_deadline() = ToTimestamp(trip.deadline);
    NotifyList notify;
    bool timed_out = false;
    {
      absl::MutexLock lock(&b.mu_);
      if (sub->ended) continue;
      sub->pending[{job_id, seq}] = &trip;
      b.PushLocked(*sub, std::move(message), notify);
      ++b.stats_.messages_queued;
    }
    b.Notify(notify);
    notify.clear();
    {
      absl::MutexLock lock(&b.mu_);
      while (trip.state == RoundTrip::State::kWaiting) {
        if (absl::Now() >= trip.real_deadline) {
          timed_out = true;
          break;
        }
        b.cv_.WaitWithDeadline(&b.mu_, trip.real_deadline);
      }
      if (timed_out) {
        sub->pending.erase({job_id, seq});
        ++b.stats_.reply_timeouts;
      }
      if (trip.state != RoundTrip::State::kReplied &&
          sub->failure_mode == v1::FAILURE_MODE_FAIL_JOB) {
        if (timed_out) {
          ctx.Fail(
              absl::StrCat("interceptor ", sub->id, " did not reply to ",
                           event_name, " seq ", seq, " within ",
                           absl::FormatDuration(trip.deadline - trip.sent)));
        } else {
          ctx.Fail(absl::StrCat("interceptor ", sub->id, " ", trip.end_cause,
                                " before replying to ", event_name, " seq ",
                                seq));
        }
      }
    }
  }

  // The final state, converted once; a copy with frames only if an observer
  // asked for them.
  v1::Event wire = ToWire(job_id, seq, time, ctx, args, nullptr);
  wire.set_attempt(attempt);
  auto final_event = std::make_shared<const v1::Event>(std::move(wire));
  std::vector<std::shared_ptr<Subscription>> observers;
  bool want_images = false;
  int64_t max_order = 0;
  {
    absl::MutexLock lock(&b.mu_);
    max_order = b.next_order_;
    JobRecord& job = b.jobs_[job_id];
    for (const auto& sub : b.subs_) {
      if (!sub->intercept && sub->events[event_index] &&
          b.Selects(*sub, job_id, job)) {
        observers.push_back(sub);
        want_images = want_images || sub->include_images;
      }
    }
  }
  EventPtr image_event;
  if (want_images && encode && ctx.predictor != nullptr &&
      !ctx.predictor->frames.empty()) {
    v1::Event with_images = ToWire(job_id, seq, time, ctx, args, encode);
    with_images.set_attempt(attempt);
    image_event = std::make_shared<const v1::Event>(std::move(with_images));
  }
  auto wrap = [&](const Subscription& sub) {
    return EventMessage(
        (sub.include_images && image_event) ? *image_event : *final_event,
        sub.id);
  };
  // Copies are made outside the lock; subscriptions added meanwhile get theirs
  // under it.
  std::map<Subscription*, MessagePtr> prepared;
  for (const auto& sub : observers) prepared[sub.get()] = wrap(*sub);

  NotifyList notify;
  {
    absl::MutexLock lock(&b.mu_);
    JobRecord& job = b.jobs_[job_id];
    job.ring.push_back(final_event);
    b.TrimRingLocked(job);
    job.published_seq = seq;
    std::vector<std::shared_ptr<Subscription>> subs = b.subs_;
    for (const auto& sub : subs) {
      if (sub->intercept || sub->ended || !b.Selects(*sub, job_id, job))
        continue;
      if (sub->replay_cursor.count(job_id))
        continue;  // the replay will reach it
      auto min = sub->min_seq.find(job_id);
      if (min != sub->min_seq.end() && seq < min->second) continue;
      if (!sub->events[event_index]) continue;
      if (sub->queue.size() >= b.options_.queue_limit) {
        // Every earlier matching event was queued: this one is the first
        // missed.
        sub->next_seq[job_id] = seq;
        ++b.stats_.lagging_ended;
        b.EndLocked(sub, v1::END_REASON_LAGGING,
                    absl::StrCat(
                        "more than ", b.options_.queue_limit,
                        " messages waiting; resume with from_seq = resume_seq"),
                    "", notify);
        continue;
      }
      MessagePtr message;
      auto it = prepared.find(sub.get());
      if (it != prepared.end() && sub->order < max_order) {
        message = std::move(it->second);
      } else {
        message = wrap(*sub);
      }
      b.PushLocked(*sub, std::move(message), notify);
      sub->next_seq[job_id] = seq + 1;
      ++b.stats_.messages_queued;
    }
  }
  b.Notify(notify);
  if (b.options_.log != nullptr) b.QueueForLog(job_id, std::move(final_event));
  return seq;
}

Callback EventBus::CallbackFor(const std::string& job_id) {
  return [this, job_id](EventContext& ctx) { Publish(job_id, ctx); };
}

void EventBus::FlushLog() { impl_->FlushLog(); }

void EventBus::FinishJob(const std::string& job_id, JobEnd end) {
  impl_->FlushLog();
  {
    absl::MutexLock lock(&impl_->log_mu_);
    impl_->log_tickets_.erase(job_id);
  }
  NotifyList notify;
  {
    absl::MutexLock lock(&impl_->mu_);
    auto it = impl_->jobs_.find(job_id);
    if (it == impl_->jobs_.end()) return;
    it->second.finished = true;
    it->second.interrupted = end == JobEnd::kInterrupted;
    // With a log every event is stored by now (flushed above): later replays
    // read it, and memory stays bounded by live jobs.
    if (impl_->options_.log != nullptr) it->second.ring.clear();
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
    auto it = impl_->jobs_.find(job_id);
    if (it != impl_->jobs_.end()) return it->second.last_seq;
  }
  // A finished job the bus has forgotten: its events are in the log.
  if (impl_->options_.log == nullptr) return 0;
  impl_->FlushLog();
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
      for (const auto& [id, job] : impl_->jobs_) {
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
