// remote_bench: what yolohook's remote hooks cost, against bare gRPC on the
// same machine, in one process, over 127.0.0.1.
//
//   remote_bench [parts=stream,rtt,train] [n=2000] [subscribers=64]
//                [rounds=3] [images=192] [imgsz=224] [batch=16] [threads=2]
//                [warmup=1]
//
// - stream: observer throughput. A runner fires on_train_batch_end n times
//   (a realistic TrainerState) through a real service::Server; 1 and
//   `subscribers` Connect streams observe every event. Baseline: a bare
//   server-streaming RPC pushing n payloads of the event's serialized size to
//   1 and `subscribers` streams. Also measured: the same HookService over
//   an EventBus without an event log (delivery without persistence).
// - rtt: interceptor round trip. One intercepting client answers each event at
//   once; each Fire as the runner sees it, against a bare ping-pong (the server
//   pings with the event's size, the client answers) timed by the server.
// - train: one epoch of the real engine on a generated shapes set (`images`
//   training images), with no subscriber, an observer of every event, and an
//   interceptor of every batch event; the variants alternate for `rounds`
//   rounds after `warmup` unrecorded epochs. Epoch = on_train_epoch_start to
//   on_train_epoch_end.
//
// Prints a markdown table: each figure, its baseline, the ratio and the goal.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "bench/baseline.grpc.pb.h"
#include "bench/baseline_service.h"
#include "server/engine/config.h"
#include "server/engine/data/shapes.h"
#include "server/events/event_bus.h"
#include "server/jobs/engine_runner.h"
#include "server/service/hook_service.h"
#include "server/service/server.h"
#include "server/wire/conversions.h"
#include "yolohook/v1/callbacks.grpc.pb.h"

namespace yolohook::bench {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using Args = std::map<std::string, std::string>;

double Micros(Clock::duration d) {
  return std::chrono::duration<double, std::micro>(d).count();
}
double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t at = std::min(v.size() - 1, static_cast<size_t>(p * v.size()));
  return v[at];
}

double Median(const std::vector<double>& v) { return Percentile(v, 0.5); }

int64_t IntArg(const Args& args, const std::string& key, int64_t fallback) {
  auto it = args.find(key);
  int64_t v = fallback;
  if (it == args.end()) return v;
  if (!absl::SimpleAtoi(it->second, &v) || v < 0) {
    std::fprintf(stderr, "remote_bench: %s=%s is not a count, using %lld\n",
                 key.c_str(), it->second.c_str(),
                 static_cast<long long>(fallback));
    v = fallback;
  }
  return v;
}

// --- The event ---------------------------------------------------------------

// The arguments of a typical train job (every event carries them).
std::map<std::string, std::string> JobArgs() {
  return {{"data", "shapes"},   {"epochs", "30"},    {"imgsz", "320"},
          {"batch", "16"},      {"nbs", "16"},       {"threads", "2"},
          {"model", "yolov8n"}, {"verbose", "false"}};
}

// The trainer's state at on_train_batch_end in the middle of a run: losses,
// the last validation's metrics, learning rates, the tunable hyperparameters.
TrainerState RealisticTrainer() {
  TrainerState s;
  s.epoch = 4;
  s.epochs = 30;
  s.num_batches = 32;
  s.batch_size = 16;
  s.imgsz = 320;
  s.loss = 4.217;
  s.loss_items = {1.3127, 1.8841, 1.0202};
  s.tloss = {1.3342, 1.9418, 1.0311};
  s.loss_names = {"box_loss", "cls_loss", "dfl_loss"};
  s.metrics = {
      {"metrics/precision(B)", 0.4121}, {"metrics/recall(B)", 0.3387},
      {"metrics/mAP50(B)", 0.2954},     {"metrics/mAP50-95(B)", 0.1817},
      {"val/box_loss", 1.2904},         {"val/cls_loss", 1.7713},
      {"val/dfl_loss", 1.0185}};
  s.fitness = 0.1931;
  s.best_fitness = 0.1931;
  s.lr = {{"lr/pg0", 0.00931}, {"lr/pg1", 0.00931}, {"lr/pg2", 0.00931}};
  s.epoch_time = 38.52;
  s.elapsed = 171.3;
  s.save_dir = "/root/.yolohook/runs/train/train3";
  s.last = s.save_dir + "/weights/last.pt";
  s.best = s.save_dir + "/weights/best.pt";
  s.names = data::ShapesClassNames();
  Config defaults;
  for (const std::string& name : HyperparameterNames()) {
    s.hyperparameters[name] = *GetHyperparameter(defaults, name);
  }
  return s;
}

// The event as a subscriber receives it, for sizing the baseline's payloads.
v1::Event SampleEvent() {
  TrainerState trainer = RealisticTrainer();
  trainer.batch_index = 17;
  trainer.iteration = 4 * 32 + 17;
  EventContext ctx;
  ctx.event = Event::kOnTrainBatchEnd;
  ctx.trainer = &trainer;
  return wire::ToWire("job-0123456789ab", 145, absl::Now(), ctx, JobArgs(),
                      nullptr);
}

// --- The runner --------------------------------------------------------------

// What firing synthetic events measured.
struct FireTimings {
  std::vector<double> fire_us;   // each Fire, microseconds
  Clock::time_point first_fire;  // when the first Fire started
  Clock::time_point last_fire;   // when the last Fire returned
};

// Fires on_train_batch_end `count` times through `callbacks` as the engine
// does (a realistic TrainerState, changing a little from batch to batch),
// timing each Fire. Errors: CANCELLED, ABORTED when a callback failed the job.
absl::Status FireEvents(int64_t count, const Callbacks* callbacks,
                        const std::atomic<bool>* cancel, FireTimings& t) {
  TrainerState state = RealisticTrainer();
  t = FireTimings();
  t.fire_us.reserve(static_cast<size_t>(count));
  t.first_fire = Clock::now();
  for (int64_t i = 0; i < count; ++i) {
    if (cancel != nullptr && cancel->load())
      return absl::CancelledError("cancelled");
    state.batch_index = static_cast<int>(i % state.num_batches);
    state.iteration = state.epoch * state.num_batches + i;
    state.loss_items[0] = 1.3 + 1e-4 * static_cast<double>(i % 97);
    EventContext ctx;
    ctx.event = Event::kOnTrainBatchEnd;
    ctx.trainer = &state;
    const Clock::time_point start = Clock::now();
    if (callbacks != nullptr) callbacks->Run(ctx);
    t.fire_us.push_back(Micros(Clock::now() - start));
    if (ctx.fail_reason) return absl::AbortedError(*ctx.fail_reason);
  }
  t.last_fire = Clock::now();
  return absl::OkStatus();
}

// Runs remote_bench's jobs. A synthetic job fires on_train_batch_end `events`
// times (FireEvents); an engine job runs the real engine (EngineRunner) and
// times its first epoch. Thread-safe; the bench runs one job at a time.
class BenchRunner : public jobs::Runner {
 public:
  struct Plan {
    bool engine = false;  // run the real engine instead of firing events
    int64_t events = 0;   // synthetic: on_train_batch_end events to fire
  };
  struct Timings {
    FireTimings fire;          // synthetic
    double epoch_s = 0;        // engine: the first epoch, seconds
    double callbacks_s = 0;    // engine: in the job's callbacks meanwhile
    int64_t epoch_events = 0;  // engine: events fired meanwhile
  };

  explicit BenchRunner(jobs::EngineRunner::Options engine)
      : engine_(std::move(engine)) {}

  void SetPlan(Plan plan) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    plan_ = plan;
  }

  Timings Take() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    Timings out = std::move(timings_);
    timings_ = Timings();
    return out;
  }

  absl::Status Run(jobs::JobRecord& job,
                   const engine::RunOptions& run) override {
    Plan plan;
    {
      absl::MutexLock lock(&mu_);
      plan = plan_;
    }
    if (plan.engine) return RunEngine(job, run);
    FireTimings t;
    absl::Status status = FireEvents(plan.events, run.callbacks, run.cancel, t);
    absl::MutexLock lock(&mu_);
    timings_ = Timings();
    timings_.fire = std::move(t);
    return status;
  }

 private:
  absl::Status RunEngine(jobs::JobRecord& job, const engine::RunOptions& run) {
    // Runs the job's callbacks (the bus among them) inside a timer: the epoch
    // spans from after on_train_epoch_start's callbacks to after
    // on_train_epoch_end's, and the time spent in callbacks meanwhile is the
    // hooks' direct cost on the job's thread.
    Clock::time_point start;
    bool in_epoch = false;
    bool timed = false;
    Timings t;
    Callbacks callbacks;
    callbacks.AddForAll([&](EventContext& ctx) {
      const Clock::time_point before = Clock::now();
      if (run.callbacks != nullptr) run.callbacks->Run(ctx);
      const Clock::time_point after = Clock::now();
      if (in_epoch) {
        t.callbacks_s += Seconds(after - before);
        ++t.epoch_events;
      }
      if (ctx.event == Event::kOnTrainEpochStart && !timed) {
        start = after;
        in_epoch = true;
      } else if (ctx.event == Event::kOnTrainEpochEnd && in_epoch) {
        t.epoch_s = Seconds(after - start);
        in_epoch = false;
        timed = true;
      }
    });
    engine::RunOptions timed_run = run;
    timed_run.callbacks = &callbacks;
    absl::Status status = engine_.Run(job, timed_run);
    absl::MutexLock lock(&mu_);
    timings_ = t;
    return status;
  }

  jobs::EngineRunner engine_;
  absl::Mutex mu_;
  Plan plan_ ABSL_GUARDED_BY(mu_);
  Timings timings_ ABSL_GUARDED_BY(mu_);
};

// --- Clients -----------------------------------------------------------------

// A channel on a connection of its own (as separate clients would have).
std::shared_ptr<grpc::Channel> Connect(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetMaxReceiveMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(
      address, grpc::InsecureChannelCredentials(), args);
  channel->WaitForConnected(std::chrono::system_clock::now() +
                            std::chrono::seconds(10));
  return channel;
}

// One yolohook client: a Connect stream with one subscription, read by a
// thread that counts the events named `count_event`, notes when the last
// arrived, and answers events that require a reply at once (no mutations).
// Thread-safe.
class HookClient {
 public:
  struct Options {
    std::string subscription_id;      // also names the client in errors
    bool intercept = false;           // SUBSCRIPTION_MODE_INTERCEPT
    std::vector<std::string> events;  // empty: every event
    std::string count_event = "on_train_batch_end";  // what is counted
    int64_t expect = -1;  // done after this many (-1: until Stop)
  };

  HookClient(std::shared_ptr<grpc::Channel> channel, Options options)
      : options_(std::move(options)),
        stub_(v1::HookService::NewStub(std::move(channel))),
        stream_(stub_->Connect(&context_)) {}

  ~HookClient() { Stop(); }

  // Subscribes and waits for the ack, then starts reading. Errors: the
  // server's StreamError, or UNAVAILABLE when the stream ended first.
  absl::Status Start() {
    v1::ClientMessage subscribe;
    v1::Subscribe* s = subscribe.mutable_subscribe();
    s->set_subscription_id(options_.subscription_id);
    for (const std::string& e : options_.events) s->add_events(e);
    if (options_.intercept) {
      s->set_mode(v1::SUBSCRIPTION_MODE_INTERCEPT);
      s->mutable_reply_timeout()->set_seconds(10);
    }
    if (!stream_->Write(subscribe))
      return absl::UnavailableError("Connect: the stream closed");
    v1::ServerMessage m;
    while (stream_->Read(&m)) {
      if (m.has_subscribed()) {
        reader_ = std::thread([this] { Read(); });
        return absl::OkStatus();
      }
      if (m.has_error()) {
        return absl::InvalidArgumentError(
            absl::StrCat(options_.subscription_id, ": ", m.error().message()));
      }
    }
    return absl::UnavailableError(absl::StrCat(
        options_.subscription_id, ": the stream ended before Subscribed"));
  }

  // Waits until `expect` events arrived or the subscription ended; false on
  // timeout.
  bool Wait(absl::Duration timeout) {
    return done_.WaitForNotificationWithTimeout(timeout);
  }

  // Ends the stream and joins the reader. Idempotent.
  void Stop() {
    if (stopped_.exchange(true)) return;
    context_.TryCancel();
    if (reader_.joinable()) reader_.join();
    stream_->Finish().IgnoreError();
  }

  int64_t received() const { return received_.load(); }
  Clock::time_point last() const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return last_;
  }
  // Serialized size of the last counted event, and why the subscription
  // ended (empty while it has not).
  size_t last_event_bytes() const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return last_bytes_;
  }
  std::string ended() const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return ended_;
  }

 private:
  void Read() {
    v1::ServerMessage m;
    while (stream_->Read(&m)) {
      if (m.has_event()) {
        const v1::Event& event = m.event();
        if (event.reply_required()) {
          v1::ClientMessage reply;
          v1::Reply* r = reply.mutable_reply();
          r->set_subscription_id(event.subscription_id());
          r->set_job_id(event.job_id());
          r->set_seq(event.seq());
          stream_->Write(reply);
        }
        if (event.name() == options_.count_event) {
          const int64_t n = received_.fetch_add(1) + 1;
          {
            absl::MutexLock lock(&mu_);
            last_ = Clock::now();
            last_bytes_ = event.ByteSizeLong();
          }
          if (n == options_.expect) done_.Notify();
        }
      } else if (m.has_subscription_ended()) {
        absl::MutexLock lock(&mu_);
        ended_ = m.subscription_ended().message();
        break;
      }
    }
    if (!done_.HasBeenNotified()) done_.Notify();
  }

  const Options options_;
  std::unique_ptr<v1::HookService::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::ClientMessage, v1::ServerMessage>>
      stream_;
  std::thread reader_;
  std::atomic<bool> stopped_{false};
  std::atomic<int64_t> received_{0};
  absl::Notification done_;
  mutable absl::Mutex mu_;
  Clock::time_point last_ ABSL_GUARDED_BY(mu_);
  size_t last_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::string ended_ ABSL_GUARDED_BY(mu_);
};

// --- Measurements ------------------------------------------------------------

// Where the synthetic events go, behind the same HookService: a full
// server (job manager, the job store as event log) or an EventBus without a
// log.
struct Target {
  std::string address;
  // Fires n events of a new job; `t` gets what the runner measured.
  std::function<absl::Status(int64_t n, FireTimings& t)> fire;
};

Target ServerTarget(service::Server& server, BenchRunner& runner) {
  return {server.address(), [&server, &runner](int64_t n, FireTimings& t) {
            runner.SetPlan({/*engine=*/false, n});
            auto job = server.manager().Submit(Mode::kTrain, JobArgs(), {});
            if (!job.ok()) return job.status();
            auto done = server.manager().Wait(job->id, absl::Minutes(10));
            t = runner.Take().fire;
            if (!done.ok()) return done.status();
            if (done->state != jobs::JobState::kSucceeded)
              return absl::InternalError(done->error);
            return absl::OkStatus();
          }};
}

Target BusTarget(const std::string& address, events::EventBus& bus) {
  auto jobs = std::make_shared<int>(0);
  return {address, [&bus, jobs](int64_t n, FireTimings& t) {
            const std::string id = absl::StrCat("job-nolog", ++*jobs);
            bus.StartJob(id, {}, JobArgs());
            Callbacks callbacks;
            callbacks.AddForAll(bus.CallbackFor(id));
            absl::Status status = FireEvents(n, &callbacks, nullptr, t);
            bus.FinishJob(id);
            return status;
          }};
}

struct StreamFigure {
  double events_per_s = 0;  // events every stream received, per second
  int64_t missing = 0;      // events some stream did not receive
  double fire_p50_us = 0;   // yolohook: each Fire with these observers
  double fire_rate = 0;     // yolohook: events/s the runner fired
  std::string error;
};

// Bare gRPC: `streams` Stream calls of `n` payloads at once; events/s from
// the start to the last payload of the slowest stream.
StreamFigure BareStream(const std::string& address, int streams, int64_t n,
                        int32_t bytes) {
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < streams; ++i) channels.push_back(Connect(address));
  absl::Notification go;
  std::vector<int64_t> received(static_cast<size_t>(streams), 0);
  std::vector<Clock::time_point> last(static_cast<size_t>(streams));
  std::vector<std::thread> threads;
  for (int i = 0; i < streams; ++i) {
    threads.emplace_back([&, i] {
      auto stub = Baseline::NewStub(channels[static_cast<size_t>(i)]);
      StreamRequest request;
      request.set_count(n);
      request.set_payload_bytes(bytes);
      go.WaitForNotification();
      grpc::ClientContext context;
      auto reader = stub->Stream(&context, request);
      Payload p;
      int64_t count = 0;
      while (reader->Read(&p)) ++count;
      last[static_cast<size_t>(i)] = Clock::now();
      received[static_cast<size_t>(i)] = count;
      reader->Finish().IgnoreError();
    });
  }
  const Clock::time_point start = Clock::now();
  go.Notify();
  for (auto& t : threads) t.join();
  StreamFigure f;
  const Clock::time_point end = *std::max_element(last.begin(), last.end());
  f.events_per_s = static_cast<double>(n) / Seconds(end - start);
  for (int64_t r : received) f.missing += n - r;
  return f;
}

// yolohook: `streams` observers of every event; the runner fires n events.
StreamFigure HookStream(const Target& target, int streams, int64_t n) {
  StreamFigure f;
  std::vector<std::unique_ptr<HookClient>> clients;
  for (int i = 0; i < streams; ++i) {
    HookClient::Options o;
    o.subscription_id = absl::StrCat("observer", i);
    o.expect = n;
    clients.push_back(std::make_unique<HookClient>(Connect(target.address), o));
    absl::Status s = clients.back()->Start();
    if (!s.ok()) {
      f.error = std::string(s.message());
      return f;
    }
  }
  FireTimings t;
  absl::Status fired = target.fire(n, t);
  Clock::time_point end = t.first_fire;
  for (auto& c : clients) {
    if (!c->Wait(absl::Seconds(60))) f.error = "an observer timed out";
    f.missing += n - c->received();
    if (!c->ended().empty()) f.error = c->ended();
    end = std::max(end, c->last());
  }
  for (auto& c : clients) c->Stop();
  if (!fired.ok()) f.error = std::string(fired.message());
  f.events_per_s = static_cast<double>(n) / Seconds(end - t.first_fire);
  f.fire_p50_us = Median(t.fire_us);
  f.fire_rate = static_cast<double>(n) / Seconds(t.last_fire - t.first_fire);
  return f;
}

struct RttFigure {
  double p50_us = 0;
  double p99_us = 0;
  size_t samples = 0;
  std::string error;
};

RttFigure BarePingPong(const std::string& address, BaselineService& service,
                       int64_t n, int32_t bytes) {
  RttFigure f;
  auto stub = Baseline::NewStub(Connect(address));
  service.TakeRoundTrips();
  grpc::ClientContext context;
  auto stream = stub->PingPong(&context);
  Payload open;
  open.set_count(n);
  open.set_payload_bytes(bytes);
  stream->Write(open);
  Payload ping;
  while (stream->Read(&ping)) {
    Payload pong;
    pong.set_seq(ping.seq());
    stream->Write(pong);
  }
  grpc::Status status = stream->Finish();
  if (!status.ok()) f.error = status.error_message();
  std::vector<double> rtts = service.TakeRoundTrips();
  f.p50_us = Percentile(rtts, 0.5);
  f.p99_us = Percentile(rtts, 0.99);
  f.samples = rtts.size();
  return f;
}

// Each Fire with one interceptor answering at once (or with no subscriber).
RttFigure HookRoundTrip(const Target& target, int64_t n, bool intercept) {
  RttFigure f;
  std::unique_ptr<HookClient> client;
  if (intercept) {
    HookClient::Options o;
    o.subscription_id = "interceptor";
    o.intercept = true;
    o.events = {"on_train_batch_end"};
    client = std::make_unique<HookClient>(Connect(target.address), o);
    absl::Status s = client->Start();
    if (!s.ok()) {
      f.error = std::string(s.message());
      return f;
    }
  }
  FireTimings t;
  absl::Status fired = target.fire(n, t);
  if (!fired.ok()) f.error = std::string(fired.message());
  if (client != nullptr) client->Stop();
  f.p50_us = Percentile(t.fire_us, 0.5);
  f.p99_us = Percentile(t.fire_us, 0.99);
  f.samples = t.fire_us.size();
  return f;
}

enum class Variant { kNone, kObserver, kInterceptor };

const char* VariantName(Variant v) {
  switch (v) {
    case Variant::kNone:
      return "no subscriber";
    case Variant::kObserver:
      return "observer of every event";
    case Variant::kInterceptor:
      return "interceptor of every batch event";
  }
  return "";
}

struct EpochRun {
  double seconds = 0;
  double callbacks_s = 0;    // in the job's callbacks during the epoch
  int64_t epoch_events = 0;  // events fired during the epoch
  int64_t batch_events = 0;  // on_train_batch_end events the client saw
  size_t event_bytes = 0;    // the last one's serialized size
  std::string error;
};

EpochRun TrainEpoch(service::Server& server, BenchRunner& runner,
                    const Args& train_args, Variant variant) {
  EpochRun r;
  std::unique_ptr<HookClient> client;
  if (variant != Variant::kNone) {
    HookClient::Options o;
    o.subscription_id = "train";
    if (variant == Variant::kInterceptor) {
      o.intercept = true;
      o.events = {"on_train_batch_start", "on_train_batch_end"};
    }
    client = std::make_unique<HookClient>(Connect(server.address()), o);
    absl::Status s = client->Start();
    if (!s.ok()) {
      r.error = std::string(s.message());
      return r;
    }
  }
  runner.SetPlan({/*engine=*/true, 0});
  auto job = server.manager().Submit(Mode::kTrain, train_args, {});
  if (!job.ok()) {
    r.error = std::string(job.status().message());
    return r;
  }
  auto done = server.manager().Wait(job->id, absl::Minutes(30));
  if (!done.ok()) r.error = std::string(done.status().message());
  if (done.ok() && done->state != jobs::JobState::kSucceeded)
    r.error = done->error;
  if (client != nullptr) {
    client->Stop();
    r.batch_events = client->received();
    r.event_bytes = client->last_event_bytes();
  }
  const BenchRunner::Timings t = runner.Take();
  r.seconds = t.epoch_s;
  r.callbacks_s = t.callbacks_s;
  r.epoch_events = t.epoch_events;
  return r;
}

// --- Output ------------------------------------------------------------------

// The table, printed at the end (job logs go to stdout meanwhile).
std::vector<std::string>& Table() {
  static auto* rows = new std::vector<std::string>();
  return *rows;
}

void Row(const std::string& figure, const std::string& yolohook,
         const std::string& baseline, const std::string& ratio,
         const std::string& goal) {
  Table().push_back(absl::StrCat("| ", figure, " | ", yolohook, " | ", baseline,
                                 " | ", ratio, " | ", goal, " |"));
}

std::string Fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
}

std::string Rate(double per_s) {
  return per_s >= 10000 ? absl::StrCat(Fixed(per_s / 1000, 1), "k/s")
                        : absl::StrCat(Fixed(per_s, 0), "/s");
}

std::string Verdict(bool met) { return met ? "met" : "missed"; }

int Main(const Args& args) {
  std::set<std::string> parts;
  for (absl::string_view p : absl::StrSplit(
           args.count("parts") ? args.at("parts") : "stream,rtt,train", ',',
           absl::SkipEmpty())) {
    parts.insert(std::string(p));
  }
  for (const std::string& p : parts) {
    if (p != "stream" && p != "rtt" && p != "train") {
      std::fprintf(stderr,
                   "remote_bench: unknown part \"%s\" (stream, rtt, train)\n",
                   p.c_str());
      return 2;
    }
  }
  const int64_t n = std::max<int64_t>(1, IntArg(args, "n", 2000));
  const int subscribers =
      static_cast<int>(std::max<int64_t>(1, IntArg(args, "subscribers", 64)));
  const int64_t rounds = std::max<int64_t>(1, IntArg(args, "rounds", 3));
  const int64_t images = std::max<int64_t>(1, IntArg(args, "images", 192));
  const int64_t imgsz = IntArg(args, "imgsz", 224);
  const int64_t batch = IntArg(args, "batch", 16);
  const int64_t threads = IntArg(args, "threads", 2);
  const int64_t warmup = IntArg(args, "warmup", 1);

  const fs::path dir = fs::temp_directory_path() /
                       absl::StrCat("yolohook_remote_bench_", getpid());
  fs::create_directories(dir);

  BaselineService baseline;
  grpc::ServerBuilder builder;
  int baseline_port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &baseline_port);
  builder.RegisterService(&baseline);
  std::unique_ptr<grpc::Server> baseline_server = builder.BuildAndStart();
  if (baseline_server == nullptr) {
    std::fprintf(stderr, "remote_bench: cannot start the baseline server\n");
    return 1;
  }
  const std::string baseline_address =
      absl::StrCat("127.0.0.1:", baseline_port);

  jobs::EngineRunner::Options engine;
  engine.data_dir = dir.string();
  engine.threads = static_cast<int>(threads);
  BenchRunner runner(engine);
  service::Server::Options options;
  options.listen = "127.0.0.1:0";
  options.data_dir = dir.string();
  options.threads = static_cast<int>(threads);
  options.runner = &runner;
  options.reply_timeout = absl::Seconds(10);
  // Throughput, not lagging: every event stays queued until written.
  options.queue_limit = static_cast<size_t>(std::max<int64_t>(1024, n + 64));
  auto server = service::Server::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "remote_bench: %s\n",
                 std::string(server.status().message()).c_str());
    return 1;
  }

  // The same HookService over an EventBus without an event log: what
  // delivery costs without persisting each event.
  events::EventBus::Options bus_options;
  bus_options.queue_limit = options.queue_limit;
  bus_options.default_reply_timeout = options.reply_timeout;
  events::EventBus nolog_bus(bus_options);
  const service::Authorizer open_authorizer(nullptr);
  service::HookServiceImpl nolog_service(&nolog_bus, &open_authorizer);
  grpc::ServerBuilder nolog_builder;
  int nolog_port = 0;
  nolog_builder.AddListeningPort(
      "127.0.0.1:0", grpc::InsecureServerCredentials(), &nolog_port);
  nolog_builder.RegisterService(&nolog_service);
  std::unique_ptr<grpc::Server> nolog_server = nolog_builder.BuildAndStart();
  if (nolog_server == nullptr) {
    std::fprintf(stderr, "remote_bench: cannot start the bus-only server\n");
    return 1;
  }
  const Target full = ServerTarget(**server, runner);
  const Target nolog =
      BusTarget(absl::StrCat("127.0.0.1:", nolog_port), nolog_bus);

  const v1::Event sample = SampleEvent();
  const int32_t bytes = static_cast<int32_t>(sample.ByteSizeLong());

  if (parts.count("stream")) {
    for (int streams : {1, subscribers}) {
      const std::string what =
          absl::StrCat(streams, streams == 1 ? " stream" : " streams");
      StreamFigure bare = BareStream(baseline_address, streams, n, bytes);
      StreamFigure hook = HookStream(full, streams, n);
      StreamFigure bus = HookStream(nolog, streams, n);
      const double ratio = hook.events_per_s / bare.events_per_s;
      auto note = [&](const StreamFigure& f) {
        std::string out;
        if (!f.error.empty()) out = absl::StrCat(" (", f.error, ")");
        if (f.missing + bare.missing > 0) {
          out += absl::StrCat(" (missing: ", f.missing, ", bare ", bare.missing,
                              ")");
        }
        return out;
      };
      Row(absl::StrCat("observer throughput, ", what, ", ", n, " events",
                       note(hook)),
          Rate(hook.events_per_s), Rate(bare.events_per_s), Fixed(ratio, 2),
          absl::StrCat(">= 0.7: ",
                       Verdict(ratio >= 0.7 && note(hook).empty())));
      Row(absl::StrCat("  same, bus without event log", note(bus)),
          Rate(bus.events_per_s), Rate(bare.events_per_s),
          Fixed(bus.events_per_s / bare.events_per_s, 2), "");
      Row(absl::StrCat("  Fire p50 / events fired per s, ", what),
          absl::StrCat(Fixed(hook.fire_p50_us, 1), " µs / ",
                       Rate(hook.fire_rate)),
          "", "", "");
      Row(absl::StrCat("  Fire p50 / events fired per s, ", what,
                       ", without event log"),
          absl::StrCat(Fixed(bus.fire_p50_us, 1), " µs / ",
                       Rate(bus.fire_rate)),
          "", "", "");
    }
  }

  if (parts.count("rtt")) {
    RttFigure none = HookRoundTrip(full, n, /*intercept=*/false);
    RttFigure bare = BarePingPong(baseline_address, baseline, n, bytes);
    RttFigure hook = HookRoundTrip(full, n, /*intercept=*/true);
    RttFigure bus = HookRoundTrip(nolog, n, /*intercept=*/true);
    auto note = [&](const RttFigure& f) {
      std::string out;
      if (!f.error.empty()) out = absl::StrCat(" (", f.error, ")");
      if (!bare.error.empty()) out += absl::StrCat(" (bare: ", bare.error, ")");
      return out;
    };
    const double r50 = hook.p50_us / bare.p50_us;
    Row(absl::StrCat("interceptor round trip p50, ", hook.samples, " events",
                     note(hook)),
        absl::StrCat(Fixed(hook.p50_us, 0), " µs"),
        absl::StrCat(Fixed(bare.p50_us, 0), " µs"), Fixed(r50, 2),
        absl::StrCat("<= 1.3: ", Verdict(r50 <= 1.3 && note(hook).empty())));
    Row("interceptor round trip p99",
        absl::StrCat(Fixed(hook.p99_us, 0), " µs"),
        absl::StrCat(Fixed(bare.p99_us, 0), " µs"),
        Fixed(hook.p99_us / bare.p99_us, 2), "");
    Row(absl::StrCat("  same, bus without event log, p50 / p99", note(bus)),
        absl::StrCat(Fixed(bus.p50_us, 0), " / ", Fixed(bus.p99_us, 0), " µs"),
        absl::StrCat(Fixed(bare.p50_us, 0), " / ", Fixed(bare.p99_us, 0),
                     " µs"),
        absl::StrCat(Fixed(bus.p50_us / bare.p50_us, 2), " / ",
                     Fixed(bus.p99_us / bare.p99_us, 2)),
        "");
    Row("  Fire with no subscriber, p50 / p99",
        absl::StrCat(Fixed(none.p50_us, 1), " / ", Fixed(none.p99_us, 1),
                     " µs"),
        "", "", "");
  }

  if (parts.count("train")) {
    data::ShapesOptions shapes;
    shapes.train_images = static_cast<int>(images);
    shapes.val_images = 8;
    shapes.image_size = static_cast<int>(imgsz);
    const std::string data_dir = (dir / "shapes").string();
    absl::Status made = data::GenerateShapes(data_dir, shapes);
    if (!made.ok()) {
      std::fprintf(stderr, "remote_bench: %s\n",
                   std::string(made.message()).c_str());
      return 1;
    }
    const Args train_args = {{"data", data_dir + "/data.yaml"},
                             {"model", "yolov8n"},
                             {"epochs", "1"},
                             {"imgsz", absl::StrCat(imgsz)},
                             {"batch", absl::StrCat(batch)},
                             {"threads", absl::StrCat(threads)},
                             {"val", "false"},
                             {"plots", "false"},
                             {"verbose", "false"},
                             {"project", (dir / "runs").string()},
                             {"name", "epoch"},
                             {"exist_ok", "true"}};
    for (int64_t i = 0; i < warmup; ++i) {
      EpochRun w = TrainEpoch(**server, runner, train_args, Variant::kNone);
      if (!w.error.empty()) {
        std::fprintf(stderr, "remote_bench: training: %s\n", w.error.c_str());
        return 1;
      }
    }
    const std::vector<Variant> variants = {Variant::kNone, Variant::kObserver,
                                           Variant::kInterceptor};
    std::map<Variant, std::vector<double>> seconds;
    std::map<Variant, std::vector<double>> callback_ms;
    std::map<Variant, int64_t> epoch_events;
    int64_t batch_events = 0;
    size_t event_bytes = 0;
    for (int64_t round = 0; round < rounds; ++round) {
      for (size_t k = 0; k < variants.size(); ++k) {
        // Each round starts with the next variant, so none is always first.
        const Variant v =
            variants[(k + static_cast<size_t>(round)) % variants.size()];
        EpochRun r = TrainEpoch(**server, runner, train_args, v);
        if (!r.error.empty()) {
          std::fprintf(stderr, "remote_bench: training (%s): %s\n",
                       VariantName(v), r.error.c_str());
          return 1;
        }
        std::fprintf(stderr,
                     "round %lld: %s: epoch %.2f s, %.2f ms in callbacks\n",
                     static_cast<long long>(round + 1), VariantName(v),
                     r.seconds, 1e3 * r.callbacks_s);
        seconds[v].push_back(r.seconds);
        callback_ms[v].push_back(1e3 * r.callbacks_s);
        epoch_events[v] = r.epoch_events;
        if (v == Variant::kObserver) {
          batch_events = r.batch_events;
          event_bytes = r.event_bytes;
        }
      }
    }
    const double base = Median(seconds[Variant::kNone]);
    auto all = [](const std::vector<double>& v, int digits) {
      std::vector<std::string> out;
      for (double x : v) out.push_back(Fixed(x, digits));
      return absl::StrJoin(out, ", ");
    };
    Row(absl::StrCat("training epoch, no subscriber (", images,
                     " images, imgsz ", imgsz, ", batch ", batch, "; epochs ",
                     all(seconds[Variant::kNone], 2), " s)"),
        absl::StrCat(Fixed(base, 2), " s"), "", "1.000", "");
    for (Variant v : {Variant::kObserver, Variant::kInterceptor}) {
      const double s = Median(seconds[v]);
      const double ratio = s / base;
      std::string figure = absl::StrCat("training epoch, ", VariantName(v),
                                        " (epochs ", all(seconds[v], 2), " s");
      if (v == Variant::kObserver) {
        figure +=
            absl::StrCat("; ", batch_events, " on_train_batch_end events of ",
                         event_bytes, " bytes");
      }
      // A 1 % effect is only visible when the epochs themselves agree.
      const std::vector<double>& none = seconds[Variant::kNone];
      const double spread = (*std::max_element(none.begin(), none.end()) -
                             *std::min_element(none.begin(), none.end())) /
                            base;
      std::string goal;
      if (v == Variant::kObserver) {
        goal = spread > 0.01
                   ? absl::StrCat("< 1.01: not measurable (epochs vary by ",
                                  Fixed(100 * spread, 0), " %)")
                   : absl::StrCat("< 1.01: ", Verdict(ratio < 1.01));
      }
      Row(absl::StrCat(figure, ")"), absl::StrCat(Fixed(s, 2), " s"),
          absl::StrCat(Fixed(base, 2), " s"), Fixed(ratio, 3), goal);
    }
    for (Variant v : variants) {
      const double ms = Median(callback_ms[v]);
      Row(absl::StrCat("  time in the job's callbacks per epoch, ",
                       VariantName(v), " (", epoch_events[v], " events; ",
                       all(callback_ms[v], 1), " ms)"),
          absl::StrCat(Fixed(ms, 1), " ms"), absl::StrCat(Fixed(base, 2), " s"),
          absl::StrCat(Fixed(100 * ms / 1e3 / base, 3), " %"), "");
    }
  }

  nolog_bus.Shutdown();
  nolog_server->Shutdown(std::chrono::system_clock::now() +
                         std::chrono::seconds(1));
  (*server)->Shutdown(absl::Seconds(1));
  baseline_server->Shutdown(std::chrono::system_clock::now() +
                            std::chrono::seconds(1));
  server->reset();
  std::error_code ec;
  fs::remove_all(dir, ec);

  std::printf(
      "\non_train_batch_end event: %d bytes serialized; the bare payloads "
      "carry as many bytes\n\n",
      bytes);
  std::printf("| figure | yolohook | bare gRPC | ratio | goal |\n");
  std::printf("|---|---|---|---|---|\n");
  for (const std::string& row : Table()) std::printf("%s\n", row.c_str());
  return 0;
}

}  // namespace
}  // namespace yolohook::bench

int main(int argc, char** argv) {
  yolohook::bench::Args args;
  for (int i = 1; i < argc; ++i) {
    std::pair<std::string, std::string> kv =
        absl::StrSplit(argv[i], absl::MaxSplits('=', 1));
    if (kv.second.empty()) {
      std::fprintf(stderr, "remote_bench: expected key=value, got \"%s\"\n",
                   argv[i]);
      return 2;
    }
    args[kv.first] = kv.second;
  }
  return yolohook::bench::Main(args);
}
