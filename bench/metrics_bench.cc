// metrics_bench: what recording a metric costs on the hot path (a counter
// increment, a histogram observation, from one thread and from two at once),
// what looking a labelled child up costs, and rendering a registry the size
// of yolohookd's.
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "server/monitoring/metrics.h"

namespace yolohook::monitoring {
namespace {

Registry& Shared() {
  static Registry* registry = new Registry();
  return *registry;
}

void BM_CounterIncrement(benchmark::State& state) {
  static Counter& counter =
      Shared().AddCounter("bench_counter_total", "Bench counter.");
  for (auto _ : state) counter.Increment();
  benchmark::DoNotOptimize(counter.value());
}
BENCHMARK(BM_CounterIncrement)->Threads(1)->Threads(2)->UseRealTime();

void BM_HistogramObserve(benchmark::State& state) {
  static Histogram& histogram = Shared().AddHistogram(
      "bench_latency_seconds", "Bench histogram.", LatencyBuckets());
  double value = 0.0001;
  for (auto _ : state) {
    histogram.Observe(value);
    value = value < 20 ? value * 1.5 : 0.0001;  // every bucket in turn
  }
}
BENCHMARK(BM_HistogramObserve)->Threads(1)->Threads(2)->UseRealTime();

void BM_GaugeSet(benchmark::State& state) {
  static Gauge& gauge = Shared().AddGauge("bench_gauge", "Bench gauge.");
  double value = 0;
  for (auto _ : state) gauge.Set(value += 1);
}
BENCHMARK(BM_GaugeSet);

// What a caller pays when it does not keep the child (locks the family).
void BM_FamilyWithThenIncrement(benchmark::State& state) {
  static Family<Counter>& family = Shared().AddCounterFamily(
      "bench_labelled_total", "Bench family.", {"mode"});
  const std::vector<std::string> labels = {"train"};
  for (auto _ : state) family.With(labels).Increment();
}
BENCHMARK(BM_FamilyWithThenIncrement);

// A registry shaped like yolohookd's: a dozen families, two histograms.
void BM_Render(benchmark::State& state) {
  Registry registry;
  for (int i = 0; i < 10; ++i) {
    registry.AddCounter("bench_render_" + std::to_string(i) + "_total", "C.")
        .Increment(i);
  }
  Family<Counter>& jobs =
      registry.AddCounterFamily("bench_jobs_total", "J.", {"task", "mode"});
  for (const char* mode : {"train", "val", "predict", "export"}) {
    jobs.With({"detect", mode}).Increment();
  }
  Family<Histogram>& latency = registry.AddHistogramFamily(
      "bench_latency_seconds", "L.", {"rpc"}, LatencyBuckets());
  latency.With({"Predict"}).Observe(0.01);
  latency.With({"PredictStream"}).Observe(0.02);
  size_t bytes = 0;
  for (auto _ : state) bytes = registry.Render().size();
  state.counters["bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_Render);

}  // namespace
}  // namespace yolohook::monitoring

BENCHMARK_MAIN();
