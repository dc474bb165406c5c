// The event bus's insides, shared by its parts (internal to server/events):
//   job_table.h      sequencing and retention
//   log_writer.h     the event-log writer thread
//   subscriptions.cc subscriptions, fan-out and replay (the streams)
//   round_trips.cc   interceptor round trips
//   event_bus.cc     the public face: Publish's steps, jobs starting and ending
//
// One mutex (BusCore::mu_) guards the jobs, every subscription and every
// pending round trip; nothing calls out while holding it (on_ready, the
// EventLog, encode_jpeg and conversions run outside). The log writer has a
// lock of its own, never held together with mu_.
#ifndef YOLOHOOK_SERVER_EVENTS_BUS_CORE_H_
#define YOLOHOOK_SERVER_EVENTS_BUS_CORE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/events/audit.h"
#include "server/events/event_bus.h"
#include "server/events/job_table.h"
#include "server/events/log_writer.h"

namespace yolohook::events {

class StreamImpl;
struct RoundTrip;
// Streams to tell (on_ready) once the lock is released.
using NotifyList = std::vector<std::weak_ptr<StreamImpl>>;

// One subscription. Every field is guarded by the bus mutex.
struct Subscription {
  std::string id;
  // The owning stream; valid while the subscription has not ended.
  StreamImpl* stream = nullptr;
  // For on_ready outside the lock.
  std::weak_ptr<StreamImpl> stream_ref;
  // Bus-wide creation order (interceptor ties, and which subscriptions a
  // Publish saw).
  int64_t order = 0;
  std::set<std::string> job_ids;
  std::map<std::string, std::string> match_labels;
  // By Event index.
  std::vector<bool> events;
  bool intercept = false;
  absl::Duration reply_timeout;
  v1::FailureMode failure_mode = v1::FAILURE_MODE_CONTINUE;
  int32_t priority = 0;
  bool include_images = false;

  bool ended = false;
  std::deque<OutgoingPtr> queue;
  // Per job: the next seq this subscription expects (the resume point).
  std::map<std::string, int64_t> next_seq;
  // Per job: live events below this seq are skipped (from_seq ahead of the
  // job).
  std::map<std::string, int64_t> min_seq;
  // Per job being replayed: the next seq to replay, and events read ahead
  // from the EventLog.
  std::map<std::string, int64_t> replay_cursor;
  std::map<std::string, std::deque<EventRecord>> replay_buffer;
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
  // Bus clock.
  absl::Time sent;
  // Real clock, for the round trip's duration.
  absl::Time real_sent;
  // Bus clock.
  absl::Time deadline;
  // Real clock, for the wait.
  absl::Time real_deadline;
  bool extended = false;
  State state = State::kWaiting;
  // "disconnected", "unsubscribed", "was cut off by the server shutting down"
  std::string end_cause;
};

// Everything the bus shares with its streams.
class BusCore {
 public:
  using Options = EventBus::Options;
  explicit BusCore(Options options);
  // Stores and delivers what is still queued for the log.
  ~BusCore();

  // --- Subscriptions and fan-out (subscriptions.cc). ---

  bool Selects(const Subscription& sub, const std::string& job_id,
               const JobTable::Job& job) const;
  // Queues `message` for `sub`; notes the stream for on_ready when the queue
  // was empty.
  void PushLocked(Subscription& sub, OutgoingPtr message, NotifyList& notify)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends `sub` with `reason` (its queue drains first); its pending round
  // trips end with `cause`. `resume_override` replaces resume seqs.
  void EndLocked(const std::shared_ptr<Subscription>& sub, v1::EndReason reason,
                 const std::string& message, const std::string& cause,
                 NotifyList& notify,
                 const std::map<std::string, int64_t>& resume_override = {})
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends a job-id subscription whose jobs have all finished (an interrupted
  // job has not: it resumes) once its replays are done.
  void MaybeJobsDoneLocked(const std::shared_ptr<Subscription>& sub,
                           NotifyList& notify)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::map<std::string, int64_t> ResumeSeqsLocked(const Subscription& sub) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets a finished job no subscription refers to (JobTable).
  void ReleaseIfUnusedLocked(const std::string& job_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Delivers stored events to the observers that select them (the log
  // writer's hand-on, or Publish directly without a log).
  void Deliver(const std::vector<EventRecordPtr>& events)
      ABSL_LOCKS_EXCLUDED(mu_);
  void Notify(const NotifyList& streams) ABSL_LOCKS_EXCLUDED(mu_);

  // Waits until every event published so far is stored and delivered.
  void Flush() ABSL_LOCKS_EXCLUDED(mu_);
  // The oldest seq still retained for `job_id` (memory or log); reads the
  // log, so call without the lock. `ring_front` is the ring's first seq (0:
  // none) and `published` the job's last published seq.
  int64_t OldestKept(const std::string& job_id, int64_t ring_front,
                     int64_t published) ABSL_LOCKS_EXCLUDED(mu_);

  // --- Interceptor round trips (round_trips.cc). ---

  // Sends `ctx` (seq `seq`) to `sub` and blocks until it replies, times out
  // or goes away; then its failure mode applies. `event` is the message
  // addressed to it.
  void RoundTripWith(const std::shared_ptr<Subscription>& sub,
                     const std::string& job_id, int64_t seq,
                     const std::string& event_name, EventContext& ctx,
                     v1::ServerMessage event) ABSL_LOCKS_EXCLUDED(mu_);

  Options options_;
  mutable absl::Mutex mu_;
  // Round trips changed state.
  absl::CondVar cv_;
  JobTable jobs_ ABSL_GUARDED_BY(mu_);
  // Active subscriptions, in creation order.
  std::vector<std::shared_ptr<Subscription>> subs_ ABSL_GUARDED_BY(mu_);
  int64_t next_order_ ABSL_GUARDED_BY(mu_) = 0;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  BusStats stats_ ABSL_GUARDED_BY(mu_);
  // Null without a log (events are delivered by Publish itself).
  std::unique_ptr<LogWriter> writer_;
};

// One client stream: a list of subscriptions in delivery order (ended ones
// stay until their queue drains) and a map of the active ones by id.
// Subscribe, Unsubscribe, Next and Close are in subscriptions.cc; Reply and
// ExtendDeadline in round_trips.cc.
class StreamImpl : public Stream,
                   public std::enable_shared_from_this<StreamImpl> {
 public:
  StreamImpl(BusCore* bus, std::function<void()> on_ready, std::string client)
      : bus_(bus), on_ready_(std::move(on_ready)), client_(std::move(client)) {}
  ~StreamImpl() override { Close(); }

  absl::Status Subscribe(const v1::Subscribe& request) override;
  absl::Status Unsubscribe(const std::string& subscription_id) override;
  v1::ReplyResult Reply(const v1::Reply& reply) override;
  v1::ReplyResult ExtendDeadline(const v1::ExtendDeadline& request) override;
  OutgoingPtr Next() override;
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
  // Subscribe's steps.
  // The selected jobs, known and pinned in memory (jobs known only to the
  // log are looked up and registered); `pinned` receives what to unpin.
  // NOT_FOUND for a job that never existed.
  absl::Status PinSelectedJobs(const Subscription& sub,
                               std::vector<std::string>& pinned)
      ABSL_LOCKS_EXCLUDED(bus_->mu_);
  // Registers `sub`: its ack, where each selected job starts (replay or
  // live), COMPACTED for a from_seq older than what is retained.
  absl::Status AddLocked(const std::shared_ptr<Subscription>& sub,
                         const std::vector<std::string>& granted,
                         int64_t from_seq,
                         const std::map<std::string, int64_t>& oldest,
                         NotifyList& notify)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(bus_->mu_);

  // Reply without the round-trip notification; sets *round_trip when the
  // reply ended a round trip.
  v1::ReplyResult ReplyOnce(const v1::Reply& reply, absl::Duration* round_trip);

  // Produces the next message of `sub` (queue first, then replay). May drop
  // and retake the bus lock to read the EventLog. Null when it has none.
  OutgoingPtr NextOf(const std::shared_ptr<Subscription>& sub,
                     NotifyList& notify)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(bus_->mu_);

  // Writes the audit line of a reply (without bus locks held).
  void Audit(const AuditEntry& entry) const;

  BusCore* const bus_;
  const std::function<void()> on_ready_;
  // Who the stream belongs to.
  const std::string client_;
  // Serialises Next() (replay cursors, log reads).
  absl::Mutex next_mu_;
  // Round-robin position.
  size_t rr_ ABSL_GUARDED_BY(next_mu_) = 0;
};

}  // namespace yolohook::events

#endif  // YOLOHOOK_SERVER_EVENTS_BUS_CORE_H_
