// Authentication and authorization of gRPC calls, and the server's TLS
// credentials: the gRPC side of server/auth.
//
// Clients send the metadata `authorization: Bearer <token>`, or present a TLS
// client certificate that the token file maps to a client (cert:IDENTITY);
// each handler asks the Authorizer for the caller before doing anything.
// Health and reflection are not ours and stay open (kubelet probes carry no
// token).
#ifndef YOLOHOOK_SERVER_SERVICE_AUTH_H_
#define YOLOHOOK_SERVER_SERVICE_AUTH_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/auth/token_registry.h"
#include "server/auth/token_store.h"

namespace yolohook::service {

// Decides who a call comes from and whether it may go on, from the token
// file's clients in force (reloads take effect at the next call). Thread-safe.
class Authorizer {
 public:
  // Without a registry (null) authentication is off: every caller is an
  // admin, named after its peer address. The registry must outlive it.
  explicit Authorizer(const auth::TokenRegistry* tokens) : tokens_(tokens) {}

  bool enabled() const { return tokens_ != nullptr; }

  // Changes when the token file is reloaded (0 without one): a long-lived
  // stream checks its caller again when it differs from the one it saw.
  uint64_t generation() const {
    return tokens_ == nullptr ? 0 : tokens_->generation();
  }

  // The caller of `context` when its role allows `need`: the client of its
  // bearer token, else of its verified TLS client certificate. Errors:
  // UNAUTHENTICATED "missing bearer token" (no or malformed authorization
  // header, no certificate), UNAUTHENTICATED "unknown token" (never echoing
  // it), UNAUTHENTICATED for a certificate the token file does not name
  // (naming its identities), PERMISSION_DENIED naming `method`, the role it
  // needs and the caller's.
  absl::StatusOr<auth::Principal> Check(const grpc::ServerContextBase& context,
                                        auth::Role need,
                                        absl::string_view method) const;
  // Check without the caller: OK or its error.
  absl::Status Allow(const grpc::ServerContextBase& context, auth::Role need,
                     absl::string_view method) const {
    return Check(context, need, method).status();
  }

 private:
  const auth::TokenRegistry* const tokens_;
};

// The identities of the verified TLS client certificate of `context`: its
// subject common name, then its subject alternative names (empty without
// one).
std::vector<std::string> CertificateIdentities(
    const grpc::ServerContextBase& context);

// PERMISSION_DENIED: `method` needs role `need`, which `who` lacks.
absl::Status PermissionDenied(const auth::Principal& who, auth::Role need,
                              absl::string_view method);

// A bidi reactor that ends its call at once with `status`; deletes itself.
template <typename Request, typename Response>
grpc::ServerBidiReactor<Request, Response>* RejectStream(grpc::Status status) {
  class Reactor final : public grpc::ServerBidiReactor<Request, Response> {
   public:
    explicit Reactor(grpc::Status status) { this->Finish(std::move(status)); }
    void OnDone() override { delete this; }
  };
  return new Reactor(std::move(status));
}

// PEM files of the server's TLS.
struct TlsFiles {
  // certificate chain (--tls_cert); "" = plaintext
  std::string cert;
  // its private key (--tls_key)
  std::string key;
  // CA that signs client certificates (--tls_client_ca); "" = no client
  // certificates
  std::string client_ca;
};

// The credentials to listen with: insecure when `files` names nothing, TLS
// with cert and key, mutual TLS (clients must present a certificate signed by
// client_ca) with client_ca too. Errors (INVALID_ARGUMENT, naming the flag and
// the file): cert without key or the other way round, client_ca without them,
// a file that is missing, unreadable or not PEM.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFor(
    const TlsFiles& files);

// Whether `listen` (host:port, [v6]:port) only accepts local connections:
// 127.0.0.0/8, ::1 or localhost. 0.0.0.0, [::] and an empty host are not.
bool IsLoopback(absl::string_view listen);

// Reads a PEM file for `flag`. INVALID_ARGUMENT naming the flag and file when
// it is missing, unreadable, or has no "-----BEGIN" block.
absl::StatusOr<std::string> ReadPem(absl::string_view flag,
                                    const std::string& path);

}  // namespace yolohook::service

#endif  // YOLOHOOK_SERVER_SERVICE_AUTH_H_
