// What the bus hands its transports: yolohook.v1.ServerMessage already
// serialized, in pieces, so that an event is serialized once however many
// subscriptions receive it. A delivery adds only the few bytes that name its
// subscription (protobuf merges fields in any order, so the event's
// subscription_id may follow its other fields).
#ifndef YOLOHOOK_SERVER_EVENTS_OUTGOING_H_
#define YOLOHOOK_SERVER_EVENTS_OUTGOING_H_

#include <cstddef>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "yolohook/v1/callbacks.pb.h"
#include "yolohook/v1/types.pb.h"

namespace yolohook::events {

// Serialized bytes shared by every message that carries them.
using SharedBytes = std::shared_ptr<const std::string>;

// One serialized yolohook.v1.ServerMessage: head, then *body, then tail.
// Immutable once built; shared between threads.
struct Outgoing {
  // What the message is, for counters (the bytes say it too).
  enum class Kind { kEvent, kOther };

  // An event for one subscription: `event` is a serialized yolohook.v1.Event
  // without subscription fields, shared; `subscription_id` is appended.
  static std::shared_ptr<const Outgoing> ForEvent(
      SharedBytes event, absl::string_view subscription_id);
  // Any other message (acks, ends, reply results, errors, events built for
  // one interceptor), serialized whole.
  static std::shared_ptr<const Outgoing> Whole(
      const v1::ServerMessage& message);

  // Bytes on the wire.
  size_t size() const { return head.size() + body->size() + tail.size(); }
  // The bytes in one piece (tests, and transports that need one buffer).
  std::string Flatten() const;
  // The message, parsed (tests, the dashboard's JSON). A message built here
  // always parses.
  v1::ServerMessage Parse() const;

  Kind kind = Kind::kOther;
  // The ServerMessage's `event` tag and length (empty for whole messages).
  std::string head;
  // Never null.
  SharedBytes body;
  // The event's subscription_id field (empty for whole messages).
  std::string tail;
};

using OutgoingPtr = std::shared_ptr<const Outgoing>;

// `event` serialized for sharing (SharedBytes of event.SerializeAsString()).
SharedBytes Serialize(const v1::Event& event);

}  // namespace yolohook::events

#endif  // YOLOHOOK_SERVER_EVENTS_OUTGOING_H_
