// Short-lived, single-use tickets that stand for an authenticated client in a
// URL. A browser's EventSource cannot send an Authorization header, and a
// bearer token in a URL ends up in proxy and access logs; a ticket there is
// worth nothing once used, or a minute after it was issued.
#ifndef YOLOHOOK_SERVER_AUTH_TICKET_BOOK_H_
#define YOLOHOOK_SERVER_AUTH_TICKET_BOOK_H_

#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/auth/token_store.h"

namespace yolohook::auth {

// Issues and redeems tickets. Thread-safe.
class TicketBook {
 public:
  struct Options {
    // How long a ticket stays good.
    absl::Duration lifetime = absl::Seconds(60);
    // Tickets outstanding at most; issuing one more drops the oldest.
    size_t max_outstanding = 4096;
    // The clock (tests inject one). Null: absl::Now.
    std::function<absl::Time()> now;
  };

  explicit TicketBook(Options options);

  // A new ticket (64 hex digits from the system's random source) for `who`,
  // good for one Redeem with the same `purpose` (such as the path it opens)
  // within the lifetime.
  std::string Issue(const Principal& who, absl::string_view purpose)
      ABSL_LOCKS_EXCLUDED(mu_);

  // The client `ticket` stands for, if it is outstanding, not expired and
  // issued for `purpose`. A ticket is used up by its first Redeem, whatever
  // the outcome.
  std::optional<Principal> Redeem(absl::string_view ticket,
                                  absl::string_view purpose)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Tickets issued and not yet redeemed or dropped (expired ones included
  // until the next Issue sweeps them).
  size_t outstanding() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Ticket {
    Principal who;
    std::string purpose;
    absl::Time expires;
    // issue order, to drop the oldest
    uint64_t order;
  };

  absl::Time Now() const { return options_.now ? options_.now() : absl::Now(); }

  const Options options_;
  mutable absl::Mutex mu_;
  std::map<std::string, Ticket, std::less<>> tickets_ ABSL_GUARDED_BY(mu_);
  uint64_t issued_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace yolohook::auth

#endif  // YOLOHOOK_SERVER_AUTH_TICKET_BOOK_H_
