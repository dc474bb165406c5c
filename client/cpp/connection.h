// How the client reaches yolohookd: the channel its options ask for (bearer
// token, TLS files, limits, reconnect backoff), gRPC statuses as absl ones,
// and one unary call. Internal to the client library.
#ifndef YOLOHOOK_CLIENT_CPP_CONNECTION_H_
#define YOLOHOOK_CLIENT_CPP_CONNECTION_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/cpp/client.h"

namespace yolohook::client_internal {

// `status` as an absl::Status with the same code; UNAVAILABLE and
// DEADLINE_EXCEEDED name the server (`target`), and an oversized message
// names the limits on both sides.
absl::Status FromGrpc(const grpc::Status& status, const std::string& target);

// What a Client's options ask for, read once (files included).
class ChannelSetup {
 public:
  explicit ChannelSetup(const Client::Options& options);

  // The options' problem (a file missing or not PEM, a certificate without
  // its key), INVALID_ARGUMENT naming the option and file; every call
  // returns it.
  const absl::Status& problem() const { return problem_; }
  const std::string& target() const { return target_; }
  const std::string& token() const { return token_; }

  // A channel to the server. `own_connection`: one that shares no connection
  // with other channels (a stream reopened on a new channel then runs on a
  // new connection).
  std::shared_ptr<grpc::Channel> NewChannel(bool own_connection = false) const;

  // Adds the bearer token to a call's metadata.
  void Authorize(grpc::ClientContext& context) const;

 private:
  std::string target_;
  std::string token_;
  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  grpc::ChannelArguments args_;
  absl::Status problem_;
};

// One unary call of `method` on `stub` with the token and a deadline of
// `timeout` (infinite: none); the options' problem, or the server's answer.
template <typename Stub, typename Request, typename Response>
absl::StatusOr<Response> CallUnary(
    const ChannelSetup& setup, absl::Duration timeout, Stub& stub,
    grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                 Response*),
    const Request& request) {
  if (!setup.problem().ok()) return setup.problem();
  grpc::ClientContext context;
  setup.Authorize(context);
  if (timeout != absl::InfiniteDuration())
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  Response response;
  grpc::Status status = (stub.*method)(&context, request, &response);
  if (!status.ok()) return FromGrpc(status, setup.target());
  return response;
}

}  // namespace yolohook::client_internal

#endif  // YOLOHOOK_CLIENT_CPP_CONNECTION_H_
