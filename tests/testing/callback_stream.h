// A test client for CallbackService.Connect: writes ClientMessages and reads
// ServerMessages on a background thread, so tests can wait with a timeout.
#ifndef YOLOHOOK_TESTS_TESTING_CALLBACK_STREAM_H_
#define YOLOHOOK_TESTS_TESTING_CALLBACK_STREAM_H_

#include <grpcpp/grpcpp.h>

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "yolohook/v1/callbacks.grpc.pb.h"

namespace yolohook::testing {

// Thread-safe.
class CallbackStream {
 public:
  explicit CallbackStream(const std::shared_ptr<grpc::Channel>& channel)
      : stub_(v1::CallbackService::NewStub(channel)),
        stream_(stub_->Connect(&context_)) {
    reader_ = std::thread([this] {
      v1::ServerMessage message;
      while (stream_->Read(&message)) {
        absl::MutexLock lock(&mu_);
        inbox_.push_back(message);
      }
      absl::MutexLock lock(&mu_);
      closed_ = true;
    });
  }

  ~CallbackStream() {
    Close();
    reader_.join();
    stream_->Finish().IgnoreError();
  }

  bool Send(const v1::ClientMessage& message) {
    absl::MutexLock lock(&write_mu_);
    return stream_->Write(message);
  }

  // The next message, or nullopt after `timeout` or once the stream closed.
  std::optional<v1::ServerMessage> Read(
      absl::Duration timeout = absl::Seconds(30)) {
    absl::MutexLock lock(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !inbox_.empty() || closed_;
    };
    mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
    if (inbox_.empty()) return std::nullopt;
    v1::ServerMessage m = std::move(inbox_.front());
    inbox_.pop_front();
    return m;
  }

  // Reads until `pred` holds for a message (returned), skipping others.
  std::optional<v1::ServerMessage> ReadUntil(
      const std::function<bool(const v1::ServerMessage&)>& pred,
      absl::Duration timeout = absl::Seconds(30)) {
    absl::Time deadline = absl::Now() + timeout;
    while (true) {
      std::optional<v1::ServerMessage> m = Read(deadline - absl::Now());
      if (!m || pred(*m)) return m;
    }
  }

  // Half-closes the client side; the server finishes the stream.
  void Close() {
    absl::MutexLock lock(&write_mu_);
    if (!write_closed_) stream_->WritesDone();
    write_closed_ = true;
  }

 private:
  std::unique_ptr<v1::CallbackService::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::ClientMessage, v1::ServerMessage>>
      stream_;
  std::thread reader_;
  absl::Mutex write_mu_;
  bool write_closed_ ABSL_GUARDED_BY(write_mu_) = false;
  absl::Mutex mu_;
  std::deque<v1::ServerMessage> inbox_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace yolohook::testing

#endif  // YOLOHOOK_TESTS_TESTING_CALLBACK_STREAM_H_
