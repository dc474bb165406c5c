// The C++ client of yolohookd: jobs (submit, get, list, cancel, wait,
// predict) and remote callbacks that look exactly like the engine's
// in-process ones.
//
//   yolohook::Client client;  // 127.0.0.1:50051
//   yolohook::CallbackOptions intercept;
//   intercept.mode = yolohook::CallbackOptions::kIntercept;
//   client.AddCallback("on_fit_epoch_end", [](yolohook::EventContext& ctx) {
//     if (ctx.trainer->metrics["metrics/mAP50(B)"] > 0.9)
//       ctx.trainer->stop = true;  // sent back as a stop_training mutation
//   }, intercept);
//   auto job = client.Submit("train", {{"data", "shapes"}, {"epochs", "10"}});
//
// A callback written for engine::Yolo::AddCallback works unchanged: the client
// rebuilds the event's state (server/callbacks/state.h), runs the function,
// and turns what it changed into the Reply's mutations.
#ifndef YOLOHOOK_CLIENT_CPP_CLIENT_H_
#define YOLOHOOK_CLIENT_CPP_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/cpp/remote_state.h"
#include "server/callbacks/callbacks.h"
#include "server/callbacks/state.h"
#include "yolohook/v1/callbacks.pb.h"
#include "yolohook/v1/jobs.pb.h"
#include "yolohook/v1/predict.pb.h"

namespace yolohook {

class FrameStream;
namespace client_internal {
class ChannelSetup;
}  // namespace client_internal

// How one remote callback is subscribed.
struct CallbackOptions {
  enum Mode {
    kObserve,    // receive events; never slows the job, never replies
    kIntercept,  // the job waits for each reply; changes become mutations
  };
  // observe (default) or intercept
  Mode mode = kObserve;
  // interceptors run in ascending priority on the server
  int priority = 0;
  // Interceptors: how long the job waits per event (zero: Client::Options).
  absl::Duration reply_timeout = absl::ZeroDuration();
  // Interceptors: what a timeout or a disconnect does (UNSPECIFIED:
  // Client::Options::failure_mode).
  v1::FailureMode failure_mode = v1::FAILURE_MODE_UNSPECIFIED;
  // Jobs to follow by id; with match_labels empty too: every job.
  std::vector<std::string> job_ids;
  // Jobs carrying all these labels, including jobs submitted later.
  std::map<std::string, std::string> match_labels;
  // Predictor events carry the batch's frames (decoded into
  // PredictorState::frames).
  bool include_images = false;
  // Observers following job_ids: replay retained events from this seq on
  // (1 = from the start; 0 = only new events).
  int64_t from_seq = 0;
};

// A client of one yolohookd. Thread-safe.
//
// Remote callbacks share one long-lived HookService.Connect stream per
// Client, opened by Start() or by the first AddCallback. A background thread
// reads it; callbacks run one at a time, in arrival order, on a second
// client-owned thread (never on gRPC's). A broken stream is reopened with
// backoff and every subscription is sent again; observers following job ids
// resume after the last event they received, so that they see each event
// exactly once. Callbacks must not call Stop() or the destructor; they may
// call everything else.
class Client {
 public:
  struct Options {
    // the server, host:port
    std::string target = "127.0.0.1:50051";
    // Channel credentials; null: built from the tls fields below (plaintext
    // when none is set). When set, the tls fields are ignored.
    std::shared_ptr<grpc::ChannelCredentials> credentials;
    // Bearer token sent with every call (metadata "authorization: Bearer
    // <token>"); empty: the one in token_file, else none.
    std::string token;
    // A file holding the token (its first non-blank line); read at
    // construction when token is empty.
    std::string token_file;
    // TLS with the system's root certificates. Also on when any tls_ field
    // below is set.
    bool tls = false;
    // PEM root CA that signed the server's cert
    std::string tls_ca_file;
    // PEM client certificate (mutual TLS)
    std::string tls_cert_file;
    // PEM private key of tls_cert_file
    std::string tls_key_file;
    // The name to check the server's certificate against ("" = the target's
    // host), e.g. when connecting through an address the cert does not name.
    std::string tls_server_name;
    // Deadline of each unary call (Submit, Get, List, Cancel, Predict).
    absl::Duration rpc_timeout = absl::Minutes(5);
    // Largest message sent or received (inline images, results).
    int max_message_bytes = 64 << 20;
    // Reconnect backoff: first delay, growth factor and cap.
    absl::Duration reconnect_initial_backoff = absl::Milliseconds(100);
    double reconnect_multiplier = 2.0;
    absl::Duration reconnect_max_backoff = absl::Seconds(5);
    // How long AddCallback waits for the server to acknowledge a
    // subscription; a stream that leaves a Subscribe unanswered this long is
    // reopened on a new connection.
    absl::Duration subscribe_timeout = absl::Seconds(10);
    // Interceptors' reply timeout when CallbackOptions sets none (zero: the
    // server's default).
    absl::Duration reply_timeout = absl::ZeroDuration();
    // Interceptors' failure mode when CallbackOptions sets none.
    v1::FailureMode failure_mode = v1::FAILURE_MODE_CONTINUE;
    // Events received but not yet handled by callbacks; the reader waits
    // beyond this (the server then buffers, and ends a subscription that falls
    // too far behind as lagging, which the client resumes).
    size_t max_pending_events = 4096;
    // Problems that do not stop the client: a rejected reply (applied=false),
    // a subscription the server ended, a broken stream. Called on a client
    // thread; null: printed to stderr.
    std::function<void(const absl::Status&)> on_error;
  };

  // Connects lazily: no RPC is made until the first call. Files named in the
  // options are read here; if one cannot be used (missing, not PEM, a
  // certificate without its key), every call returns INVALID_ARGUMENT naming
  // the option and file.
  Client();
  explicit Client(Options options);
  // Stop().
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // --- Jobs. Errors: the server's, same code and message (INVALID_ARGUMENT
  // naming a bad argument, NOT_FOUND, FAILED_PRECONDITION, ...), UNAVAILABLE
  // when it cannot be reached, DEADLINE_EXCEEDED after rpc_timeout.

  // Queues a job. `mode`: train, val, predict or export (INVALID_ARGUMENT
  // otherwise). `images`: predict only, used instead of args["source"].
  absl::StatusOr<v1::Job> Submit(
      absl::string_view mode, const std::map<std::string, std::string>& args,
      const std::map<std::string, std::string>& labels = {},
      const std::vector<v1::Image>& images = {});
  absl::StatusOr<v1::Job> Submit(
      v1::Mode mode, const std::map<std::string, std::string>& args,
      const std::map<std::string, std::string>& labels = {},
      const std::vector<v1::Image>& images = {});
  absl::StatusOr<v1::Job> Get(const std::string& id);

  struct ListQuery {
    // only these (empty: all)
    std::vector<v1::JobState> states;
    // carrying all these labels
    std::map<std::string, std::string> labels;
    // 0: the server's default
    int page_size = 0;
    // from a previous ListJobsResponse
    std::string page_token;
  };
  absl::StatusOr<v1::ListJobsResponse> List(const ListQuery& query);
  absl::StatusOr<v1::Job> Cancel(const std::string& id);
  // Polls the job until it is SUCCEEDED, FAILED, CANCELLED or INTERRUPTED, and
  // returns it. DEADLINE_EXCEEDED after `timeout`, naming the job's state.
  absl::StatusOr<v1::Job> Wait(
      const std::string& id, absl::Duration timeout = absl::InfiniteDuration());
  // Synchronous prediction on inline images; interceptors' replacements are
  // what it returns. ABORTED when the job failed (with its error).
  absl::StatusOr<v1::PredictResponse> Predict(
      const std::map<std::string, std::string>& args,
      const std::vector<v1::Image>& images,
      const std::map<std::string, std::string>& labels = {});
  // Opens a PredictService.PredictStream call: one predict job fed frame by
  // frame (a video), its results coming back in frame order after
  // interceptors. `args` and `labels` ride on the first frame sent. Makes no
  // RPC until the first Send; errors (a bad argument, an unreachable server)
  // end the stream: Send returns false and Finish returns them. The stream
  // has no deadline (rpc_timeout does not apply) and may outlive the Client.
  std::unique_ptr<FrameStream> PredictStream(
      const std::map<std::string, std::string>& args,
      const std::map<std::string, std::string>& labels = {});

  // --- Remote callbacks.

  // Subscribes `fn` to one event, like engine::Yolo::AddCallback, and waits
  // for the server's acknowledgement (subscribe_timeout): events fired after
  // it returns reach `fn`. Errors: INVALID_ARGUMENT for an unknown event name
  // (naming it), an empty function or from_seq on an interceptor; the server's
  // refusal (NOT_FOUND for an unknown job id, ...); UNAVAILABLE when the
  // server did not answer in time.
  absl::Status AddCallback(absl::string_view event, Callback fn,
                           CallbackOptions options = {});
  // One subscription for several events (empty: all 25); returns its id for
  // WaitEnded / Unsubscribe. Errors as AddCallback.
  absl::StatusOr<std::string> Subscribe(const std::vector<std::string>& events,
                                        Callback fn,
                                        CallbackOptions options = {});
  // Ends a subscription. NOT_FOUND for an unknown id.
  absl::Status Unsubscribe(const std::string& subscription_id);
  // Blocks until the subscription ended and its last event was handled: OK
  // when its jobs all finished (JOBS_DONE) or it was unsubscribed; the error
  // that ended it otherwise; DEADLINE_EXCEEDED after `timeout`.
  absl::Status WaitEnded(const std::string& subscription_id,
                         absl::Duration timeout = absl::InfiniteDuration());

  // The wire event being handled; valid only inside a callback, on the thread
  // that runs it (job id, seq, time, args). Null elsewhere.
  static const v1::Event* CurrentEvent();

  // Opens the callback stream now. Idempotent.
  void Start();
  // Closes the stream and joins the client's threads; pending interceptor
  // events get no reply (the server applies their failure mode). Idempotent.
  void Stop();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// One PredictStream call, made by Client::PredictStream. Thread-safe: Send and
// Finish are serialised (one sender at a time), Next may run on another thread
// meanwhile, Cancel on any thread; only the destructor must not overlap them.
//
// A client thread reads the server's results as they come and keeps them
// until Next takes them, so a sender never deadlocks with a server waiting for
// its results to be read, however many frames it sends before reading.
//
//   auto stream = client.PredictStream({{"model", "best.pt"}});
//   std::thread printer([&] {
//     v1::FrameResult r;
//     while (stream->Next(&r)) Print(r);  // r.index() is the frame's
//   });
//   for (...) if (!stream->Send(i, name, jpeg)) break;
//   absl::Status status = stream->Finish();  // after the last result
//   printer.join();
class FrameStream {
 public:
  // Cancel() unless Finish() returned, then waits for the call to end.
  ~FrameStream();
  FrameStream(const FrameStream&) = delete;
  FrameStream& operator=(const FrameStream&) = delete;

  // Sends one frame: `index` is echoed in its FrameResult, `name` becomes
  // Result.path, `data` holds JPEG or PNG bytes. Blocks while the server does
  // not take more frames (flow control: it reads a few ahead of the job).
  // False once the stream has ended (the server finished it, Cancel, Finish,
  // a broken connection): Finish tells why.
  bool Send(int64_t index, const std::string& name, std::string data);
  // Blocks until the next result, in frame order; false when the stream has
  // ended and every result was taken.
  bool Next(v1::FrameResult* result);
  // Half-closes (no frame follows) and blocks until the server ends the
  // stream, after the last frame's result; results not yet taken stay for
  // Next. Returns the stream's end: OK; the server's code and message (e.g.
  // INVALID_ARGUMENT naming a bad argument, ABORTED naming a bad frame);
  // CANCELLED after Cancel; UNAVAILABLE when the server cannot be reached.
  // Later calls return the same status.
  absl::Status Finish();
  // Cancels the call, and with it the server's job; Send and Next return
  // false soon after.
  void Cancel();

 private:
  friend class Client;
  class Impl;
  // A call on `channel` (see Client::PredictStream).
  static std::unique_ptr<FrameStream> Open(
      std::shared_ptr<grpc::Channel> channel,
      const client_internal::ChannelSetup& setup,
      const std::map<std::string, std::string>& args,
      const std::map<std::string, std::string>& labels);
  explicit FrameStream(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Reads an image file into an inline image named after the file.
// INVALID_ARGUMENT naming the file when it cannot be read.
absl::StatusOr<v1::Image> ImageFromFile(const std::string& path);

}  // namespace yolohook

#endif  // YOLOHOOK_CLIENT_CPP_CLIENT_H_
