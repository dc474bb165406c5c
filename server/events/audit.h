// The audit trail of remote mutations: one log line for every reply an
// interceptor sends, saying who changed what in which job and event, or why
// the change was refused. No gRPC, no torch: the bus writes the lines, the
// server decides where they go.
#ifndef YOLOHOOK_SERVER_EVENTS_AUDIT_H_
#define YOLOHOOK_SERVER_EVENTS_AUDIT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "server/callbacks/state.h"
#include "yolohook/v1/types.pb.h"

namespace yolohook::events {

// A compact account of what `mutation` changes in `ctx`, for the audit log:
//   stop_training=true ("plateau")        fail_job="bad data"
//   metrics+={custom/score:0.5}           hyperparameters lr0 0.01->0.02
//   results replaced: 3 images, 12 boxes (were 15 boxes)
// Call it before the mutation is applied, so that old values are still there.
std::string SummarizeMutation(const v1::Mutation& mutation,
                              const EventContext& ctx);

// One audited reply.
struct AuditEntry {
  // who: the stream's client name
  std::string client;
  // the event's job
  std::string job_id;
  // the event's name ("" when no event awaited)
  std::string event;
  // the event's seq
  int64_t seq = 0;
  // the subscription the reply came on
  std::string subscription_id;
  // applied: SummarizeMutation of each
  std::vector<std::string> changes;
  // non-empty: the reason nothing applied
  std::string rejected;
};

// The line written for `entry`, without a trailing newline:
//   [<job>] audit: client=<client> event=<event> seq=<seq>
//   subscription=<id> applied: <change>; <change>
// or "... rejected: <reason>". A reply without mutations reads "applied:
// (no changes)".
std::string FormatAuditLine(const AuditEntry& entry);

}  // namespace yolohook::events

#endif  // YOLOHOOK_SERVER_EVENTS_AUDIT_H_
