#include "server/dashboard/event_feed.h"

#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/util/json_util.h"
#include "server/common/status_macros.h"
#include "yolohook/v1/callbacks.pb.h"

namespace yolohook::dashboard {

std::string SseMessage(int64_t id, absl::string_view event,
                       absl::string_view data) {
  std::string out;
  if (id > 0) absl::StrAppend(&out, "id: ", id, "\n");
  if (!event.empty()) absl::StrAppend(&out, "event: ", event, "\n");
  for (absl::string_view line : absl::StrSplit(data, absl::ByAnyChar("\r\n")))
    absl::StrAppend(&out, "data: ", line, "\n");
  out += "\n";
  return out;
}

std::string EventJson(const v1::Event& event) {
  google::protobuf::util::JsonPrintOptions print;
  print.preserve_proto_field_names = true;
  print.always_print_primitive_fields = true;
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(event, &json, print).ok())
    return "{}";
  return json;
}

absl::StatusOr<int64_t> ParseLastEventId(absl::string_view value) {
  value = absl::StripAsciiWhitespace(value);
  if (value.empty()) return 0;
  int64_t seq = 0;
  if (!absl::SimpleAtoi(value, &seq) || seq < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("Last-Event-ID \"", value,
                     "\" is not an event seq (a non-negative integer)"));
  }
  return seq;
}

// Set by the bus's on_ready (any thread), awaited by Next.
struct EventFeed::Signal {
  absl::Mutex mu;
  bool ready ABSL_GUARDED_BY(mu) = false;
};

EventFeed::EventFeed(Options options)
    : options_(std::move(options)), signal_(std::make_shared<Signal>()) {}

EventFeed::~EventFeed() {
  if (stream_ != nullptr) stream_->Close();
}

absl::StatusOr<std::unique_ptr<EventFeed>> EventFeed::Open(
    events::EventBus& bus, Options options) {
  std::unique_ptr<EventFeed> feed(new EventFeed(std::move(options)));
  feed->last_seq_ = feed->options_.after_seq;
  std::shared_ptr<Signal> signal = feed->signal_;
  feed->stream_ = bus.Connect([signal] {
    absl::MutexLock lock(&signal->mu);
    signal->ready = true;
  });
  YH_RETURN_IF_ERROR(feed->Subscribe(feed->last_seq_ + 1));
  return feed;
}

absl::Status EventFeed::Subscribe(int64_t from_seq) {
  subscription_id_ = absl::StrCat("sse-", ++subscriptions_);
  v1::Subscribe request;
  request.set_subscription_id(subscription_id_);
  request.add_job_ids(options_.job_id);
  for (const std::string& name : options_.events) request.add_events(name);
  request.set_from_seq(from_seq);
  request.set_include_images(options_.include_images);
  return stream_->Subscribe(request);
}

EventFeed::Chunk EventFeed::Next(absl::Duration timeout) {
  Chunk chunk;
  const absl::Time deadline = absl::Now() + timeout;
  while (!done_) {
    events::OutgoingPtr outgoing = stream_->Next();
    std::shared_ptr<const v1::ServerMessage> message =
        outgoing == nullptr
            ? nullptr
            : std::make_shared<const v1::ServerMessage>(outgoing->Parse());
    if (message == nullptr) {
      if (!chunk.text.empty()) return chunk;
      absl::MutexLock lock(&signal_->mu);
      if (!signal_->mu.AwaitWithDeadline(absl::Condition(&signal_->ready),
                                         deadline)) {
        return chunk;
      }
      signal_->ready = false;
      continue;
    }
    switch (message->kind_case()) {
      case v1::ServerMessage::kEvent: {
        const v1::Event& event = message->event();
        if (event.subscription_id() != subscription_id_ ||
            event.seq() <= last_seq_) {
          break;  // from a subscription replaced after LAGGING
        }
        last_seq_ = event.seq();
        chunk.text += SseMessage(event.seq(), event.name(), EventJson(event));
        if (chunk.text.size() >= options_.max_chunk_bytes) return chunk;
        break;
      }
      case v1::ServerMessage::kSubscriptionEnded: {
        const v1::SubscriptionEnded& ended = message->subscription_ended();
        if (ended.subscription_id() != subscription_id_) break;
        const v1::EndReason reason = ended.reason();
        if (reason == v1::END_REASON_LAGGING ||
            reason == v1::END_REASON_COMPACTED) {
          int64_t from = last_seq_ + 1;
          auto resume = ended.resume_seq().find(options_.job_id);
          if (resume != ended.resume_seq().end() && resume->second > from)
            from = resume->second;
          if (Subscribe(from).ok()) break;
        }
        done_ = true;
        chunk.finished = reason == v1::END_REASON_JOBS_DONE;
        break;
      }
      case v1::ServerMessage::kError:
        done_ = true;
        break;
      default:
        break;  // the ack
    }
  }
  chunk.done = true;
  return chunk;
}

}  // namespace yolohook::dashboard
