// The interceptor rules: which mutation may change what at which event, and
// how a mutation is checked and applied. Used by the bus for every reply.
#ifndef YOLOHOOK_SERVER_EVENTS_MUTATIONS_H_
#define YOLOHOOK_SERVER_EVENTS_MUTATIONS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "server/callbacks/state.h"
#include "yolohook/v1/types.pb.h"

namespace yolohook::events {

// The mutations an interceptor may send at `event`: replace_results at
// on_predict_postprocess_end and on_predict_batch_end; log_metrics,
// stop_training and set_hyperparameters at trainer events; fail_job anywhere.
// The one table ValidateMutation enforces and ServerInfo reports.
const std::vector<v1::Mutation::KindCase>& AllowedMutations(Event event);

// A mutation kind's name: its field in yolohook.v1.Mutation
// ("replace_results", ...).
std::string MutationName(v1::Mutation::KindCase kind);

// Checks that `mutation` may apply to `ctx`: allowed at this event
// (AllowedMutations) with the state it changes present, every number finite and
// in range, class ids within the names, boxes with ordered corners and conf in
// [0, 1], known hyperparameters, and every string and list within
// server/common/limits.h. Errors name the field: INVALID_ARGUMENT for a bad
// value, FAILED_PRECONDITION for a mutation not allowed at this event.
absl::Status ValidateMutation(const v1::Mutation& mutation,
                              const EventContext& ctx);

// Applies a mutation that ValidateMutation accepted to ctx's state.
void ApplyMutation(const v1::Mutation& mutation, EventContext& ctx);

}  // namespace yolohook::events

#endif  // YOLOHOOK_SERVER_EVENTS_MUTATIONS_H_
