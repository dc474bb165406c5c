// Unary calls served from their raw bytes. gRPC's typed callback handlers
// answer a request that does not parse with UNIMPLEMENTED and no message, which
// tells the client the method does not exist; parsing here answers
// INVALID_ARGUMENT naming the method and the message type instead.
#ifndef YOLOHOOK_SERVER_SERVICE_UNARY_CALL_H_
#define YOLOHOOK_SERVER_SERVICE_UNARY_CALL_H_

#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "server/service/grpc_status.h"

namespace yolohook::service {

// Parses `in` into `message`; false when the bytes are not a `Message`.
template <typename Message>
bool ParseFromByteBuffer(const grpc::ByteBuffer& in, Message* message) {
  grpc::ByteBuffer copy(in);  // shares the slices; parsing consumes it
  return grpc::SerializationTraits<Message>::Deserialize(&copy, message).ok();
}

// Serializes `message` into `out`.
template <typename Message>
void SerializeToByteBuffer(const Message& message, grpc::ByteBuffer* out) {
  bool own = false;
  grpc::SerializationTraits<Message>::Serialize(message, out, &own);
}

// INVALID_ARGUMENT for a request of `method` that is not a `type`.
inline grpc::Status Unparsable(absl::string_view method,
                               absl::string_view type) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                      absl::StrCat(method, ": the request is not a valid ",
                                   type, " message (it does not parse)"));
}

// One unary call: its parsed request and the response it will send. Owns
// itself: deleted in OnDone. Finish may be called once, from any thread,
// before or after the handler returned the call to gRPC.
template <typename Request, typename Response>
class UnaryCall final : public grpc::ServerUnaryReactor {
 public:
  // Starts a call of `method` from the raw request `in`; the response is
  // written to `out` when the call finishes OK. When `in` does not parse, the
  // call has already finished with INVALID_ARGUMENT and parsed() is false.
  static UnaryCall* Start(absl::string_view method, const grpc::ByteBuffer* in,
                          grpc::ByteBuffer* out) {
    auto* call = new UnaryCall(out);
    call->parsed_ = in != nullptr && ParseFromByteBuffer(*in, &call->request_);
    if (!call->parsed_) {
      call->ServerUnaryReactor::Finish(
          Unparsable(method, Request::descriptor()->full_name()));
    }
    return call;
  }

  bool parsed() const { return parsed_; }
  const Request& request() const { return request_; }
  Response* response() { return &response_; }

  // Ends the call; on OK the client receives response().
  void Finish(const absl::Status& status) { Finish(ToGrpcStatus(status)); }
  void Finish(const grpc::Status& status) {
    if (status.ok()) SerializeToByteBuffer(response_, out_);
    ServerUnaryReactor::Finish(status);
  }

  void OnDone() override { delete this; }

 private:
  explicit UnaryCall(grpc::ByteBuffer* out) : out_(out) {}

  grpc::ByteBuffer* const out_;
  bool parsed_ = false;
  Request request_;
  Response response_;
};

}  // namespace yolohook::service

#endif  // YOLOHOOK_SERVER_SERVICE_UNARY_CALL_H_
