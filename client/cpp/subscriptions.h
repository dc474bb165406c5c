// The client's subscriptions and where each one stands across reconnects:
// the resume half of the callback protocol (what to send on a new stream,
// which events are duplicates, what a SubscriptionEnded means). No threads, no
// gRPC calls: CallbackStream drives it. Internal to the client library.
#ifndef YOLOHOOK_CLIENT_CPP_SUBSCRIPTIONS_H_
#define YOLOHOOK_CLIENT_CPP_SUBSCRIPTIONS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client/cpp/client.h"
#include "yolohook/v1/callbacks.pb.h"

namespace yolohook::client_internal {

// One subscription across reconnects. `id`, `events`, `options` and `fn` are
// fixed once added; the rest is guarded by the owner of its table.
struct Subscription {
  // The client's name for it.
  std::string id;
  // Event names; empty: all.
  std::vector<std::string> events;
  CallbackOptions options;
  Callback fn;

  // The id on the current stream: "<id>.<attempt>", so that a late message of
  // an earlier attempt is told apart.
  std::string wire_id;
  // Subscribes sent so far.
  int attempts = 0;
  // The stream the last Subscribe went to (0: none yet, or to be sent again).
  uint64_t sent_generation = 0;
  // When the last Subscribe was built.
  absl::Time sent_at;
  // The last Subscribe was acknowledged.
  bool acked = false;
  // The server accepted it once.
  bool ever_acked = false;
  // Per job: the next seq expected; lower ones are duplicates.
  std::map<std::string, int64_t> next_seq;
  // No more Subscribes: ended, or on its way out.
  bool ending = false;
  // Its end was handled after its last event.
  bool ended = false;
  absl::Status end_status;
};

// What a SubscriptionEnded asks of the stream.
enum class EndAction {
  // Not ours (an earlier attempt's), or nothing to do.
  kIgnore,
  // The subscription is over: hand its end to the callbacks' thread.
  kEnd,
  // Subscribe again on this stream, from the resume seqs.
  kResubscribe,
  // The server is going away: the reconnect subscribes again.
  kAwaitReconnect,
};

// Thread-compatible.
class SubscriptionTable {
 public:
  // What a subscription's options leave unset.
  struct Defaults {
    // Interceptors' reply timeout (zero: the server's default).
    absl::Duration reply_timeout = absl::ZeroDuration();
    // Interceptors' failure mode.
    v1::FailureMode failure_mode = v1::FAILURE_MODE_CONTINUE;
  };

  explicit SubscriptionTable(Defaults defaults) : defaults_(defaults) {}

  // A new subscription, named "cb<N>".
  std::shared_ptr<Subscription> Add(std::vector<std::string> events,
                                    CallbackOptions options, Callback fn);
  // By the client's id, or by the id of its current attempt on the wire;
  // null when unknown (or an earlier attempt's).
  std::shared_ptr<Subscription> Find(const std::string& id) const;
  std::shared_ptr<Subscription> FindWire(const std::string& wire_id) const;
  void Erase(const std::string& id) { subs_.erase(id); }

  // A Subscribe for `sub` on stream `generation`, as a new attempt.
  // Observers following job ids resume after the last event they received
  // from each job (the lowest of them; later duplicates are dropped by
  // Accept).
  v1::ClientMessage BuildSubscribe(Subscription& sub, uint64_t generation);
  // Subscribes for every subscription not ending that was not sent on stream
  // `generation` yet: what a new stream starts with.
  std::vector<v1::ClientMessage> SubscribeAll(uint64_t generation);

  // The server accepted `sub`: where each of its jobs starts.
  void OnAck(Subscription& sub, const v1::Subscribed& ack);
  // Whether `event` is new to `sub`, and notes it as seen; false for
  // duplicates of what came before a resume, and once `sub` is ending.
  bool Accept(Subscription& sub, const v1::Event& event);
  // What the end of `sub` means. For LAGGING and COMPACTED the subscription
  // resumes from the server's resume seqs; `*problem` tells of events that
  // are lost (COMPACTED past what was seen, or a subscription that cannot
  // resume without a gap: by labels, or an interceptor).
  EndAction OnEnded(Subscription& sub, const v1::SubscriptionEnded& ended,
                    absl::Status* problem);

  // Subscriptions on their way out whose end was not handled yet.
  std::vector<std::shared_ptr<Subscription>> Ending() const;
  // Ends every subscription not already ending with `status`; returns them.
  std::vector<std::shared_ptr<Subscription>> EndAll(const absl::Status& status);
  // Whether a Subscribe sent on stream `generation` went unanswered for
  // longer than `timeout`.
  bool HasUnanswered(uint64_t generation, absl::Time now,
                     absl::Duration timeout) const;
  // Marks every subscription not ended as ended with `status` (nothing will
  // end them any more).
  void MarkAllEnded(const absl::Status& status);

 private:
  const Defaults defaults_;
  int next_ = 0;
  std::map<std::string, std::shared_ptr<Subscription>> subs_;
};

}  // namespace yolohook::client_internal

#endif  // YOLOHOOK_CLIENT_CPP_SUBSCRIPTIONS_H_
