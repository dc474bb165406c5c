// CallbackService: one long-lived bidirectional stream per client; a thin
// adapter between gRPC's callback API and the event layer's Stream.
#ifndef YOLOHOOK_SERVER_SERVICE_CALLBACK_SERVICE_H_
#define YOLOHOOK_SERVER_SERVICE_CALLBACK_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include "server/events/event_bus.h"
#include "yolohook/v1/callbacks.grpc.pb.h"

namespace yolohook::service {

// Serves Connect. Each stream gets an events::Stream; client messages are
// handed to it, and what it has ready is written one message at a time (the
// next write starts from OnWriteDone or from the bus's ready signal). Nothing
// blocks a reactor thread: interceptor waits happen on job threads.
// Thread-safe. The bus must outlive the service.
class CallbackServiceImpl final : public v1::CallbackService::CallbackApi {
 public:
  explicit CallbackServiceImpl(events::EventBus* bus) : bus_(bus) {}

  grpc::ServerBidiReactor<v1::ClientMessage, v1::ServerMessage>* Connect(
      grpc::CallbackServerContext* context) override;

 private:
  events::EventBus* bus_;
};

}  // namespace yolohook::service

#endif  // YOLOHOOK_SERVER_SERVICE_CALLBACK_SERVICE_H_
