// Who a client is: bearer tokens read from a token file, each naming a client
// and its role. No RPC dependency, so every transport (gRPC, HTTP) shares it.
//
// The token file has one client per line, `token,name,role` (like the static
// token file of Kubernetes); blank lines and lines starting with # are
// ignored; role is viewer, operator or admin. A client that presents a TLS
// certificate (mutual TLS) instead of a token is named by `cert:IDENTITY` in
// the token field, where IDENTITY is the certificate's subject common name or
// one of its subject alternative names (DNS, URI, e-mail or IP):
//
//   # token,name,role
//   3f9c1e...,grafana,viewer
//   8b20d4...,ci,operator
//   cert:trainer.ml.example.com,trainer,operator
#ifndef YOLOHOOK_SERVER_AUTH_TOKEN_STORE_H_
#define YOLOHOOK_SERVER_AUTH_TOKEN_STORE_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace yolohook::auth {

// Ordered: each role may do everything the roles below it may.
//   viewer:   watch (observe subscriptions), GetJob, ListJobs, health
//   operator: also SubmitJob, CancelJob, Predict, PredictStream, intercept
//             subscriptions, Reply and ExtendDeadline
//   admin:    everything (also what is reserved for administrators)
enum class Role { kViewer, kOperator, kAdmin };

// "viewer", "operator" or "admin".
absl::string_view RoleName(Role role);
// The role named `name` (lower case, as RoleName writes it); nullopt if none.
std::optional<Role> RoleFromName(absl::string_view name);
// Whether a client with role `have` may do what needs `need`.
bool Allows(Role have, Role need);

// An authenticated client.
struct Principal {
  // from the token file; unique within it
  std::string name;
  Role role;
};

// The clients of a token file, looked up by token. Immutable once loaded.
// Thread-safe.
class TokenStore {
 public:
  // Reads and checks the token file at `path`. Errors: NOT_FOUND when it does
  // not exist, FAILED_PRECONDITION when it cannot be read, INVALID_ARGUMENT
  // naming `path:line` for a line with the wrong field count, an empty token
  // or name, an unknown role, or a token or name used on an earlier line. A
  // file without any client is INVALID_ARGUMENT too. Messages never contain
  // tokens.
  static absl::StatusOr<TokenStore> Load(const std::string& path);
  // The same from the file's text; `path` only names it in errors.
  static absl::StatusOr<TokenStore> Parse(absl::string_view text,
                                          const std::string& path);

  // The client holding `token`, or nullopt. Takes the same time whichever
  // entry matches and however much of a token matches. Certificate entries
  // never match a token.
  std::optional<Principal> Find(absl::string_view token) const;

  // The client of a verified certificate with these identities (common name
  // and subject alternative names), the first `cert:` entry that names one of
  // them; nullopt if none.
  std::optional<Principal> FindCertificate(
      const std::vector<std::string>& identities) const;

  // Number of clients.
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    // for certificate entries, the identity
    std::string token;
    bool certificate = false;
    Principal principal;
  };
  TokenStore() = default;

  std::vector<Entry> entries_;
};

// The token of an `authorization` header value `Bearer <token>` (the scheme in
// any case, surrounding blanks ignored); nullopt when the value has another
// form or no token. The view points into `header`.
std::optional<absl::string_view> ParseBearer(absl::string_view header);

}  // namespace yolohook::auth

#endif  // YOLOHOOK_SERVER_AUTH_TOKEN_STORE_H_
