#include "server/service/hook_service.h"

#include <algorithm>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/common/limits.h"
#include "server/service/grpc_status.h"
#include "server/service/unary_call.h"

namespace yolohook::service {
namespace {

constexpr absl::string_view kConnect = "yolohook.v1.HookService/Connect";

// Answers (acks, reply results, errors) waiting for the client. A client that
// sends faster than it reads fills this; then its messages are not read until
// half of it has gone out, so the stream's memory stays bounded (gRPC's
// flow control then holds the client back).
constexpr size_t kOutboxLimit = 256;

class ConnectReactor;

// `message` as a byte buffer of its pieces; the shared body is referenced,
// not copied (the slice keeps it alive).
void ToByteBuffer(const events::OutgoingPtr& message, grpc::ByteBuffer* out) {
  grpc::Slice slices[3];
  size_t n = 0;
  if (!message->head.empty()) slices[n++] = grpc::Slice(message->head);
  auto* keep = new events::SharedBytes(message->body);
  slices[n++] = grpc::Slice(
      const_cast<char*>((*keep)->data()), (*keep)->size(),
      [](void* p) { delete static_cast<events::SharedBytes*>(p); }, keep);
  if (!message->tail.empty()) slices[n++] = grpc::Slice(message->tail);
  grpc::ByteBuffer buffer(slices, n);
  out->Swap(&buffer);
}

// Lets the bus's ready signal reach the reactor safely: the signal may arrive
// from a job thread at any time, also while the reactor is being destroyed.
struct Link {
  absl::Mutex mu;
  ConnectReactor* reactor ABSL_GUARDED_BY(mu) = nullptr;
  int in_flight ABSL_GUARDED_BY(mu) = 0;  // signals delivering right now
};

// One client's Connect stream. Owns itself: deleted in OnDone.
// Messages travel as raw bytes: client messages are parsed here (one that
// does not parse gets a StreamError, and the stream stays open), and the
// bus's messages are written as the serialized pieces it made, an event's
// shared bytes referenced rather than copied.
class ConnectReactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  ConnectReactor(grpc::CallbackServerContext* context, events::EventBus* bus,
                 const Authorizer* authorizer, auth::Principal who,
                 int64_t window)
      : context_(context),
        authorizer_(authorizer),
        generation_(authorizer->generation()),
        who_(std::move(who)),
        link_(std::make_shared<Link>()),
        window_(window) {
    {
      absl::MutexLock lock(&link_->mu);
      link_->reactor = this;
    }
    std::weak_ptr<Link> weak = link_;
    stream_ = bus->Connect([weak] { Signal(weak); }, who_.name);
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client half-closed or went away
      stream_->Close();
      {
        absl::MutexLock lock(&mu_);
        read_done_ = true;
      }
      MaybeWrite();
      return;
    }
    if (!StillAuthorized()) {
      MaybeWrite();
      return;
    }
    request_.Clear();
    if (ParseFromByteBuffer(in_, &request_)) {
      Handle(request_);
    } else {
      QueueError("", absl::InvalidArgumentError(
                         "a message that is not a valid "
                         "yolohook.v1.ClientMessage (it does not parse)"));
    }
    {
      absl::MutexLock lock(&mu_);
      if (outbox_.size() >= kOutboxLimit) {
        read_paused_ = true;  // MaybeWrite reads on once it drained
        return;
      }
    }
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      stream_->Close();
      absl::MutexLock lock(&mu_);
      read_done_ = true;
    }
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
    }
    MaybeWrite();
  }

  void OnCancel() override { stream_->Close(); }

  void OnDone() override {
    {
      absl::MutexLock lock(&link_->mu);
      link_->reactor = nullptr;
      link_->mu.Await(absl::Condition(
          +[](int* n) { return *n == 0; }, &link_->in_flight));
    }
    stream_->Close();
    delete this;
  }

 private:
  static void Signal(const std::weak_ptr<Link>& weak) {
    std::shared_ptr<Link> link = weak.lock();
    if (link == nullptr) return;
    ConnectReactor* reactor;
    {
      absl::MutexLock lock(&link->mu);
      reactor = link->reactor;
      if (reactor == nullptr) return;
      ++link->in_flight;
    }
    reactor->MaybeWrite();
    absl::MutexLock lock(&link->mu);
    --link->in_flight;
  }

  void Queue(const v1::ServerMessage& message) {
    {
      absl::MutexLock lock(&mu_);
      outbox_.push_back(events::Outgoing::Whole(message));
    }
    MaybeWrite();
  }

  void QueueError(const std::string& subscription_id,
                  const absl::Status& status) {
    v1::ServerMessage out;
    v1::StreamError* error = out.mutable_error();
    // An oversized id is not echoed (the message says what was wrong).
    if (subscription_id.size() <= kMaxIdBytes)
      error->set_subscription_id(subscription_id);
    error->set_code(static_cast<int>(status.code()));
    error->set_message(std::string(status.message()));
    Queue(std::move(out));
  }

  // Whether the stream's caller still holds its credential with the same
  // role, checked again after each reload of the token file. When not, the
  // stream ends (UNAUTHENTICATED) once the write in flight is done: clients
  // reconnect with their new credential and resume.
  bool StillAuthorized() {
    const uint64_t generation = authorizer_->generation();
    {
      absl::MutexLock lock(&mu_);
      if (revoked_.has_value()) return false;
      if (generation == generation_) return true;
      generation_ = generation;
    }
    absl::StatusOr<auth::Principal> now =
        authorizer_->Check(*context_, auth::Role::kViewer, kConnect);
    if (now.ok() && now->name == who_.name && now->role == who_.role) {
      return true;
    }
    grpc::Status status(
        grpc::StatusCode::UNAUTHENTICATED,
        now.ok() ? absl::StrCat("the token file changed the role of \"",
                                who_.name, "\"; connect again")
                 : absl::StrCat("the credential of \"", who_.name,
                                "\" is no longer valid (the token file was "
                                "reloaded): ",
                                now.status().message()));
    stream_->Close();
    absl::MutexLock lock(&mu_);
    revoked_ = std::move(status);
    return false;
  }

  // Whether the caller may intercept and reply; queues PERMISSION_DENIED for
  // `subscription_id` if not.
  bool MayIntercept(const std::string& subscription_id,
                    absl::string_view what) {
    if (auth::Allows(who_.role, auth::Role::kOperator)) return true;
    QueueError(subscription_id,
               PermissionDenied(who_, auth::Role::kOperator,
                                absl::StrCat(kConnect, " ", what)));
    return false;
  }

  void Handle(const v1::ClientMessage& message) {
    switch (message.kind_case()) {
      case v1::ClientMessage::kSubscribe: {
        if (message.subscribe().mode() == v1::SUBSCRIPTION_MODE_INTERCEPT &&
            !MayIntercept(message.subscribe().subscription_id(),
                          "(intercept subscription)")) {
          break;
        }
        absl::Status s = stream_->Subscribe(message.subscribe());
        if (!s.ok()) QueueError(message.subscribe().subscription_id(), s);
        break;
      }
      case v1::ClientMessage::kUnsubscribe: {
        absl::Status s =
            stream_->Unsubscribe(message.unsubscribe().subscription_id());
        if (!s.ok()) QueueError(message.unsubscribe().subscription_id(), s);
        break;
      }
      case v1::ClientMessage::kReply: {
        if (!MayIntercept(message.reply().subscription_id(), "(Reply)")) break;
        v1::ServerMessage out;
        *out.mutable_reply_result() = stream_->Reply(message.reply());
        Queue(std::move(out));
        break;
      }
      case v1::ClientMessage::kExtendDeadline: {
        if (!MayIntercept(message.extend_deadline().subscription_id(),
                          "(ExtendDeadline)")) {
          break;
        }
        v1::ServerMessage out;
        *out.mutable_reply_result() =
            stream_->ExtendDeadline(message.extend_deadline());
        Queue(std::move(out));
        break;
      }
      case v1::ClientMessage::kAck:
        HandleAck(message.ack());
        break;
      case v1::ClientMessage::KIND_NOT_SET:
        QueueError(
            "", absl::InvalidArgumentError(
                    "empty ClientMessage: set subscribe, unsubscribe, reply, "
                    "extend_deadline or ack"));
        break;
    }
  }

  // The client's count of messages taken: turns acknowledged delivery on,
  // and may open the window for more.
  void HandleAck(const v1::Ack& ack) {
    absl::Status bad;
    {
      absl::MutexLock lock(&mu_);
      if (ack.taken() < taken_ || ack.taken() > written_) {
        bad = absl::InvalidArgumentError(absl::StrCat(
            "Ack.taken: ", ack.taken(), " is ",
            ack.taken() < taken_
                ? absl::StrCat("below the ", taken_, " acknowledged before")
                : absl::StrCat("more than the ", written_,
                               " messages sent on this stream")));
      } else {
        acking_ = true;
        taken_ = ack.taken();
      }
    }
    if (!bad.ok()) {
      QueueError("", bad);
      return;
    }
    MaybeWrite();
  }

  // Whether the bus may have the next write: always, unless the client
  // acknowledges and `window_` messages are unacknowledged.
  bool WindowOpenLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !acking_ || written_ - taken_ < window_;
  }

  // Starts the next write if none is in flight; finishes the RPC once the
  // client is gone and no write is in flight. Messages come from this
  // reactor's own outbox (acks, errors) first, then from the bus.
  void MaybeWrite() {
    {
      absl::MutexLock lock(&mu_);
      signaled_ = true;
      if (writing_ || finished_) return;
      writing_ = true;
    }
    StillAuthorized();
    while (true) {
      bool stop;
      bool resume_read = false;
      bool window_open;
      std::optional<grpc::Status> revoked;
      {
        absl::MutexLock lock(&mu_);
        signaled_ = false;
        stop = read_done_ || revoked_.has_value();
        revoked = revoked_;
        current_ = nullptr;
        if (!stop && !outbox_.empty()) {
          current_ = std::move(outbox_.front());
          outbox_.pop_front();
          if (read_paused_ && outbox_.size() <= kOutboxLimit / 2) {
            read_paused_ = false;
            resume_read = true;
          }
        }
        window_open = WindowOpenLocked();
      }
      if (resume_read) StartRead(&in_);
      if (!stop && current_ == nullptr && window_open)
        current_ = stream_->Next();
      if (!stop && current_ != nullptr) {
        ToByteBuffer(current_, &out_);
        {
          absl::MutexLock lock(&mu_);
          ++written_;
        }
        StartWrite(&out_);
        return;  // OnWriteDone frees the slot
      }
      if (stop) {
        {
          absl::MutexLock lock(&mu_);
          finished_ = true;
          writing_ = false;
        }
        Finish(revoked.value_or(grpc::Status::OK));
        return;
      }
      absl::MutexLock lock(&mu_);
      if (!signaled_) {
        writing_ = false;
        return;
      }
    }
  }

  grpc::CallbackServerContext* const context_;
  const Authorizer* const authorizer_;
  // The token file generation the caller was last checked against.
  uint64_t generation_ ABSL_GUARDED_BY(mu_);
  const auth::Principal who_;
  std::shared_ptr<Link> link_;
  std::shared_ptr<events::Stream> stream_;
  // The read in flight, and what it held, parsed.
  grpc::ByteBuffer in_;
  v1::ClientMessage request_;

  absl::Mutex mu_;
  std::deque<events::OutgoingPtr> outbox_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) =
      false;  // a write is in flight or being started
  bool signaled_ ABSL_GUARDED_BY(mu_) =
      false;  // something may have become ready
  bool read_done_ ABSL_GUARDED_BY(mu_) = false;  // the client is gone
  bool finished_ ABSL_GUARDED_BY(mu_) = false;   // Finish was called
  // No read is in flight because the outbox is full (see kOutboxLimit).
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;
  // Set when the caller's credential was revoked: the stream's status.
  std::optional<grpc::Status> revoked_ ABSL_GUARDED_BY(mu_);
  // Acknowledged delivery: on once the client sent an Ack; messages written
  // so far, and how many of them the client took.
  const int64_t window_;
  bool acking_ ABSL_GUARDED_BY(mu_) = false;
  int64_t written_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t taken_ ABSL_GUARDED_BY(mu_) = 0;
  // The message being written; only the holder of the write slot touches it.
  events::OutgoingPtr current_;
  grpc::ByteBuffer out_;
};

}  // namespace

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>*
HookServiceImpl::Connect(grpc::CallbackServerContext* context) {
  absl::StatusOr<auth::Principal> who =
      authorizer_->Check(*context, auth::Role::kViewer, kConnect);
  if (!who.ok()) {
    return RejectStream<grpc::ByteBuffer, grpc::ByteBuffer>(
        ToGrpcStatus(who.status()));
  }
  return new ConnectReactor(context, bus_, authorizer_, *std::move(who),
                            std::max<int64_t>(stream_window_, 1));
}

}  // namespace yolohook::service
