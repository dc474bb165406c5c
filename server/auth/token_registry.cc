#include "server/auth/token_registry.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace yolohook::auth {

absl::StatusOr<TokenRegistry::Stamp> TokenRegistry::StampOf(
    const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(
        absl::StrCat("token file ", path, ": ", std::strerror(errno)));
  }
  Stamp stamp;
  stamp.inode = st.st_ino;
  stamp.size = st.st_size;
  stamp.mtime_ns =
      static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return stamp;
}

absl::StatusOr<std::unique_ptr<TokenRegistry>> TokenRegistry::Load(
    const std::string& path) {
  absl::StatusOr<Stamp> stamp = StampOf(path);
  absl::StatusOr<TokenStore> store = TokenStore::Load(path);
  if (!store.ok()) return store.status();
  return std::unique_ptr<TokenRegistry>(new TokenRegistry(
      path, *std::move(store), stamp.ok() ? *stamp : Stamp()));
}

TokenRegistry::TokenRegistry(std::string path, TokenStore store, Stamp stamp)
    : path_(std::move(path)),
      store_(std::make_shared<const TokenStore>(std::move(store))),
      stamp_(stamp) {}

absl::Status TokenRegistry::Reload() {
  // The stamp is taken before reading, so that a change made while reading
  // is seen by the next check.
  absl::StatusOr<Stamp> stamp = StampOf(path_);
  absl::StatusOr<TokenStore> store = TokenStore::Load(path_);
  if (!store.ok()) return store.status();
  {
    absl::MutexLock lock(&mu_);
    store_ = std::make_shared<const TokenStore>(*std::move(store));
    if (stamp.ok()) stamp_ = *stamp;
  }
  generation_.fetch_add(1, std::memory_order_acq_rel);
  return absl::OkStatus();
}

absl::StatusOr<bool> TokenRegistry::ReloadIfChanged() {
  absl::StatusOr<Stamp> stamp = StampOf(path_);
  if (!stamp.ok()) return stamp.status();
  {
    absl::MutexLock lock(&mu_);
    if (*stamp == stamp_) return false;
  }
  absl::Status reloaded = Reload();
  if (!reloaded.ok()) {
    // Not again until the file changes once more.
    absl::MutexLock lock(&mu_);
    stamp_ = *stamp;
    return reloaded;
  }
  return true;
}

std::optional<Principal> TokenRegistry::Find(absl::string_view token) const {
  std::shared_ptr<const TokenStore> store;
  {
    absl::MutexLock lock(&mu_);
    store = store_;
  }
  return store->Find(token);
}

std::optional<Principal> TokenRegistry::FindCertificate(
    const std::vector<std::string>& identities) const {
  std::shared_ptr<const TokenStore> store;
  {
    absl::MutexLock lock(&mu_);
    store = store_;
  }
  return store->FindCertificate(identities);
}

size_t TokenRegistry::size() const {
  absl::MutexLock lock(&mu_);
  return store_->size();
}

}  // namespace yolohook::auth
