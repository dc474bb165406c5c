// The token file as it is now: loaded at start, loaded again when asked
// (SIGHUP) or when the file changes, so that tokens can be added and revoked
// without a restart.
#ifndef YOLOHOOK_SERVER_AUTH_TOKEN_REGISTRY_H_
#define YOLOHOOK_SERVER_AUTH_TOKEN_REGISTRY_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/auth/token_store.h"

namespace yolohook::auth {

// Who holds a credential now. A reload replaces the clients at once: a token
// removed from the file stops working at the next call that presents it (and
// the transports end long-lived streams that were opened with it, see
// generation()); a file that does not parse changes nothing. Thread-safe.
class TokenRegistry {
 public:
  // Loads `path`. Errors as TokenStore::Load.
  static absl::StatusOr<std::unique_ptr<TokenRegistry>> Load(
      const std::string& path);

  // Loads the file again. On error (naming the file and line) the clients
  // loaded before stay in force.
  absl::Status Reload() ABSL_LOCKS_EXCLUDED(mu_);

  // Reload when the file's size, modification time or inode differ from the
  // last successful load; true when it reloaded. A file that is missing or
  // does not parse is an error and changes nothing.
  absl::StatusOr<bool> ReloadIfChanged() ABSL_LOCKS_EXCLUDED(mu_);

  // Looked up in the clients in force (see TokenStore).
  std::optional<Principal> Find(absl::string_view token) const
      ABSL_LOCKS_EXCLUDED(mu_);
  std::optional<Principal> FindCertificate(
      const std::vector<std::string>& identities) const
      ABSL_LOCKS_EXCLUDED(mu_);

  // One more after each successful reload: a stream that authenticated at an
  // older generation checks its credential again.
  uint64_t generation() const {
    return generation_.load(std::memory_order_acquire);
  }

  // Clients in force.
  size_t size() const ABSL_LOCKS_EXCLUDED(mu_);
  const std::string& path() const { return path_; }

 private:
  // What identifies a version of the file on disk.
  struct Stamp {
    ino_t inode = 0;
    off_t size = 0;
    int64_t mtime_ns = 0;
    bool operator==(const Stamp& o) const {
      return inode == o.inode && size == o.size && mtime_ns == o.mtime_ns;
    }
  };
  TokenRegistry(std::string path, TokenStore store, Stamp stamp);
  static absl::StatusOr<Stamp> StampOf(const std::string& path);

  const std::string path_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const TokenStore> store_ ABSL_GUARDED_BY(mu_);
  Stamp stamp_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> generation_{0};
};

}  // namespace yolohook::auth

#endif  // YOLOHOOK_SERVER_AUTH_TOKEN_REGISTRY_H_
