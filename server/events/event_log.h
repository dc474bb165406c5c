// An event as the bus keeps, stores and delivers it, and the interface of the
// store that persists events (the job store implements it; the bus's log
// writer calls it).
#ifndef YOLOHOOK_SERVER_EVENTS_EVENT_LOG_H_
#define YOLOHOOK_SERVER_EVENTS_EVENT_LOG_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/callbacks/events.h"
#include "server/events/outgoing.h"

namespace yolohook::events {

// One event of a job, serialized once: the same bytes are stored and sent to
// every subscription. Immutable once published; shared between threads.
struct EventRecord {
  std::string job_id;
  int64_t seq = 0;
  // Which of the 25 events.
  Event event = Event::kOnPretrainRoutineStart;
  // The serialized yolohook.v1.Event without subscription fields. Never null.
  SharedBytes bytes;
  // The same with the predictor batch's frames attached, for subscriptions
  // that asked for images; null when there are none. Never stored.
  SharedBytes with_images;
};

using EventRecordPtr = std::shared_ptr<const EventRecord>;

// Where a job's events are persisted, so that replays reach back past what is
// kept in memory and survive restarts. Implementations must be thread-safe.
class EventLog {
 public:
  virtual ~EventLog() = default;

  // Stores `events` in order, as one write (one transaction) where the log
  // can. Every event is attempted: one already stored (same job and seq) is
  // ALREADY_EXISTS and the others are still stored. Returns the first error.
  // Called on the bus's log writer thread.
  virtual absl::Status Append(
      const std::vector<const EventRecord*>& events) = 0;

  // Events of `job_id` with seq >= from_seq, in order, at most `limit`
  // (records without with_images).
  virtual absl::StatusOr<std::vector<EventRecord>> Read(
      const std::string& job_id, int64_t from_seq, int64_t limit) = 0;

  // The job's highest stored seq (0 when none).
  virtual absl::StatusOr<int64_t> LastSeq(const std::string& job_id) = 0;
};

}  // namespace yolohook::events

#endif  // YOLOHOOK_SERVER_EVENTS_EVENT_LOG_H_
