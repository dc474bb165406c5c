// Metrics in Prometheus' text exposition format (version 0.0.4): counters,
// gauges and histograms, with or without labels, and collectors that read
// values kept elsewhere (e.g. the event bus's counters) at scrape time. No
// gRPC, no torch: the service layer serves Registry::Render over HTTP.
//
//   monitoring::Registry registry;
//   auto& submitted = registry.AddCounterFamily(
//       "yolohook_jobs_submitted_total", "Jobs accepted.", {"mode"});
//   monitoring::Counter& train = submitted.With({"train"});  // keep this
//   train.Increment();                                        // atomic add
//
// Updates are lock-free (relaxed atomics): look a labelled child up once
// (Family::With locks) and keep the reference, which lives as long as the
// registry. Rendering reads every value without stopping writers, so a
// histogram's buckets, sum and count may be a few observations apart.
#ifndef YOLOHOOK_SERVER_MONITORING_METRICS_H_
#define YOLOHOOK_SERVER_MONITORING_METRICS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace yolohook::monitoring {

// A value that only goes up. Thread-safe.
class Counter {
 public:
  // Adds `n` (negative n are ignored: counters never go down).
  void Increment(int64_t n = 1) {
    if (n > 0) value_.fetch_add(n, std::memory_order_relaxed);
  }
  int64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> value_{0};
};

// A value that goes up and down. Thread-safe.
class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Add(double delta);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Observations counted into buckets by upper bound (Prometheus' `le`), with
// their sum. Thread-safe.
class Histogram {
 public:
  // `bounds`: finite upper bounds, strictly increasing (others are dropped);
  // +Inf is implied.
  explicit Histogram(std::vector<double> bounds);

  // Counts `value` in the first bucket whose bound is >= value. NaN is
  // ignored.
  void Observe(double value);

  struct Snapshot {
    // as given, without +Inf
    std::vector<double> bounds;
    // per bound, then +Inf (= count)
    std::vector<int64_t> cumulative;
    double sum = 0;
    int64_t count = 0;
  };
  Snapshot snapshot() const;
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  std::vector<double> bounds_;
  // bounds_.size() + 1
  std::unique_ptr<std::atomic<int64_t>[]> buckets_;
  std::atomic<double> sum_{0};
};

// Bucket bounds start, start * factor, ... (`count` of them).
std::vector<double> ExponentialBuckets(double start, double factor, int count);
// Latencies from 0.5 ms to 10 s.
std::vector<double> LatencyBuckets();

// Children of one metric, one per combination of label values. Thread-safe.
template <typename Metric>
class Family {
 public:
  // The child for `values`, one per label name in order (missing values are
  // "", extra ones dropped); created on first use and kept for the life of
  // the registry. Locks: look up once, then keep the reference.
  Metric& With(const std::vector<std::string>& values) ABSL_LOCKS_EXCLUDED(mu_);

  const std::vector<std::string>& label_names() const { return label_names_; }

  // Every child with its label values, in label-value order.
  std::vector<std::pair<std::vector<std::string>, const Metric*>> Children()
      const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  friend class Registry;
  Family(std::vector<std::string> label_names,
         std::function<std::unique_ptr<Metric>()> make)
      : label_names_(std::move(label_names)), make_(std::move(make)) {}

  const std::vector<std::string> label_names_;
  const std::function<std::unique_ptr<Metric>()> make_;
  mutable absl::Mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Metric>> children_
      ABSL_GUARDED_BY(mu_);
};

// The kinds of metric, as TYPE lines name them.
enum class MetricType { kCounter, kGauge, kHistogram };

// One value a collector reports: its label values (in the collector's label
// name order) and the value.
struct Sample {
  std::vector<std::string> label_values;
  double value = 0;
};

// The metrics of one process, rendered in registration order. Thread-safe.
//
// Names must be valid Prometheus names ([a-zA-Z_:][a-zA-Z0-9_:]*; label
// names [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__") and unique: a family
// registered under an invalid or already used name is still returned, so the
// caller can use it, but is never rendered, and Render reports it in a
// comment. Help text is free text (escaped when rendered).
class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  Counter& AddCounter(const std::string& name, const std::string& help);
  Family<Counter>& AddCounterFamily(const std::string& name,
                                    const std::string& help,
                                    std::vector<std::string> label_names);
  Gauge& AddGauge(const std::string& name, const std::string& help);
  Family<Gauge>& AddGaugeFamily(const std::string& name,
                                const std::string& help,
                                std::vector<std::string> label_names);
  Histogram& AddHistogram(const std::string& name, const std::string& help,
                          std::vector<double> bounds);
  Family<Histogram>& AddHistogramFamily(const std::string& name,
                                        const std::string& help,
                                        std::vector<std::string> label_names,
                                        std::vector<double> bounds);

  // A counter or gauge whose samples `collect` reports at each Render, for
  // values another component already keeps. `collect` runs on the rendering
  // thread, without registry locks; it must be thread-safe and must not call
  // back into the registry.
  void AddCollector(const std::string& name, const std::string& help,
                    MetricType type, std::vector<std::string> label_names,
                    std::function<std::vector<Sample>()> collect);

  // Every metric in the text exposition format 0.0.4 (serve it with
  // kContentType).
  std::string Render() const ABSL_LOCKS_EXCLUDED(mu_);

  static constexpr absl::string_view kContentType =
      "text/plain; version=0.0.4; charset=utf-8";

 private:
  struct Entry;
  // Records the family's metadata for Render; an invalid or taken name is
  // kept out and reported in a comment instead.
  void Register(std::unique_ptr<Entry> entry) ABSL_LOCKS_EXCLUDED(mu_);

  mutable absl::Mutex mu_;
  std::vector<std::shared_ptr<const Entry>> entries_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> problems_ ABSL_GUARDED_BY(mu_);
  // Families owned here; entries point into them.
  std::vector<std::unique_ptr<Family<Counter>>> counters_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Family<Gauge>>> gauges_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Family<Histogram>>> histograms_
      ABSL_GUARDED_BY(mu_);
};

// Formats a sample value as the exposition format wants it, as Prometheus'
// Go client does: %g style with the fewest digits that read back as the same
// double ("0.0005", "12", "1e-07", "1.5e+09"); "+Inf", "-Inf", "NaN".
std::string FormatValue(double value);
// Escapes a label value (backslash, double quote, newline).
std::string EscapeLabelValue(absl::string_view value);

// --- Family template members. ---

template <typename Metric>
Metric& Family<Metric>::With(const std::vector<std::string>& values) {
  std::vector<std::string> key = values;
  key.resize(label_names_.size());
  absl::MutexLock lock(&mu_);
  std::unique_ptr<Metric>& child = children_[key];
  if (child == nullptr) child = make_();
  return *child;
}

template <typename Metric>
std::vector<std::pair<std::vector<std::string>, const Metric*>>
Family<Metric>::Children() const {
  std::vector<std::pair<std::vector<std::string>, const Metric*>> out;
  absl::MutexLock lock(&mu_);
  out.reserve(children_.size());
  for (const auto& [values, child] : children_) {
    out.emplace_back(values, child.get());
  }
  return out;
}

}  // namespace yolohook::monitoring

#endif  // YOLOHOOK_SERVER_MONITORING_METRICS_H_
