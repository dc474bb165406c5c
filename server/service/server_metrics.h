// yolohookd's Prometheus metrics: what they are called, what they count and
// where their values come from. The event bus's and the job store's counts
// are read at scrape time (collectors); the services record job submissions
// and prediction latencies here; the bus reports interceptor round trips.
// The README's Metrics section lists every metric.
#ifndef YOLOHOOK_SERVER_SERVICE_SERVER_METRICS_H_
#define YOLOHOOK_SERVER_SERVICE_SERVER_METRICS_H_

#include "absl/time/time.h"
#include "server/engine/config.h"
#include "server/events/event_bus.h"
#include "server/jobs/job_store.h"
#include "server/monitoring/metrics.h"

namespace yolohook::service {

// Owns nothing but references into a Registry it registers on. Thread-safe:
// every record call is a few atomic operations, no lock.
class ServerMetrics {
 public:
  // Registers the metrics that need no collaborator on `registry`, which
  // must outlive this.
  explicit ServerMetrics(monitoring::Registry& registry);

  // Adds the collectors that read the bus's counters and the store's job
  // counts at each scrape. Call once; both must outlive the registry's
  // renders.
  void Watch(const events::EventBus* bus, jobs::JobStore* store);

  // A job was accepted (SubmitJob, Predict or PredictStream).
  void JobSubmitted(Mode mode);
  // One Predict call (accepted to answered) or one PredictStream frame
  // (received to its result queued for the client).
  void PredictDone(absl::Duration latency);
  void FrameDone(absl::Duration latency);
  // An interceptor's round trip (event queued for it to its reply).
  void RoundTrip(absl::Duration latency);

 private:
  monitoring::Registry& registry_;
  // by Mode
  monitoring::Counter* submitted_[4];
  monitoring::Histogram* predict_latency_;
  monitoring::Histogram* frame_latency_;
  monitoring::Histogram* round_trip_;
};

}  // namespace yolohook::service

#endif  // YOLOHOOK_SERVER_SERVICE_SERVER_METRICS_H_
