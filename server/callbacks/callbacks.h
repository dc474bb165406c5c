// The callback registry: lists of functions per event, run in registration
// order.
#ifndef YOLOHOOK_SERVER_CALLBACKS_CALLBACKS_H_
#define YOLOHOOK_SERVER_CALLBACKS_CALLBACKS_H_

#include <array>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/callbacks/events.h"
#include "server/callbacks/state.h"

namespace yolohook {

using Callback = std::function<void(EventContext&)>;

// Callbacks holds, per event, the functions to run when the engine fires it,
// like Ultralytics' callback table: trainer, validator, predictor and exporter
// share one. Thread-compatible: register before the job starts.
//
// Callbacks run on the job's thread and may change the state they receive;
// they must not throw. A callback that wants to end the job calls
// EventContext::Fail; the remaining callbacks of that event still run.
class Callbacks {
 public:
  // Registers `fn` for `event` after those already there. Errors:
  // INVALID_ARGUMENT for an unknown event name (listing the valid names) or an
  // empty function.
  absl::Status Add(absl::string_view event, Callback fn);
  void Add(Event event, Callback fn);

  // Registers `fn` for every event (integrations such as remote subscribers).
  void AddForAll(const Callback& fn);

  // Removes the callbacks of one event. Errors: INVALID_ARGUMENT for an unknown
  // name.
  absl::Status Clear(absl::string_view event);
  // Removes every callback.
  void ClearAll();

  size_t Count(Event event) const {
    return table_[static_cast<int>(event)].size();
  }

  // Runs the callbacks of `context.event` in registration order.
  void Run(EventContext& context) const;

 private:
  std::array<std::vector<Callback>, kNumEvents> table_;
};

}  // namespace yolohook

#endif  // YOLOHOOK_SERVER_CALLBACKS_CALLBACKS_H_
