// The core of the keep_confident example interceptor: drops low-confidence
// boxes from a batch's results and optionally renames classes. Apart from the
// program so that tests run the same logic against a server.
#ifndef YOLOHOOK_CLIENT_CPP_KEEP_CONFIDENT_H_
#define YOLOHOOK_CLIENT_CPP_KEEP_CONFIDENT_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/callbacks/state.h"

namespace yolohook {

struct KeepConfidentOptions {
  // boxes below this confidence are dropped
  float min_conf = 0.5f;
  // Class renames, old name -> new name (names are part of each Result).
  std::map<std::string, std::string> renames;
};

// Parses "old=new" into `renames`. INVALID_ARGUMENT naming the flag value
// when it is not of that form.
absl::Status ParseRename(absl::string_view value,
                         std::map<std::string, std::string>& renames);

// Applies `options` to every result of the batch in place; returns one line
// per image it changed ("a.jpg: kept 2 of 3 boxes (conf >= 0.5), circle ->
// ball").
std::vector<std::string> KeepConfident(const KeepConfidentOptions& options,
                                       std::vector<Result>& results);

}  // namespace yolohook

#endif  // YOLOHOOK_CLIENT_CPP_KEEP_CONFIDENT_H_
