// The event layer: every job's callback events, sequenced, retained, replayed
// and delivered to subscriptions; interceptors' round trips. No gRPC, no torch:
// it speaks the wire's message types (yolohook.v1 protos), and an event is
// converted and serialized once and its bytes shared by every subscriber.
#ifndef YOLOHOOK_SERVER_EVENTS_EVENT_BUS_H_
#define YOLOHOOK_SERVER_EVENTS_EVENT_BUS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/callbacks/callbacks.h"
#include "server/callbacks/state.h"
#include "server/events/event_log.h"
#include "server/events/outgoing.h"
#include "yolohook/v1/callbacks.pb.h"
#include "yolohook/v1/types.pb.h"

namespace yolohook::events {

class EventBus;

// One client stream's view of the bus: its subscriptions, their bounded queues
// and its pending interceptor round trips. Created by EventBus::Connect, owned
// by the transport (the gRPC reactor). Thread-safe.
//
// The transport calls Next() whenever it can write (after the on_ready
// notification or a finished write) and sends what it returns; it never blocks
// the bus.
class Stream {
 public:
  virtual ~Stream() = default;

  // Adds a subscription from the client's Subscribe. On success the ack
  // (Subscribed) is the next message for this subscription, followed by any
  // replay (from_seq) and then live events. Errors (the stream stays open):
  // INVALID_ARGUMENT (empty or duplicate id, unknown event name, from_seq
  // without job_ids, negative timeout), NOT_FOUND (a job id that does not
  // exist and never existed), RESOURCE_EXHAUSTED (too many subscriptions on
  // this stream), each naming the subscription. Also INVALID_ARGUMENT for
  // from_seq on an intercepting subscription (interceptors only see new
  // events), and UNAVAILABLE once the stream is closed or the bus shut down.
  // A job id known only to the EventLog (a previous run) counts as an existing,
  // finished job. Replayed events carry no images.
  virtual absl::Status Subscribe(const v1::Subscribe& request) = 0;

  // Ends a subscription (SubscriptionEnded with UNSUBSCRIBED is queued). Its
  // pending round trips take their failure mode at once. NOT_FOUND if unknown.
  virtual absl::Status Unsubscribe(const std::string& subscription_id) = 0;

  // The answer to an awaited event. Every mutation is validated against the
  // event (allowed there, finite numbers, class ids within names, sane boxes,
  // known hyperparameters): all apply, or none does. A reply for a seq that
  // awaits nothing (late, duplicate, unknown) is rejected and counted. The
  // returned ReplyResult is for the transport to send. A reply whose mutations
  // are rejected still ends that round trip, without changes: the failure mode
  // is for silence (timeouts, disconnects), not for a wrong answer. Every
  // reply writes one audit line (Options::audit_log): what changed, or why
  // nothing did.
  virtual v1::ReplyResult Reply(const v1::Reply& reply) = 0;

  // More time for one awaited event, once per event, capped by the bus's
  // maximum reply timeout. The result has applied = true and the new deadline
  // when granted; otherwise a reason (and the unchanged deadline, if the event
  // is awaited).
  virtual v1::ReplyResult ExtendDeadline(const v1::ExtendDeadline& request) = 0;

  // The next message to write, serialized, or nullptr when none is ready.
  // Non-blocking.
  virtual OutgoingPtr Next() = 0;

  // The client went away: subscriptions end, pending round trips take their
  // failure mode at once. Idempotent.
  virtual void Close() = 0;

  // Who the stream belongs to, as given to EventBus::Connect (for logs that
  // say who applied what).
  virtual const std::string& client() const = 0;
};

// Counters for metrics and tests.
struct BusStats {
  int64_t log_failures = 0;        // batches the EventLog failed to store
  int64_t events_published = 0;    // events sequenced
  int64_t messages_queued = 0;     // events queued to subscriptions
  int64_t events_sent = 0;         // events handed to transports by Next()
  int64_t replies_applied = 0;     // replies whose mutations applied
  int64_t replies_rejected = 0;    // invalid mutations, spurious replies
  int64_t mutations_rejected = 0;  // replies rejected for invalid mutations
  int64_t reply_timeouts = 0;      // interceptors that missed a deadline
  int64_t lagging_ended = 0;       // subscriptions ended for lagging
  // Active now (gauges, not counters).
  int64_t observer_subscriptions = 0;
  int64_t intercept_subscriptions = 0;
  // Jobs held in memory: running ones, and finished ones a subscription
  // still refers to.
  int64_t jobs_in_memory = 0;
};

// Sequences each job's events, retains them (in memory, and through an
// EventLog), delivers them to matching subscriptions, and runs interceptors.
// Thread-safe.
//
// Rules:
// - Each job's events carry seq 1, 2, 3, ... without gaps, in firing order.
// - Interceptors (intercept subscriptions that match the job and event and
//   whose ack was sent before the event fired) run one after another in
//   ascending priority, ties in subscription order. Each gets the state after
//   the previous one's mutations; Publish blocks the job's thread until each
//   replies, misses its deadline (reply_timeout, extendable once up to
//   max_reply_timeout) or disconnects; then its failure mode applies at once:
//   CONTINUE, or fail the job (EventContext::Fail with a reason naming the
//   subscription and event). Observers receive the final state.
// - Observers never slow a job: each subscription has a bounded queue; one
//   that falls behind is ended with LAGGING and per-job resume seqs.
// - from_seq replays retained events exactly once, in order, then continues
//   live. A from_seq older than retention ends the subscription with
//   COMPACTED and the oldest seq kept.
// Never calls out (on_ready, EventLog) while holding its own lock.
// Streams returned by Connect must be released before the bus is destroyed.
class EventBus {
 public:
  struct Options {
    size_t queue_limit =
        1024;  // queued messages per subscription before LAGGING
    size_t memory_retention = 4096;             // events per job kept in memory
    size_t max_subscriptions_per_stream = 256;  // RESOURCE_EXHAUSTED beyond
    absl::Duration default_reply_timeout =
        absl::Seconds(5);  // when Subscribe sets none
    absl::Duration max_reply_timeout =
        absl::Seconds(60);    // cap, extensions included
    EventLog* log = nullptr;  // persistence; may be null (memory only)
    // Encodes a frame as JPEG, for subscriptions with include_images; may be
    // null (no images). Called on the job's thread.
    std::function<std::string(const FrameView&)> encode_jpeg;
    // The clock for deadlines (tests inject a fake). Null: the real clock.
    std::function<absl::Time()> now;
    // Told, for each reply that ends a round trip, the real time from
    // queueing the event for the interceptor to its reply (metrics). Called
    // on the replying thread without bus locks; must be cheap. May be null.
    std::function<void(absl::Duration)> on_round_trip;
    // Receives the audit line of every reply (see audit.h), without the
    // trailing newline; called without bus locks held. Null: stdout.
    std::function<void(absl::string_view line)> audit_log;
  };

  explicit EventBus(Options options);
  ~EventBus();

  // A client stream. `on_ready` is called (from any thread, without bus locks
  // held) when Next() may have something new; it must not block. `client`
  // names who the stream belongs to (the authenticated name, or an address)
  // in logs, such as the audit line of each reply.
  std::shared_ptr<Stream> Connect(std::function<void()> on_ready,
                                  std::string client = "");

  // A job exists (or resumes): label-selected subscriptions start following
  // it. `args` are carried by its events and `attempt` (1 for the first run,
  // one more for each resume) marks them. Call before its first Publish; a
  // resumed job continues its seq after the last one stored.
  void StartJob(const std::string& job_id,
                const std::map<std::string, std::string>& labels,
                const std::map<std::string, std::string>& args,
                int32_t attempt = 1);

  // Publishes `ctx` as the job's next event (see the class comment); returns
  // its seq. Called on the job's thread; blocks only for interceptors, and
  // for the EventLog when it falls a few events behind: events are stored on
  // a thread of the bus, all but the job's last 4 by the time Publish returns,
  // and all of them by the time FinishJob returns.
  int64_t Publish(const std::string& job_id, EventContext& ctx);

  // A callback for the engine that publishes every event of `job_id`.
  Callback CallbackFor(const std::string& job_id);

  // How a job stopped publishing.
  enum class JobEnd {
    // It reached a final state.
    kFinished,
    // A server going away stopped it; it resumes later as a new attempt.
    kInterrupted,
  };

  // The job stopped (call after its last Publish returned). Subscriptions
  // that select only finished jobs end with JOBS_DONE once their queues
  // drain; an interrupted job is not finished: its subscriptions stay until
  // Shutdown ends them with SHUTDOWN and the seq to resume from. With an
  // EventLog, the job's events are released from memory (replays read the
  // log), and the job itself once no subscription refers to it.
  void FinishJob(const std::string& job_id, JobEnd end = JobEnd::kFinished);

  // Waits until every event published so far is in the EventLog (events are
  // stored on a thread of the bus). No-op without a log.
  void FlushLog();

  // The job's last seq so far (0 before its first event); for a finished job
  // no longer in memory, the last one in the log.
  int64_t LastSeq(const std::string& job_id) const;

  // Ends every subscription with SHUTDOWN and releases waiting jobs (their
  // interceptors' failure modes apply).
  void Shutdown();

  BusStats stats() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace yolohook::events

#endif  // YOLOHOOK_SERVER_EVENTS_EVENT_BUS_H_
