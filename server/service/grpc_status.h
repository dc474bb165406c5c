// absl::Status -> grpc::Status, in one place.
#ifndef YOLOHOOK_SERVER_SERVICE_GRPC_STATUS_H_
#define YOLOHOOK_SERVER_SERVICE_GRPC_STATUS_H_

#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/status/status.h"

namespace yolohook::service {

// Same code, same message.
inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

}  // namespace yolohook::service

#endif  // YOLOHOOK_SERVER_SERVICE_GRPC_STATUS_H_
