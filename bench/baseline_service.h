// The server side of bench/baseline.proto: bare gRPC with the callback API, as
// yolohook's HookService uses it, and nothing else (no queues, no locks on
// the write path), so that remote_bench can compare the two.
#ifndef YOLOHOOK_BENCH_BASELINE_SERVICE_H_
#define YOLOHOOK_BENCH_BASELINE_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "bench/baseline.grpc.pb.h"

namespace yolohook::bench {

// Serves Stream (one write in flight, the next started from OnWriteDone) and
// PingPong (the server pings, times each answer). Thread-safe.
class BaselineService final : public Baseline::CallbackService {
 public:
  grpc::ServerWriteReactor<Payload>* Stream(
      grpc::CallbackServerContext* context,
      const StreamRequest* request) override;
  grpc::ServerBidiReactor<Payload, Payload>* PingPong(
      grpc::CallbackServerContext* context) override;

  // The round trips (ping written to answer read), in microseconds, of the
  // PingPong calls finished since the last call.
  std::vector<double> TakeRoundTrips() ABSL_LOCKS_EXCLUDED(mu_);

  // Called by a finished PingPong.
  void AddRoundTrips(const std::vector<double>& micros)
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  absl::Mutex mu_;
  std::vector<double> round_trips_ ABSL_GUARDED_BY(mu_);
};

}  // namespace yolohook::bench

#endif  // YOLOHOOK_BENCH_BASELINE_SERVICE_H_
