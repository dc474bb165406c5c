// The client's one HookService.Connect stream: opening it and opening it again
// after a break (with backoff, on a new connection when the old one may lead
// nowhere), the subscriptions it carries (SubscriptionTable resumes them), and
// the threads that read it, write to it and run callbacks. Internal to the
// client library; Client's remote-callback methods are these.
#ifndef YOLOHOOK_CLIENT_CPP_CALLBACK_STREAM_H_
#define YOLOHOOK_CLIENT_CPP_CALLBACK_STREAM_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/cpp/client.h"
#include "client/cpp/connection.h"
#include "client/cpp/subscriptions.h"
#include "yolohook/v1/callbacks.grpc.pb.h"

namespace yolohook::client_internal {

// Thread-safe. Three threads once started: the reader (connects, subscribes,
// reads), the writer (one write in flight, in queue order: nobody else blocks
// on a write) and the dispatcher (runs callbacks one at a time in arrival
// order, and queues interceptors' replies). Callbacks must not call Stop() or
// the destructor.
class CallbackStream {
 public:
  // `setup` must outlive the stream.
  CallbackStream(const Client::Options& options, const ChannelSetup& setup);
  // Stop().
  ~CallbackStream();

  // See Client::Subscribe, Unsubscribe, WaitEnded, Start and Stop.
  absl::StatusOr<std::string> Subscribe(const std::vector<std::string>& events,
                                        Callback fn, CallbackOptions options)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status Unsubscribe(const std::string& id) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status WaitEnded(const std::string& id, absl::Duration timeout)
      ABSL_LOCKS_EXCLUDED(mu_);
  void Start() ABSL_LOCKS_EXCLUDED(mu_);
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

  // The event being handled on this thread; null outside a callback.
  static const v1::Event* CurrentEvent();

 private:
  using Stream = grpc::ClientReaderWriter<v1::ClientMessage, v1::ServerMessage>;

  // One Connect call. Writes are serialised here; `closed` keeps writes away
  // once the reader finishes the call.
  struct Connection {
    uint64_t generation = 0;
    // Acknowledged delivery (guarded by CallbackStream::mu_): messages read,
    // events among them not yet handled by callbacks, and the count last
    // acknowledged. What the server may send beyond the acknowledged count is
    // bounded by its window, so a client whose callbacks stall soon gets no
    // more and its subscriptions end LAGGING on the server.
    int64_t received = 0;
    int64_t pending = 0;
    int64_t acked = 0;
    // Kept alive with its call.
    std::shared_ptr<grpc::Channel> channel;
    grpc::ClientContext context;
    std::unique_ptr<Stream> stream;
    absl::Mutex write_mu;
    bool closed ABSL_GUARDED_BY(write_mu) = false;

    bool Write(const v1::ClientMessage& message) {
      absl::MutexLock lock(&write_mu);
      if (closed) return false;
      return stream->Write(message);
    }
  };

  // Work for the dispatcher: an event to run callbacks on, or a
  // subscription's end (after its last event).
  struct Item {
    enum Kind { kEvent, kEnded };
    Kind kind = kEvent;
    std::shared_ptr<Subscription> sub;
    // Where an interceptor's reply goes.
    std::shared_ptr<Connection> conn;
    v1::Event event;
    absl::Status end_status;
  };

  // --- The reader's steps.
  void ReadLoop() ABSL_LOCKS_EXCLUDED(mu_);
  // Opens a Connect call (on a new channel when the last one may lead
  // nowhere) and queues the Subscribes it starts with; null when stopping.
  std::shared_ptr<Connection> Open() ABSL_LOCKS_EXCLUDED(mu_);
  // Ends a call whose reads ended: hands on what was unsubscribed meanwhile,
  // and returns the call's status.
  grpc::Status Close(Connection& conn) ABSL_LOCKS_EXCLUDED(mu_);
  void Handle(const std::shared_ptr<Connection>& conn,
              v1::ServerMessage& message) ABSL_LOCKS_EXCLUDED(mu_);
  void HandleError(const v1::StreamError& error) ABSL_LOCKS_EXCLUDED(mu_);
  void HandleEnded(const std::shared_ptr<Connection>& conn,
                   const v1::SubscriptionEnded& ended) ABSL_LOCKS_EXCLUDED(mu_);
  // Ends every subscription not yet ending with `status`.
  void EndAll(const absl::Status& status) ABSL_LOCKS_EXCLUDED(mu_);

  // --- The writer.
  // Queues a message for the writer thread.
  void Send(std::shared_ptr<Connection> conn, v1::ClientMessage message)
      ABSL_LOCKS_EXCLUDED(mu_);
  void WriteLoop() ABSL_LOCKS_EXCLUDED(mu_);
  // The current stream if it left a Subscribe unanswered for longer than
  // subscribe_timeout: the connection may lead nowhere (a peer that vanished
  // without closing it), so the reader reopens the stream on a new channel.
  std::shared_ptr<Connection> UnansweredLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // --- The dispatcher.
  // Queues work for the dispatcher; events wait while max_pending_events are
  // queued (`wait`).
  void Enqueue(Item item, bool wait) ABSL_LOCKS_EXCLUDED(mu_);
  void EnqueueEnd(std::shared_ptr<Subscription> sub, absl::Status status)
      ABSL_LOCKS_EXCLUDED(mu_) {
    Enqueue(Item{Item::kEnded, std::move(sub), nullptr, {}, std::move(status)},
            /*wait=*/false);
  }
  void DispatchLoop() ABSL_LOCKS_EXCLUDED(mu_);
  // Runs the subscription's function on the event's state; an interceptor's
  // changes go back as the reply's mutations.
  void Dispatch(Item& item) ABSL_LOCKS_EXCLUDED(mu_);

  void ReportError(const absl::Status& status) const;

  // An Ack for `conn` when enough was taken since the last one (or nothing
  // is pending any more); none otherwise.
  static std::optional<v1::ClientMessage> AckLocked(Connection& conn)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  bool CanQueueLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || queue_.size() < options_.max_pending_events;
  }
  bool HasWorkLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || !queue_.empty();
  }
  bool IdleLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !dispatching_ && !writing_ && outbox_.empty();
  }
  bool HasOutgoingLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || !outbox_.empty();
  }

  const Client::Options& options_;
  const ChannelSetup& setup_;
  // The stream's channel and stub; the reader's alone.
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::HookService::Stub> stub_;

  absl::Mutex mu_;
  SubscriptionTable subs_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // A callback is running.
  bool dispatching_ ABSL_GUARDED_BY(mu_) = false;
  // A write is in flight.
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  std::shared_ptr<Connection> current_ ABSL_GUARDED_BY(mu_);
  // A call being opened, for Stop() to cancel.
  std::shared_ptr<Connection> connecting_ ABSL_GUARDED_BY(mu_);
  // The next stream gets a new channel.
  bool fresh_channel_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<Item> queue_ ABSL_GUARDED_BY(mu_);
  std::deque<std::pair<std::shared_ptr<Connection>, v1::ClientMessage>> outbox_
      ABSL_GUARDED_BY(mu_);
  std::thread reader_;
  std::thread writer_;
  std::thread dispatcher_;
};

}  // namespace yolohook::client_internal

#endif  // YOLOHOOK_CLIENT_CPP_CALLBACK_STREAM_H_
