#include "server/events/audit.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/limits.h"

namespace yolohook::events {
namespace {

size_t CountBoxes(const std::vector<Result>& results) {
  size_t boxes = 0;
  for (const Result& r : results) boxes += r.boxes.size();
  return boxes;
}

// Map entries in key order, so that lines are stable across runs.
template <typename Map>
std::vector<std::pair<std::string, double>> Sorted(const Map& map) {
  std::vector<std::pair<std::string, double>> out(map.begin(), map.end());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

std::string SummarizeMutation(const v1::Mutation& mutation,
                              const EventContext& ctx) {
  switch (mutation.kind_case()) {
    case v1::Mutation::kReplaceResults: {
      const auto& results = mutation.replace_results().results();
      size_t boxes = 0;
      for (const v1::Result& r : results) boxes += r.boxes_size();
      std::string line = absl::StrCat("results replaced: ", results.size(),
                                      " images, ", boxes, " boxes");
      if (ctx.predictor != nullptr) {
        absl::StrAppend(&line, " (were ", CountBoxes(ctx.predictor->results),
                        " boxes)");
      }
      return line;
    }
    case v1::Mutation::kLogMetrics: {
      std::vector<std::string> items;
      for (const auto& [name, value] :
           Sorted(mutation.log_metrics().metrics())) {
        items.push_back(absl::StrCat(Escaped(name), ":", value));
      }
      return absl::StrCat("metrics+={", absl::StrJoin(items, ","), "}");
    }
    case v1::Mutation::kStopTraining: {
      const std::string& reason = mutation.stop_training().reason();
      return reason.empty() ? std::string("stop_training=true")
                            : absl::StrCat("stop_training=true (",
                                           Quoted(reason, 256), ")");
    }
    case v1::Mutation::kSetHyperparameters: {
      std::vector<std::string> items;
      for (const auto& [name, value] :
           Sorted(mutation.set_hyperparameters().values())) {
        std::string old = "?";
        if (ctx.trainer != nullptr) {
          auto it = ctx.trainer->hyperparameters.find(name);
          if (it != ctx.trainer->hyperparameters.end())
            old = absl::StrCat(it->second);
        }
        items.push_back(absl::StrCat(Escaped(name), " ", old, "->", value));
      }
      return absl::StrCat("hyperparameters ", absl::StrJoin(items, ", "));
    }
    case v1::Mutation::kFailJob:
      return absl::StrCat("fail_job=",
                          Quoted(mutation.fail_job().reason(), 256));
    case v1::Mutation::KIND_NOT_SET:
      break;
  }
  return "empty mutation";
}

std::string FormatAuditLine(const AuditEntry& entry) {
  // The ids come from the client: escaped and bounded, so that a reply cannot
  // forge or flood log lines.
  std::string line =
      absl::StrCat("[", Escaped(entry.job_id, kMaxIdBytes),
                   "] audit: client=", Escaped(entry.client, kMaxIdBytes));
  if (!entry.event.empty()) absl::StrAppend(&line, " event=", entry.event);
  absl::StrAppend(&line, " seq=", entry.seq, " subscription=",
                  Escaped(entry.subscription_id, kMaxIdBytes));
  if (!entry.rejected.empty()) {
    absl::StrAppend(&line, " rejected: ", Escaped(entry.rejected, 1024));
  } else if (entry.changes.empty()) {
    absl::StrAppend(&line, " applied: (no changes)");
  } else {
    absl::StrAppend(&line, " applied: ", absl::StrJoin(entry.changes, "; "));
  }
  return line;
}

}  // namespace yolohook::events
