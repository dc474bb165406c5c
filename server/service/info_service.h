// InfoService: what the server offers (ServerInfo: version, the event
// catalogue, job arguments and hyperparameters with their ranges, limits),
// built once at start.
#ifndef YOLOHOOK_SERVER_SERVICE_INFO_SERVICE_H_
#define YOLOHOOK_SERVER_SERVICE_INFO_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "server/service/auth.h"
#include "yolohook/v1/info.grpc.pb.h"

namespace yolohook::service {

// The ServerInfo of a server with `server_limits` (its flags' limits by name,
// see info.proto) and, when `auth`, bearer tokens: the version, every event
// with its modes and allowed mutations, every job argument, and the limits on
// what clients send (server/common/limits.h) besides the server's own.
v1::ServerInfo MakeServerInfo(
    const std::map<std::string, int64_t>& server_limits, bool auth);

// GetServerInfo, served from raw bytes (see unary_call.h); needs role viewer.
// Thread-safe; the authorizer must outlive it.
class InfoServiceImpl final
    : public v1::InfoService::WithRawCallbackMethod_GetServerInfo<
          v1::InfoService::Service> {
 public:
  InfoServiceImpl(v1::ServerInfo info, const Authorizer* authorizer)
      : info_(std::move(info)), authorizer_(authorizer) {}

  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* in,
                                          grpc::ByteBuffer* out) override;

 private:
  const v1::ServerInfo info_;
  const Authorizer* const authorizer_;
};

}  // namespace yolohook::service

#endif  // YOLOHOOK_SERVER_SERVICE_INFO_SERVICE_H_
