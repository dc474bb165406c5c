#include "bench/baseline_service.h"

#include <chrono>
#include <string>

#include "absl/strings/str_cat.h"

namespace yolohook::bench {
namespace {

using Clock = std::chrono::steady_clock;

// Largest payload a client may ask for.
constexpr int32_t kMaxPayloadBytes = 16 << 20;

grpc::Status CheckShape(int64_t count, int32_t payload_bytes) {
  if (count < 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("count must be >= 0, got ", count));
  }
  if (payload_bytes < 0 || payload_bytes > kMaxPayloadBytes) {
    return grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("payload_bytes must be in [0, ", kMaxPayloadBytes,
                     "], got ", payload_bytes));
  }
  return grpc::Status::OK;
}

// Writes `count` payloads back to back. Owns itself: deleted in OnDone.
class StreamReactor final : public grpc::ServerWriteReactor<Payload> {
 public:
  explicit StreamReactor(const StreamRequest& request) {
    grpc::Status status = CheckShape(request.count(), request.payload_bytes());
    if (!status.ok()) {
      Finish(status);
      return;
    }
    count_ = request.count();
    payload_.mutable_data()->assign(
        static_cast<size_t>(request.payload_bytes()), 'x');
    WriteNext();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed"));
      return;
    }
    WriteNext();
  }

  void OnDone() override { delete this; }

 private:
  void WriteNext() {
    if (sent_ == count_) {
      Finish(grpc::Status::OK);
      return;
    }
    payload_.set_seq(++sent_);
    StartWrite(&payload_);
  }

  int64_t count_ = 0;
  int64_t sent_ = 0;
  Payload payload_;
};

// Ping, wait for the answer, ping again. Owns itself: deleted in OnDone.
class PingPongReactor final : public grpc::ServerBidiReactor<Payload, Payload> {
 public:
  explicit PingPongReactor(BaselineService* service) : service_(service) {
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client left early
      service_->AddRoundTrips(round_trips_);
      Finish(grpc::Status::OK);
      return;
    }
    if (!started_) {
      grpc::Status status = CheckShape(in_.count(), in_.payload_bytes());
      if (!status.ok()) {
        Finish(status);
        return;
      }
      started_ = true;
      count_ = in_.count();
      round_trips_.reserve(static_cast<size_t>(count_));
      ping_.mutable_data()->assign(static_cast<size_t>(in_.payload_bytes()),
                                   'x');
    } else {
      round_trips_.push_back(
          std::chrono::duration<double, std::micro>(Clock::now() - sent_at_)
              .count());
    }
    Ping();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      service_->AddRoundTrips(round_trips_);
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed"));
      return;
    }
    StartRead(&in_);
  }

  void OnDone() override { delete this; }

 private:
  void Ping() {
    if (sent_ == count_) {
      service_->AddRoundTrips(round_trips_);
      Finish(grpc::Status::OK);
      return;
    }
    ping_.set_seq(++sent_);
    sent_at_ = Clock::now();
    StartWrite(&ping_);
  }

  BaselineService* const service_;
  Payload in_;
  Payload ping_;
  bool started_ = false;
  int64_t count_ = 0;
  int64_t sent_ = 0;
  Clock::time_point sent_at_;
  std::vector<double> round_trips_;
};

}  // namespace

grpc::ServerWriteReactor<Payload>* BaselineService::Stream(
    grpc::CallbackServerContext* /*context*/, const StreamRequest* request) {
  return new StreamReactor(*request);
}

grpc::ServerBidiReactor<Payload, Payload>* BaselineService::PingPong(
    grpc::CallbackServerContext* /*context*/) {
  return new PingPongReactor(this);
}

std::vector<double> BaselineService::TakeRoundTrips() {
  absl::MutexLock lock(&mu_);
  std::vector<double> out;
  out.swap(round_trips_);
  return out;
}

void BaselineService::AddRoundTrips(const std::vector<double>& micros) {
  absl::MutexLock lock(&mu_);
  round_trips_.insert(round_trips_.end(), micros.begin(), micros.end());
}

}  // namespace yolohook::bench
