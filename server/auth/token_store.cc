#include "server/auth/token_store.h"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace yolohook::auth {
namespace {

// Compares every byte of the longer string whatever the contents, so the time
// taken tells nothing about how much of `a` matches `b`.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  const size_t n = std::max(a.size(), b.size());
  uint8_t diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t x = i < a.size() ? static_cast<uint8_t>(a[i]) : 0;
    const uint8_t y = i < b.size() ? static_cast<uint8_t>(b[i]) : 0;
    diff |= static_cast<uint8_t>(x ^ y);
  }
  return diff == 0;
}

}  // namespace

absl::string_view RoleName(Role role) {
  switch (role) {
    case Role::kViewer:
      return "viewer";
    case Role::kOperator:
      return "operator";
    case Role::kAdmin:
      return "admin";
  }
  return "unknown";
}

std::optional<Role> RoleFromName(absl::string_view name) {
  for (Role role : {Role::kViewer, Role::kOperator, Role::kAdmin}) {
    if (name == RoleName(role)) return role;
  }
  return std::nullopt;
}

bool Allows(Role have, Role need) {
  return static_cast<int>(have) >= static_cast<int>(need);
}

absl::StatusOr<TokenStore> TokenStore::Load(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(
        absl::StrCat("token file ", path, ": no such file"));
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  if (in) text << in.rdbuf();
  if (!in || in.bad() || std::filesystem::is_directory(path, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("token file ", path, ": cannot be read"));
  }
  return Parse(text.str(), path);
}

absl::StatusOr<TokenStore> TokenStore::Parse(absl::string_view text,
                                             const std::string& path) {
  TokenStore store;
  std::set<std::string> names;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);  // also a CR of CRLF files
    if (line.empty() || absl::StartsWith(line, "#")) continue;
    auto error = [&](absl::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrCat("token file ", path, ":", line_number, ": ", what));
    };
    std::vector<absl::string_view> fields = absl::StrSplit(line, ',');
    if (fields.size() != 3) {
      return error(absl::StrCat("expected 3 fields (token,name,role), got ",
                                fields.size()));
    }
    for (absl::string_view& field : fields) {
      field = absl::StripAsciiWhitespace(field);
    }
    if (fields[0].empty()) return error("empty token");
    bool certificate = false;
    if (absl::ConsumePrefix(&fields[0], "cert:")) {
      certificate = true;
      fields[0] = absl::StripAsciiWhitespace(fields[0]);
      if (fields[0].empty())
        return error("empty certificate identity after cert:");
    }
    if (fields[1].empty()) return error("empty name");
    std::optional<Role> role = RoleFromName(fields[2]);
    if (!role.has_value()) {
      return error(absl::StrCat("unknown role \"", fields[2],
                                "\" (viewer, operator or admin)"));
    }
    for (const Entry& entry : store.entries_) {
      if (entry.token == fields[0] && entry.certificate == certificate) {
        return error(absl::StrCat(
            certificate ? "duplicate certificate identity" : "duplicate token",
            " (the ", certificate ? "identity" : "token", " of \"",
            entry.principal.name, "\")"));
      }
    }
    if (!names.insert(std::string(fields[1])).second) {
      return error(absl::StrCat("duplicate name \"", fields[1], "\""));
    }
    store.entries_.push_back(
        {std::string(fields[0]), certificate, {std::string(fields[1]), *role}});
  }
  if (store.entries_.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "token file ", path, ": no clients (one token,name,role per line)"));
  }
  return store;
}

std::optional<Principal> TokenStore::Find(absl::string_view token) const {
  // Every entry is compared, so which one matches does not show in the time.
  const Entry* found = nullptr;
  for (const Entry& entry : entries_) {
    if (ConstantTimeEquals(entry.token, token) && !entry.certificate &&
        found == nullptr) {
      found = &entry;
    }
  }
  if (found == nullptr) return std::nullopt;
  return found->principal;
}

std::optional<Principal> TokenStore::FindCertificate(
    const std::vector<std::string>& identities) const {
  for (const Entry& entry : entries_) {
    if (!entry.certificate) continue;
    for (const std::string& identity : identities) {
      if (entry.token == identity) return entry.principal;
    }
  }
  return std::nullopt;
}

std::optional<absl::string_view> ParseBearer(absl::string_view header) {
  header = absl::StripAsciiWhitespace(header);
  constexpr absl::string_view kScheme = "bearer";
  if (header.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(header.substr(0, kScheme.size()), kScheme) ||
      (header[kScheme.size()] != ' ' && header[kScheme.size()] != '\t')) {
    return std::nullopt;
  }
  absl::string_view token =
      absl::StripAsciiWhitespace(header.substr(kScheme.size()));
  if (token.empty()) return std::nullopt;
  for (char c : token) {
    if (absl::ascii_isspace(static_cast<unsigned char>(c))) return std::nullopt;
  }
  return token;
}

}  // namespace yolohook::auth
