#include "client/cpp/keep_confident.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace yolohook {

absl::Status ParseRename(absl::string_view value,
                         std::map<std::string, std::string>& renames) {
  const size_t eq = value.find('=');
  if (eq == absl::string_view::npos || eq == 0 || eq + 1 == value.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--rename=", value, ": expected OLD=NEW, e.g. --rename=circle=ball"));
  }
  renames[std::string(value.substr(0, eq))] = std::string(value.substr(eq + 1));
  return absl::OkStatus();
}

std::vector<std::string> KeepConfident(const KeepConfidentOptions& options,
                                       std::vector<Result>& results) {
  std::vector<std::string> lines;
  for (Result& r : results) {
    const size_t before = r.boxes.size();
    const float min_conf = options.min_conf;
    r.boxes.erase(
        std::remove_if(r.boxes.begin(), r.boxes.end(),
                       [min_conf](const Box& b) { return b.conf < min_conf; }),
        r.boxes.end());
    std::vector<std::string> renamed;
    for (std::string& name : r.names) {
      auto it = options.renames.find(name);
      if (it == options.renames.end() || it->second == name) continue;
      renamed.push_back(absl::StrCat(name, " -> ", it->second));
      name = it->second;
    }
    if (r.boxes.size() == before && renamed.empty()) continue;
    std::string line = absl::StrCat(r.path, ": kept ", r.boxes.size(), " of ",
                                    before, " boxes (conf >= ", min_conf, ")");
    if (!renamed.empty())
      absl::StrAppend(&line, ", ", absl::StrJoin(renamed, ", "));
    lines.push_back(std::move(line));
  }
  return lines;
}

}  // namespace yolohook
