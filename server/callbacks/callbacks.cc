#include "server/callbacks/callbacks.h"

#include "server/common/status_macros.h"

namespace yolohook {

absl::Status Callbacks::Add(absl::string_view event, Callback fn) {
  YH_ASSIGN_OR_RETURN(Event e, EventFromName(event));
  if (!fn)
    return absl::InvalidArgumentError("callback for " + std::string(event) +
                                      " is empty");
  Add(e, std::move(fn));
  return absl::OkStatus();
}

void Callbacks::Add(Event event, Callback fn) {
  table_[static_cast<int>(event)].push_back(std::move(fn));
}

void Callbacks::AddForAll(const Callback& fn) {
  for (auto& list : table_) list.push_back(fn);
}

absl::Status Callbacks::Clear(absl::string_view event) {
  YH_ASSIGN_OR_RETURN(Event e, EventFromName(event));
  table_[static_cast<int>(e)].clear();
  return absl::OkStatus();
}

void Callbacks::ClearAll() {
  for (auto& list : table_) list.clear();
}

void Callbacks::Run(EventContext& context) const {
  for (const Callback& fn : table_[static_cast<int>(context.event)])
    fn(context);
}

}  // namespace yolohook
