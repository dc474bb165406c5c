#include "server/auth/ticket_book.h"

#include <random>

#include "absl/strings/str_format.h"

namespace yolohook::auth {

TicketBook::TicketBook(Options options) : options_(std::move(options)) {}

std::string TicketBook::Issue(const Principal& who, absl::string_view purpose) {
  std::random_device random;  // the kernel's random source on Linux
  std::string ticket;
  for (int i = 0; i < 8; ++i) absl::StrAppendFormat(&ticket, "%08x", random());
  const absl::Time now = Now();
  absl::MutexLock lock(&mu_);
  for (auto it = tickets_.begin(); it != tickets_.end();) {
    it = it->second.expires <= now ? tickets_.erase(it) : std::next(it);
  }
  while (!tickets_.empty() && tickets_.size() >= options_.max_outstanding) {
    auto oldest = tickets_.begin();
    for (auto it = tickets_.begin(); it != tickets_.end(); ++it) {
      if (it->second.order < oldest->second.order) oldest = it;
    }
    tickets_.erase(oldest);
  }
  tickets_[ticket] =
      Ticket{who, std::string(purpose), now + options_.lifetime, issued_++};
  return ticket;
}

std::optional<Principal> TicketBook::Redeem(absl::string_view ticket,
                                            absl::string_view purpose) {
  const absl::Time now = Now();
  absl::MutexLock lock(&mu_);
  auto it = tickets_.find(ticket);
  if (it == tickets_.end()) return std::nullopt;
  Ticket found = std::move(it->second);
  tickets_.erase(it);
  if (found.expires <= now || found.purpose != purpose) return std::nullopt;
  return found.who;
}

size_t TicketBook::outstanding() const {
  absl::MutexLock lock(&mu_);
  return tickets_.size();
}

}  // namespace yolohook::auth
