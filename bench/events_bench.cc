// events_bench: the event bus's publish throughput with 0, 1 and 64 observers
// drained on another thread, and one interceptor round trip answered by
// another thread.
#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "benchmark/benchmark.h"
#include "google/protobuf/arena.h"
#include "server/events/event_bus.h"
#include "server/wire/conversions.h"

namespace yolohook::events {
namespace {

// Streams drained by one thread, woken by on_ready.
class Drainer {
 public:
  Drainer(EventBus& bus, int streams, bool intercept) {
    for (int i = 0; i < streams; ++i) {
      streams_.push_back(bus.Connect([this] {
        absl::MutexLock lock(&mu_);
        ++ready_;
      }));
      v1::Subscribe s;
      s.set_subscription_id("s" + std::to_string(i));
      if (intercept) {
        s.set_mode(v1::SUBSCRIPTION_MODE_INTERCEPT);
        s.mutable_reply_timeout()->set_seconds(10);
      }
      if (!streams_.back()->Subscribe(s).ok()) std::abort();
    }
    thread_ = std::thread([this] { Run(); });
  }

  ~Drainer() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    thread_.join();
    streams_.clear();
  }

  int64_t received() const { return received_.load(); }

 private:
  void Run() {
    while (true) {
      int before;
      {
        absl::MutexLock lock(&mu_);
        if (stop_) return;
        before = ready_;
      }
      bool any = false;
      for (const auto& stream : streams_) {
        while (auto out = stream->Next()) {
          any = true;
          if (out->kind == events::Outgoing::Kind::kEvent) {
            received_.fetch_add(1, std::memory_order_relaxed);
            // Only events built for one interceptor are whole messages; an
            // observer's are parsed no more than a transport would.
            if (!out->head.empty()) continue;
            const v1::ServerMessage parsed = out->Parse();
            const v1::ServerMessage* m = &parsed;
            if (m->event().reply_required()) {
              v1::Reply reply;
              reply.set_subscription_id(m->event().subscription_id());
              reply.set_job_id(m->event().job_id());
              reply.set_seq(m->event().seq());
              stream->Reply(reply);
            }
          }
        }
      }
      if (!any) {
        absl::MutexLock lock(&mu_);
        auto woken = [this, before]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return ready_ > before || stop_;
        };
        mu_.AwaitWithTimeout(absl::Condition(&woken), absl::Milliseconds(50));
      }
    }
  }

  absl::Mutex mu_;
  int ready_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<int64_t> received_{0};
  std::vector<std::shared_ptr<Stream>> streams_;
  std::thread thread_;
};

TrainerState SampleTrainer() {
  TrainerState s;
  s.epochs = 100;
  s.num_batches = 50;
  s.loss_items = {1.0, 2.0, 3.0};
  s.tloss = {1.0, 2.0, 3.0};
  s.loss_names = {"box_loss", "cls_loss", "dfl_loss"};
  s.lr = {{"lr/pg0", 0.01}, {"lr/pg1", 0.01}, {"lr/pg2", 0.01}};
  s.names = {"circle", "square", "triangle"};
  return s;
}

void BM_Publish(benchmark::State& state) {
  EventBus::Options options;
  options.queue_limit = size_t{1} << 24;  // measure copying, not lagging
  EventBus bus(options);
  bus.StartJob("job", {}, {{"epochs", "100"}, {"imgsz", "64"}});
  TrainerState trainer = SampleTrainer();
  EventContext ctx;
  ctx.event = Event::kOnTrainBatchEnd;
  ctx.trainer = &trainer;
  {
    Drainer drainer(bus, static_cast<int>(state.range(0)), /*intercept=*/false);
    for (auto _ : state) {
      ++trainer.iteration;
      benchmark::DoNotOptimize(bus.Publish("job", ctx));
    }
    state.SetItemsProcessed(state.iterations());
  }
  state.counters["queued"] = static_cast<double>(bus.stats().messages_queued);
}
BENCHMARK(BM_Publish)->Arg(0)->Arg(1)->Arg(64)->UseRealTime();

// The per-subscription cost of an observer delivery: copying the shared event
// into a ServerMessage that carries the subscription id.
void BM_CopyEventForSubscription(benchmark::State& state) {
  TrainerState trainer = SampleTrainer();
  EventContext ctx;
  ctx.event = Event::kOnTrainBatchEnd;
  ctx.trainer = &trainer;
  const v1::Event event =
      wire::ToWire("job", 1, absl::Now(), ctx, {{"epochs", "100"}}, nullptr);
  for (auto _ : state) {
    auto message = std::make_shared<v1::ServerMessage>();
    *message->mutable_event() = event;
    message->mutable_event()->set_subscription_id("subscription");
    benchmark::DoNotOptimize(message);
  }
  state.counters["event_bytes"] = static_cast<double>(event.ByteSizeLong());
}
BENCHMARK(BM_CopyEventForSubscription);

// The same copy on an arena sized from the event (what the bus does).
void BM_CopyEventForSubscriptionOnArena(benchmark::State& state) {
  TrainerState trainer = SampleTrainer();
  EventContext ctx;
  ctx.event = Event::kOnTrainBatchEnd;
  ctx.trainer = &trainer;
  const v1::Event event =
      wire::ToWire("job", 1, absl::Now(), ctx, {{"epochs", "100"}}, nullptr);
  for (auto _ : state) {
    google::protobuf::ArenaOptions options;
    options.start_block_size = std::max<size_t>(1024, 4 * event.ByteSizeLong());
    auto arena = std::make_shared<google::protobuf::Arena>(options);
    auto* message =
        google::protobuf::Arena::CreateMessage<v1::ServerMessage>(arena.get());
    *message->mutable_event() = event;
    message->mutable_event()->set_subscription_id("subscription");
    std::shared_ptr<const v1::ServerMessage> shared(std::move(arena), message);
    benchmark::DoNotOptimize(shared);
  }
}
BENCHMARK(BM_CopyEventForSubscriptionOnArena);

void BM_InterceptorRoundTrip(benchmark::State& state) {
  EventBus bus(EventBus::Options{});
  bus.StartJob("job", {}, {});
  TrainerState trainer = SampleTrainer();
  EventContext ctx;
  ctx.event = Event::kOnTrainBatchEnd;
  ctx.trainer = &trainer;
  Drainer drainer(bus, 1, /*intercept=*/true);
  for (auto _ : state) benchmark::DoNotOptimize(bus.Publish("job", ctx));
  state.SetItemsProcessed(state.iterations());
  state.counters["applied"] = static_cast<double>(bus.stats().replies_applied);
  state.counters["timeouts"] = static_cast<double>(bus.stats().reply_timeouts);
}
BENCHMARK(BM_InterceptorRoundTrip)->UseRealTime();

}  // namespace
}  // namespace yolohook::events

BENCHMARK_MAIN();
