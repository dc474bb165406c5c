// One job's events as Server-Sent Events, read from the event bus through an
// ordinary subscription (the same path gRPC clients use).
#ifndef YOLOHOOK_SERVER_DASHBOARD_EVENT_FEED_H_
#define YOLOHOOK_SERVER_DASHBOARD_EVENT_FEED_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/events/event_bus.h"
#include "yolohook/v1/types.pb.h"

namespace yolohook::dashboard {

// One SSE message: "id: <id>\nevent: <event>\ndata: <line>\n...\n\n". A
// data with several lines becomes several data: fields; id is left out when
// `id` is 0, event when `event` is empty.
std::string SseMessage(int64_t id, absl::string_view event,
                       absl::string_view data);

// The wire event as the JSON the page reads: protobuf's JSON mapping with the
// proto's field names and every field, zero values included.
std::string EventJson(const v1::Event& event);

// The seq a client last saw, from a Last-Event-ID header (or a query
// parameter standing in for it): "" is 0. INVALID_ARGUMENT for anything but a
// non-negative integer.
absl::StatusOr<int64_t> ParseLastEventId(absl::string_view value);

// Follows one job's events from the bus for one SSE response. Owned by the
// HTTP handler that writes the response; thread-compatible (one thread calls
// Next). The bus must outlive it.
//
// Events come exactly once, in seq order, starting after `after_seq`: a
// subscription that falls behind (LAGGING) or whose start was compacted is
// opened again from its resume seq without the client noticing. The feed ends
// when every event of a finished job was delivered (JOBS_DONE: an "end"
// message follows) or when the bus shuts down (no "end": the client
// reconnects and resumes).
class EventFeed {
 public:
  struct Options {
    // the job to follow
    std::string job_id;
    // deliver events with seq > after_seq
    int64_t after_seq = 0;
    // predictor events carry their frames
    bool include_images = false;
    // event names; empty: all 25
    std::vector<std::string> events;
    // Next returns at most about this much
    size_t max_chunk_bytes = 1 << 20;
  };

  // What Next returns.
  struct Chunk {
    // SSE messages to write (may be empty: nothing new)
    std::string text;
    // the feed ended; write text and close
    bool done = false;
    // done because the job's events were all sent
    bool finished = false;
  };

  // Subscribes. Errors: NOT_FOUND for a job the server never had,
  // INVALID_ARGUMENT for an unknown event name, UNAVAILABLE when the bus is
  // shutting down.
  static absl::StatusOr<std::unique_ptr<EventFeed>> Open(events::EventBus& bus,
                                                         Options options);
  ~EventFeed();

  // Waits up to `timeout` for events and returns those ready, as SSE text.
  Chunk Next(absl::Duration timeout);

  // The seq of the last event returned so far.
  int64_t last_seq() const { return last_seq_; }

 private:
  struct Signal;

  explicit EventFeed(Options options);
  absl::Status Subscribe(int64_t from_seq);

  const Options options_;
  std::shared_ptr<Signal> signal_;
  std::shared_ptr<events::Stream> stream_;
  std::string subscription_id_;
  int subscriptions_ = 0;
  int64_t last_seq_ = 0;
  bool done_ = false;
};

}  // namespace yolohook::dashboard

#endif  // YOLOHOOK_SERVER_DASHBOARD_EVENT_FEED_H_
