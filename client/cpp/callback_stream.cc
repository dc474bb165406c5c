#include "client/cpp/callback_stream.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "client/cpp/remote_state.h"
#include "server/callbacks/events.h"

namespace yolohook::client_internal {
namespace {

thread_local const v1::Event* current_event = nullptr;

// How many messages the client takes between Acks (fewer when it catches up).
constexpr int64_t kAckEvery = 32;

v1::ClientMessage AckMessage(int64_t taken) {
  v1::ClientMessage message;
  message.mutable_ack()->set_taken(taken);
  return message;
}

}  // namespace

CallbackStream::CallbackStream(const Client::Options& options,
                               const ChannelSetup& setup)
    : options_(options),
      setup_(setup),
      subs_(SubscriptionTable::Defaults{options.reply_timeout,
                                        options.failure_mode}) {}

CallbackStream::~CallbackStream() { Stop(); }

const v1::Event* CallbackStream::CurrentEvent() { return current_event; }

// --- Subscriptions ----------------------------------------------------------

absl::StatusOr<std::string> CallbackStream::Subscribe(
    const std::vector<std::string>& events, Callback fn,
    CallbackOptions options) {
  if (!setup_.problem().ok()) return setup_.problem();
  if (!fn) return absl::InvalidArgumentError("empty callback function");
  for (const std::string& name : events) {
    if (!EventFromName(name).ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown event '", name, "'; valid events: ", AllEventNames()));
    }
  }
  if (options.from_seq < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("from_seq ", options.from_seq, " is negative"));
  }
  if (options.from_seq > 0 && options.job_ids.empty()) {
    return absl::InvalidArgumentError(
        "from_seq needs job_ids (replays follow particular jobs)");
  }
  if (options.from_seq > 0 && options.mode == CallbackOptions::kIntercept) {
    return absl::InvalidArgumentError(
        "from_seq is for observers: interceptors only see new events");
  }
  std::shared_ptr<Subscription> sub;
  std::shared_ptr<Connection> conn;
  v1::ClientMessage message;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_)
      return absl::FailedPreconditionError("the client was stopped");
    sub = subs_.Add(events, std::move(options), std::move(fn));
    if (current_ != nullptr) {
      conn = current_;
      message = subs_.BuildSubscribe(*sub, conn->generation);
    }
  }
  // Without a stream yet, the reader subscribes it when the stream opens.
  if (conn != nullptr) Send(conn, std::move(message));
  Start();

  absl::MutexLock lock(&mu_);
  auto answered = [&sub]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return sub->ever_acked || sub->ending;
  };
  mu_.AwaitWithTimeout(absl::Condition(&answered), options_.subscribe_timeout);
  if (sub->ever_acked) return sub->id;
  subs_.Erase(sub->id);
  if (sub->ending) return sub->end_status;
  sub->ending = true;
  return absl::UnavailableError(
      absl::StrCat("yolohookd at ", setup_.target(),
                   " did not acknowledge the subscription within ",
                   absl::FormatDuration(options_.subscribe_timeout)));
}

absl::Status CallbackStream::Unsubscribe(const std::string& id) {
  std::shared_ptr<Subscription> sub;
  std::shared_ptr<Connection> conn;
  v1::ClientMessage message;
  {
    absl::MutexLock lock(&mu_);
    sub = subs_.Find(id);
    if (sub == nullptr)
      return absl::NotFoundError(absl::StrCat("no subscription '", id, "'"));
    if (sub->ending) return absl::OkStatus();
    sub->ending = true;
    if (current_ != nullptr && sub->sent_generation == current_->generation) {
      conn = current_;
      message.mutable_unsubscribe()->set_subscription_id(sub->wire_id);
    }
  }
  // The server's SubscriptionEnded ends it after its queued events; without
  // a stream (or if it breaks first), it is ended here or by the reader.
  if (conn == nullptr) {
    EnqueueEnd(std::move(sub), absl::OkStatus());
  } else {
    Send(conn, std::move(message));
  }
  return absl::OkStatus();
}

absl::Status CallbackStream::WaitEnded(const std::string& id,
                                       absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  std::shared_ptr<Subscription> sub = subs_.Find(id);
  if (sub == nullptr)
    return absl::NotFoundError(absl::StrCat("no subscription '", id, "'"));
  auto ended = [&sub]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return sub->ended; };
  if (!mu_.AwaitWithTimeout(absl::Condition(&ended), timeout)) {
    return absl::DeadlineExceededError(
        absl::StrCat("subscription ", id, " still running after ",
                     absl::FormatDuration(timeout)));
  }
  return sub->end_status;
}

void CallbackStream::Start() {
  absl::MutexLock lock(&mu_);
  if (started_ || stopping_) return;
  started_ = true;
  reader_ = std::thread([this] { ReadLoop(); });
  writer_ = std::thread([this] { WriteLoop(); });
  dispatcher_ = std::thread([this] { DispatchLoop(); });
}

void CallbackStream::Stop() {
  std::shared_ptr<Connection> conn;
  std::shared_ptr<Connection> connecting;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ && !started_) return;
    // Let the callback running now finish and its reply go out, so that a
    // program stopping after its last event does not drop that reply.
    if (started_) {
      mu_.AwaitWithTimeout(absl::Condition(this, &CallbackStream::IdleLocked),
                           absl::Seconds(2));
    }
    stopping_ = true;
    conn = current_;
    connecting = connecting_;
  }
  if (conn != nullptr) conn->context.TryCancel();
  if (connecting != nullptr) connecting->context.TryCancel();
  if (reader_.joinable()) reader_.join();
  if (writer_.joinable()) writer_.join();
  if (dispatcher_.joinable()) dispatcher_.join();
  absl::MutexLock lock(&mu_);
  started_ = false;
  // Nobody will end the remaining subscriptions now.
  subs_.MarkAllEnded(absl::CancelledError("the client was stopped"));
}

// --- The reader -------------------------------------------------------------

void CallbackStream::ReadLoop() {
  absl::Duration backoff = options_.reconnect_initial_backoff;
  // The current outage was reported.
  bool reported = false;
  while (true) {
    std::shared_ptr<Connection> conn = Open();
    if (conn == nullptr) return;
    v1::ServerMessage message;
    while (conn->stream->Read(&message)) {
      backoff = options_.reconnect_initial_backoff;
      reported = false;
      Handle(conn, message);
    }
    const grpc::Status status = Close(*conn);
    if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
        status.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
      // Retrying with the same token cannot help: the subscriptions end
      // with the refusal (Subscribe returns it).
      EndAll(FromGrpc(status, setup_.target()));
    }
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    if (!reported) {
      reported = true;
      const absl::Status broken = FromGrpc(status, setup_.target());
      mu_.Unlock();
      ReportError(absl::UnavailableError(absl::StrCat(
          "callback stream closed (",
          broken.ok() ? std::string("by the server") : broken.ToString(),
          "); reconnecting")));
      mu_.Lock();
    }
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), backoff);
    if (stopping_) return;
    backoff = std::min(backoff * options_.reconnect_multiplier,
                       options_.reconnect_max_backoff);
  }
}

std::shared_ptr<CallbackStream::Connection> CallbackStream::Open() {
  auto conn = std::make_shared<Connection>();
  conn->context.set_wait_for_ready(true);
  setup_.Authorize(conn->context);
  bool fresh;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return nullptr;
    conn->generation = ++generation_;
    // Stop() cancels a connect that waits.
    connecting_ = conn;
    fresh = fresh_channel_ || stub_ == nullptr;
    fresh_channel_ = false;
  }
  if (fresh) {
    // The stream has a channel of its own, with its own connections, so that
    // a new channel means a new connection.
    channel_ = setup_.NewChannel(/*own_connection=*/true);
    stub_ = v1::HookService::NewStub(channel_);
  }
  conn->channel = channel_;
  conn->stream = stub_->Connect(&conn->context);
  std::vector<v1::ClientMessage> subscribes;
  {
    // Published only with its stream: writers may use it from now on.
    absl::MutexLock lock(&mu_);
    connecting_ = nullptr;
    if (stopping_) conn->context.TryCancel();
    current_ = conn;
    subscribes = subs_.SubscribeAll(conn->generation);
  }
  // Acknowledged delivery first: the server then holds back what this client
  // does not take.
  Send(conn, AckMessage(0));
  for (v1::ClientMessage& m : subscribes) Send(conn, std::move(m));
  return conn;
}

std::optional<v1::ClientMessage> CallbackStream::AckLocked(Connection& conn) {
  const int64_t taken = conn.received - conn.pending;
  if (taken - conn.acked >= kAckEvery ||
      (conn.pending == 0 && taken > conn.acked)) {
    conn.acked = taken;
    return AckMessage(taken);
  }
  return std::nullopt;
}

grpc::Status CallbackStream::Close(Connection& conn) {
  std::vector<std::pair<std::shared_ptr<Subscription>, absl::Status>> ends;
  {
    absl::MutexLock lock(&mu_);
    current_ = nullptr;
    // Subscriptions on their way out whose end the server did not send.
    for (std::shared_ptr<Subscription>& sub : subs_.Ending())
      ends.emplace_back(sub, sub->end_status);
  }
  for (auto& [sub, status] : ends) EnqueueEnd(std::move(sub), status);
  // A write still in flight is cancelled so that it returns; otherwise the
  // call is left alone, so that Finish reports the server's status (e.g.
  // UNAUTHENTICATED) rather than a local CANCELLED.
  if (!conn.write_mu.TryLock()) {
    conn.context.TryCancel();
    conn.write_mu.Lock();
  }
  conn.closed = true;
  conn.write_mu.Unlock();
  return conn.stream->Finish();
}

void CallbackStream::Handle(const std::shared_ptr<Connection>& conn,
                            v1::ServerMessage& message) {
  // Every message counts as received; an event stays pending until its
  // callbacks ran (Dispatch), the others are taken at once.
  std::optional<v1::ClientMessage> ack;
  {
    absl::MutexLock lock(&mu_);
    ++conn->received;
    if (message.has_event()) {
      ++conn->pending;
    } else {
      ack = AckLocked(*conn);
    }
  }
  if (ack.has_value()) Send(conn, *std::move(ack));
  switch (message.kind_case()) {
    case v1::ServerMessage::kSubscribed: {
      absl::MutexLock lock(&mu_);
      std::shared_ptr<Subscription> sub =
          subs_.FindWire(message.subscribed().subscription_id());
      if (sub != nullptr) subs_.OnAck(*sub, message.subscribed());
      return;
    }
    case v1::ServerMessage::kEvent: {
      std::shared_ptr<Subscription> sub;
      {
        absl::MutexLock lock(&mu_);
        sub = subs_.FindWire(message.event().subscription_id());
        if (sub != nullptr && !subs_.Accept(*sub, message.event()))
          sub = nullptr;
        if (sub == nullptr) {
          // Not ours, or a duplicate: taken without a callback.
          --conn->pending;
          ack = AckLocked(*conn);
        }
      }
      if (sub == nullptr) {
        if (ack.has_value()) Send(conn, *std::move(ack));
        return;
      }
      Item item;
      item.kind = Item::kEvent;
      item.sub = std::move(sub);
      item.conn = conn;
      item.event.Swap(message.mutable_event());
      Enqueue(std::move(item), /*wait=*/true);
      return;
    }
    case v1::ServerMessage::kReplyResult: {
      const v1::ReplyResult& r = message.reply_result();
      if (!r.applied()) {
        ReportError(absl::FailedPreconditionError(
            absl::StrCat("reply to job ", r.job_id(), " seq ", r.seq(),
                         " not applied: ", r.reason())));
      }
      return;
    }
    case v1::ServerMessage::kSubscriptionEnded:
      HandleEnded(conn, message.subscription_ended());
      return;
    case v1::ServerMessage::kError:
      HandleError(message.error());
      return;
    case v1::ServerMessage::KIND_NOT_SET:
      return;
  }
}

void CallbackStream::HandleError(const v1::StreamError& error) {
  const absl::Status status(static_cast<absl::StatusCode>(error.code()),
                            error.message());
  std::shared_ptr<Subscription> sub;
  bool acked = true;
  {
    absl::MutexLock lock(&mu_);
    sub = subs_.FindWire(error.subscription_id());
    if (sub != nullptr && !sub->ending) {
      sub->ending = true;
      sub->end_status = status;
      acked = sub->ever_acked;
    } else {
      sub = nullptr;
    }
  }
  if (sub != nullptr) {
    EnqueueEnd(std::move(sub), status);
    // A refused Subscribe: Subscribe returns the error.
    if (!acked) return;
  }
  ReportError(status);
}

void CallbackStream::HandleEnded(const std::shared_ptr<Connection>& conn,
                                 const v1::SubscriptionEnded& ended) {
  std::shared_ptr<Subscription> sub;
  EndAction action;
  absl::Status problem;
  v1::ClientMessage resubscribe;
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    sub = subs_.FindWire(ended.subscription_id());
    if (sub == nullptr) return;
    action = subs_.OnEnded(*sub, ended, &problem);
    if (action == EndAction::kResubscribe)
      resubscribe = subs_.BuildSubscribe(*sub, conn->generation);
    status = sub->end_status;
  }
  switch (action) {
    case EndAction::kIgnore:
    case EndAction::kAwaitReconnect:
      return;
    case EndAction::kResubscribe:
      if (!problem.ok()) ReportError(problem);
      Send(conn, std::move(resubscribe));
      return;
    case EndAction::kEnd:
      EnqueueEnd(std::move(sub), status);
      return;
  }
}

void CallbackStream::EndAll(const absl::Status& status) {
  std::vector<std::shared_ptr<Subscription>> ended;
  {
    absl::MutexLock lock(&mu_);
    ended = subs_.EndAll(status);
  }
  for (std::shared_ptr<Subscription>& sub : ended)
    EnqueueEnd(std::move(sub), status);
}

// --- The writer -------------------------------------------------------------

void CallbackStream::Send(std::shared_ptr<Connection> conn,
                          v1::ClientMessage message) {
  absl::MutexLock lock(&mu_);
  outbox_.emplace_back(std::move(conn), std::move(message));
}

// Writes to a stream that broke meanwhile fail and are dropped (the
// reconnect sends what is still needed).
void CallbackStream::WriteLoop() {
  while (true) {
    std::pair<std::shared_ptr<Connection>, v1::ClientMessage> next;
    std::shared_ptr<Connection> stale;
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(
          absl::Condition(this, &CallbackStream::HasOutgoingLocked),
          absl::Milliseconds(250));
      if (stopping_) return;
      stale = UnansweredLocked();
    }
    if (stale != nullptr) {
      ReportError(absl::UnavailableError(
          absl::StrCat("yolohookd at ", setup_.target(),
                       " did not acknowledge a subscription within ",
                       absl::FormatDuration(options_.subscribe_timeout),
                       "; reconnecting on a new connection")));
      stale->context.TryCancel();
    }
    {
      absl::MutexLock lock(&mu_);
      if (outbox_.empty()) continue;
      next = std::move(outbox_.front());
      outbox_.pop_front();
      writing_ = true;
    }
    next.first->Write(next.second);
    absl::MutexLock lock(&mu_);
    writing_ = false;
  }
}

std::shared_ptr<CallbackStream::Connection> CallbackStream::UnansweredLocked() {
  if (current_ == nullptr || fresh_channel_) return nullptr;
  if (!subs_.HasUnanswered(current_->generation, absl::Now(),
                           options_.subscribe_timeout)) {
    return nullptr;
  }
  fresh_channel_ = true;
  return current_;
}

// --- The dispatcher ---------------------------------------------------------

void CallbackStream::Enqueue(Item item, bool wait) {
  absl::MutexLock lock(&mu_);
  if (wait) mu_.Await(absl::Condition(this, &CallbackStream::CanQueueLocked));
  if (stopping_) return;
  queue_.push_back(std::move(item));
}

void CallbackStream::DispatchLoop() {
  while (true) {
    Item item;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &CallbackStream::HasWorkLocked));
      if (stopping_) return;
      item = std::move(queue_.front());
      queue_.pop_front();
      dispatching_ = item.kind == Item::kEvent;
    }
    if (item.kind == Item::kEnded) {
      absl::MutexLock lock(&mu_);
      item.sub->ended = true;
      item.sub->end_status = item.end_status;
      continue;
    }
    Dispatch(item);
    std::optional<v1::ClientMessage> ack;
    {
      absl::MutexLock lock(&mu_);
      dispatching_ = false;
      --item.conn->pending;
      ack = AckLocked(*item.conn);
    }
    if (ack.has_value()) Send(item.conn, *std::move(ack));
  }
}

void CallbackStream::Dispatch(Item& item) {
  const v1::Event& event = item.event;
  const bool intercept = item.sub->options.mode == CallbackOptions::kIntercept;
  RemoteEventState after;
  absl::Status status =
      StateFromEvent(event, after, item.sub->options.include_images);
  std::vector<v1::Mutation> mutations;
  if (status.ok()) {
    RemoteEventState before;
    if (intercept)
      StateFromEvent(event, before, /*decode_images=*/false).IgnoreError();
    current_event = &event;
    item.sub->fn(after.ctx);
    current_event = nullptr;
    if (intercept) mutations = DiffMutations(before, after);
  } else {
    ReportError(status);
  }
  if (!intercept || !event.reply_required()) return;
  v1::ClientMessage message;
  v1::Reply* reply = message.mutable_reply();
  reply->set_subscription_id(event.subscription_id());
  reply->set_job_id(event.job_id());
  reply->set_seq(event.seq());
  for (v1::Mutation& m : mutations) reply->add_mutations()->Swap(&m);
  // A reply for an event of a stream that broke meanwhile is not sent: the
  // server has applied the failure mode already.
  Send(item.conn, std::move(message));
}

void CallbackStream::ReportError(const absl::Status& status) const {
  if (options_.on_error) {
    options_.on_error(status);
  } else {
    std::fprintf(stderr, "yolohook client: %s\n",
                 std::string(status.message()).c_str());
  }
}

}  // namespace yolohook::client_internal
