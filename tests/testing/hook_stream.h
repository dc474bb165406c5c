// A test client for HookService.Connect: writes ClientMessages and reads
// ServerMessages on a background thread, so tests can wait with a timeout.
// Reading can be paused, to play a client that stops reading: the server's
// writes then back up through gRPC's flow control.
#ifndef YOLOHOOK_TESTS_TESTING_HOOK_STREAM_H_
#define YOLOHOOK_TESTS_TESTING_HOOK_STREAM_H_

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "yolohook/v1/callbacks.grpc.pb.h"

namespace yolohook::testing {

// Thread-safe.
class HookStream {
 public:
  // `token`: sent as "authorization: Bearer <token>" ("" = no header).
  explicit HookStream(const std::shared_ptr<grpc::Channel>& channel,
                      const std::string& token = "")
      : stub_(v1::HookService::NewStub(channel)) {
    if (!token.empty())
      context_.AddMetadata("authorization", "Bearer " + token);
    stream_ = stub_->Connect(&context_);
    reader_ = std::thread([this] {
      v1::ServerMessage message;
      while (true) {
        {
          absl::MutexLock lock(&mu_);
          mu_.Await(absl::Condition(
              +[](bool* paused) { return !*paused; }, &paused_));
        }
        if (!stream_->Read(&message)) break;
        absl::MutexLock lock(&mu_);
        inbox_.push_back(message);
      }
      absl::MutexLock lock(&mu_);
      closed_ = true;
    });
  }

  ~HookStream() { Finish().IgnoreError(); }

  // Half-closes, waits for the server to end the stream, and returns how it
  // ended. Later calls return the same status.
  grpc::Status Finish() {
    if (!finished_) {
      Resume();
      Close();
      reader_.join();
      status_ = stream_->Finish();
      finished_ = true;
    }
    return status_;
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

  // Takes the first queued message for which `pred` holds, leaving the others
  // queued in order; nullopt after `timeout` or once the stream closed without
  // one.
  std::optional<v1::ServerMessage> Take(
      const std::function<bool(const v1::ServerMessage&)>& pred,
      absl::Duration timeout = absl::Seconds(30)) {
    absl::MutexLock lock(&mu_);
    auto find = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return std::find_if(inbox_.begin(), inbox_.end(), pred);
    };
    auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return find() != inbox_.end() || closed_;
    };
    mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
    auto it = find();
    if (it == inbox_.end()) return std::nullopt;
    v1::ServerMessage m = std::move(*it);
    inbox_.erase(it);
    return m;
  }

  // Subscribes and returns the ack or the error for it (other messages stay
  // queued); nullopt after `timeout`.
  std::optional<v1::ServerMessage> Subscribe(
      const v1::Subscribe& subscribe,
      absl::Duration timeout = absl::Seconds(30)) {
    v1::ClientMessage m;
    *m.mutable_subscribe() = subscribe;
    if (!Send(m)) return std::nullopt;
    const std::string id = subscribe.subscription_id();
    return Take(
        [&id](const v1::ServerMessage& x) {
          return (x.has_subscribed() &&
                  x.subscribed().subscription_id() == id) ||
                 (x.has_error() && x.error().subscription_id() == id);
        },
        timeout);
  }

  // Replies to `event` (on its subscription) and returns the ReplyResult
  // (other messages, such as the next event, stay queued); nullopt after
  // `timeout`.
  std::optional<v1::ReplyResult> Reply(
      const v1::Event& event, const std::vector<v1::Mutation>& mutations,
      absl::Duration timeout = absl::Seconds(30)) {
    v1::ClientMessage m;
    v1::Reply* reply = m.mutable_reply();
    reply->set_subscription_id(event.subscription_id());
    reply->set_job_id(event.job_id());
    reply->set_seq(event.seq());
    for (const v1::Mutation& mutation : mutations)
      *reply->add_mutations() = mutation;
    if (!Send(m)) return std::nullopt;
    std::optional<v1::ServerMessage> result = Take(
        [&event](const v1::ServerMessage& x) {
          return x.has_reply_result() &&
                 x.reply_result().subscription_id() ==
                     event.subscription_id() &&
                 x.reply_result().job_id() == event.job_id() &&
                 x.reply_result().seq() == event.seq();
        },
        timeout);
    if (!result) return std::nullopt;
    return result->reply_result();
  }

  // Stops taking messages off the wire (after one already being read) until
  // Resume().
  void Pause() {
    absl::MutexLock lock(&mu_);
    paused_ = true;
  }
  void Resume() {
    absl::MutexLock lock(&mu_);
    paused_ = false;
  }

  // Half-closes the client side; the server finishes the stream.
  void Close() {
    absl::MutexLock lock(&write_mu_);
    if (!write_closed_) stream_->WritesDone();
    write_closed_ = true;
  }

 private:
  std::unique_ptr<v1::HookService::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::ClientMessage, v1::ServerMessage>>
      stream_;
  std::thread reader_;
  // Finish ran (only the test's thread calls it)
  bool finished_ = false;
  // its result
  grpc::Status status_;
  absl::Mutex write_mu_;
  bool write_closed_ ABSL_GUARDED_BY(write_mu_) = false;
  absl::Mutex mu_;
  std::deque<v1::ServerMessage> inbox_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool paused_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace yolohook::testing

#endif  // YOLOHOOK_TESTS_TESTING_HOOK_STREAM_H_
