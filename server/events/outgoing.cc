#include "server/events/outgoing.h"

#include <cstdint>

namespace yolohook::events {
namespace {

// Wire tags: ServerMessage.event (field 2) and Event.subscription_id (field
// 1), both length-delimited (wire type 2).
constexpr char kServerMessageEventTag = (2 << 3) | 2;
constexpr char kEventSubscriptionIdTag = (1 << 3) | 2;

void AppendVarint(uint64_t value, std::string* out) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

const SharedBytes& EmptyBytes() {
  static const SharedBytes* empty = new SharedBytes(new std::string());
  return *empty;
}

}  // namespace

std::shared_ptr<const Outgoing> Outgoing::ForEvent(
    SharedBytes event, absl::string_view subscription_id) {
  auto out = std::make_shared<Outgoing>();
  out->kind = Kind::kEvent;
  if (!subscription_id.empty()) {
    out->tail.reserve(subscription_id.size() + 3);
    out->tail.push_back(kEventSubscriptionIdTag);
    AppendVarint(subscription_id.size(), &out->tail);
    out->tail.append(subscription_id.data(), subscription_id.size());
  }
  out->head.push_back(kServerMessageEventTag);
  AppendVarint(event->size() + out->tail.size(), &out->head);
  out->body = std::move(event);
  return out;
}

std::shared_ptr<const Outgoing> Outgoing::Whole(
    const v1::ServerMessage& message) {
  auto out = std::make_shared<Outgoing>();
  out->kind = message.has_event() ? Kind::kEvent : Kind::kOther;
  out->body = std::make_shared<const std::string>(message.SerializeAsString());
  return out;
}

std::string Outgoing::Flatten() const {
  std::string out;
  out.reserve(size());
  out += head;
  out += body != nullptr ? *body : *EmptyBytes();
  out += tail;
  return out;
}

v1::ServerMessage Outgoing::Parse() const {
  v1::ServerMessage message;
  message.ParseFromString(Flatten());
  return message;
}

SharedBytes Serialize(const v1::Event& event) {
  return std::make_shared<const std::string>(event.SerializeAsString());
}

}  // namespace yolohook::events
