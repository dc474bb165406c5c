// HookService: one long-lived bidirectional stream per client; a thin
// adapter between gRPC's callback API and the event layer's Stream.
#ifndef YOLOHOOK_SERVER_SERVICE_HOOK_SERVICE_H_
#define YOLOHOOK_SERVER_SERVICE_HOOK_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>

#include "server/events/event_bus.h"
#include "server/service/auth.h"
#include "yolohook/v1/callbacks.grpc.pb.h"

namespace yolohook::service {

// Serves Connect. Each stream gets an events::Stream; client messages are
// handed to it, and what it has ready is written one message at a time (the
// next write starts from OnWriteDone or from the bus's ready signal). Nothing
// blocks a reactor thread: interceptor waits happen on job threads.
//
// Opening the stream and observing need role viewer; intercept subscriptions,
// Reply and ExtendDeadline need operator: a viewer's attempt gets a
// StreamError with PERMISSION_DENIED and the stream stays open. The bus's
// stream carries the caller's name (its peer address when authentication is
// off).
//
// A stream whose client sends Acks (see the proto) gets at most
// `stream_window` messages from the bus beyond what it acknowledged: events
// then wait in the bus's bounded subscription queues, which end LAGGING when
// full, whatever the client's HTTP/2 window. Answers to the client's own
// messages (acks of subscriptions, reply results, errors) are not held back.
// Thread-safe. The bus and authorizer must outlive the service.
class HookServiceImpl final
    : public v1::HookService::WithRawCallbackMethod_Connect<
          v1::HookService::Service> {
 public:
  HookServiceImpl(events::EventBus* bus, const Authorizer* authorizer,
                  int64_t stream_window = 256)
      : bus_(bus), authorizer_(authorizer), stream_window_(stream_window) {}

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Connect(
      grpc::CallbackServerContext* context) override;

 private:
  events::EventBus* bus_;
  const Authorizer* authorizer_;
  const int64_t stream_window_;
};

}  // namespace yolohook::service

#endif  // YOLOHOOK_SERVER_SERVICE_HOOK_SERVICE_H_
