#include "server/monitoring/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace yolohook::monitoring {
namespace {

bool ValidMetricName(absl::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(name[i]);
    const bool ok = absl::ascii_isalpha(c) || c == '_' || c == ':' ||
                    (i > 0 && absl::ascii_isdigit(c));
    if (!ok) return false;
  }
  return true;
}

bool ValidLabelName(absl::string_view name) {
  if (name.empty() || absl::StartsWith(name, "__")) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(name[i]);
    const bool ok =
        absl::ascii_isalpha(c) || c == '_' || (i > 0 && absl::ascii_isdigit(c));
    if (!ok) return false;
  }
  return true;
}

std::string EscapeHelp(absl::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// `{a="x",b="y"}` (with `extra`, e.g. le="0.5", last); "" without labels.
std::string LabelSet(const std::vector<std::string>& names,
                     const std::vector<std::string>& values,
                     absl::string_view extra_name = "",
                     absl::string_view extra_value = "") {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    absl::StrAppend(&out, out.empty() ? "{" : ",", names[i], "=\"",
                    EscapeLabelValue(i < values.size() ? values[i] : ""), "\"");
  }
  if (!extra_name.empty()) {
    absl::StrAppend(&out, out.empty() ? "{" : ",", extra_name, "=\"",
                    EscapeLabelValue(extra_value), "\"");
  }
  if (!out.empty()) out += "}";
  return out;
}

absl::string_view TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

void AddAtomic(std::atomic<double>& target, double delta) {
  double current = target.load(std::memory_order_relaxed);
  while (!target.compare_exchange_weak(current, current + delta,
                                       std::memory_order_relaxed)) {
  }
}

}  // namespace

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buffer[64];
  // %g-style (as Go's client writes bucket bounds, so le="0.0005" matches
  // across exporters), with the fewest digits that read back exactly.
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof(buffer), value,
                                 std::chars_format::general);
  if (ec != std::errc()) return absl::StrCat(value);
  return std::string(buffer, end);
}

std::string EscapeLabelValue(absl::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void Gauge::Add(double delta) { AddAtomic(value_, delta); }

Histogram::Histogram(std::vector<double> bounds) {
  for (double bound : bounds) {
    if (std::isfinite(bound) && (bounds_.empty() || bound > bounds_.back())) {
      bounds_.push_back(bound);
    }
  }
  buckets_ = std::make_unique<std::atomic<int64_t>[]>(bounds_.size() + 1);
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i] = 0;
}

void Histogram::Observe(double value) {
  if (std::isnan(value)) return;
  const size_t bucket = static_cast<size_t>(
      std::lower_bound(bounds_.begin(), bounds_.end(), value) -
      bounds_.begin());
  buckets_[bucket].fetch_add(1, std::memory_order_relaxed);
  AddAtomic(sum_, value);
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot snapshot;
  snapshot.bounds = bounds_;
  snapshot.cumulative.reserve(bounds_.size() + 1);
  int64_t total = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    total += buckets_[i].load(std::memory_order_relaxed);
    snapshot.cumulative.push_back(total);
  }
  snapshot.count = total;
  snapshot.sum = sum_.load(std::memory_order_relaxed);
  return snapshot;
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> bounds;
  double bound = start;
  for (int i = 0; i < count; ++i) {
    bounds.push_back(bound);
    bound *= factor;
  }
  return bounds;
}

std::vector<double> LatencyBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
          0.1,    0.25,  0.5,    1,     2.5,  5,     10};
}

struct Registry::Entry {
  std::string name;
  std::string help;
  MetricType type = MetricType::kCounter;
  std::vector<std::string> label_names;
  // Exactly one of these.
  const Family<Counter>* counters = nullptr;
  const Family<Gauge>* gauges = nullptr;
  const Family<Histogram>* histograms = nullptr;
  std::function<std::vector<Sample>()> collect;
};

void Registry::Register(std::unique_ptr<Entry> entry) {
  absl::MutexLock lock(&mu_);
  std::string problem;
  if (!ValidMetricName(entry->name)) {
    problem = "is not a valid metric name";
  }
  std::set<std::string> seen;
  for (const std::string& label : entry->label_names) {
    if (problem.empty() && !ValidLabelName(label)) {
      problem = absl::StrCat("has an invalid label name \"",
                             EscapeLabelValue(label), "\"");
    }
    if (problem.empty() && entry->type == MetricType::kHistogram &&
        label == "le") {
      problem = "uses the label \"le\", which histograms reserve";
    }
    if (problem.empty() && !seen.insert(label).second) {
      problem = absl::StrCat("repeats the label \"", label, "\"");
    }
  }
  for (const auto& other : entries_) {
    if (problem.empty() && other->name == entry->name) {
      problem = "is already registered";
    }
  }
  if (!problem.empty()) {
    std::string name = entry->name;
    for (char& c : name) {
      if (c == '\n') c = ' ';
    }
    problems_.push_back(absl::StrCat("\"", name, "\" ", problem));
    return;
  }
  entries_.push_back(std::move(entry));
}

Counter& Registry::AddCounter(const std::string& name,
                              const std::string& help) {
  return AddCounterFamily(name, help, {}).With({});
}

Family<Counter>& Registry::AddCounterFamily(
    const std::string& name, const std::string& help,
    std::vector<std::string> label_names) {
  auto family = std::unique_ptr<Family<Counter>>(new Family<Counter>(
      label_names, [] { return std::make_unique<Counter>(); }));
  auto entry = std::make_unique<Entry>();
  entry->name = name;
  entry->help = help;
  entry->type = MetricType::kCounter;
  entry->label_names = std::move(label_names);
  entry->counters = family.get();
  Family<Counter>* raw = family.get();
  {
    absl::MutexLock lock(&mu_);
    counters_.push_back(std::move(family));
  }
  Register(std::move(entry));
  return *raw;
}

Gauge& Registry::AddGauge(const std::string& name, const std::string& help) {
  return AddGaugeFamily(name, help, {}).With({});
}

Family<Gauge>& Registry::AddGaugeFamily(const std::string& name,
                                        const std::string& help,
                                        std::vector<std::string> label_names) {
  auto family = std::unique_ptr<Family<Gauge>>(
      new Family<Gauge>(label_names, [] { return std::make_unique<Gauge>(); }));
  auto entry = std::make_unique<Entry>();
  entry->name = name;
  entry->help = help;
  entry->type = MetricType::kGauge;
  entry->label_names = std::move(label_names);
  entry->gauges = family.get();
  Family<Gauge>* raw = family.get();
  {
    absl::MutexLock lock(&mu_);
    gauges_.push_back(std::move(family));
  }
  Register(std::move(entry));
  return *raw;
}

Histogram& Registry::AddHistogram(const std::string& name,
                                  const std::string& help,
                                  std::vector<double> bounds) {
  return AddHistogramFamily(name, help, {}, std::move(bounds)).With({});
}

Family<Histogram>& Registry::AddHistogramFamily(
    const std::string& name, const std::string& help,
    std::vector<std::string> label_names, std::vector<double> bounds) {
  auto family = std::unique_ptr<Family<Histogram>>(
      new Family<Histogram>(label_names, [bounds = std::move(bounds)] {
        return std::make_unique<Histogram>(bounds);
      }));
  auto entry = std::make_unique<Entry>();
  entry->name = name;
  entry->help = help;
  entry->type = MetricType::kHistogram;
  entry->label_names = std::move(label_names);
  entry->histograms = family.get();
  Family<Histogram>* raw = family.get();
  {
    absl::MutexLock lock(&mu_);
    histograms_.push_back(std::move(family));
  }
  Register(std::move(entry));
  return *raw;
}

void Registry::AddCollector(const std::string& name, const std::string& help,
                            MetricType type,
                            std::vector<std::string> label_names,
                            std::function<std::vector<Sample>()> collect) {
  auto entry = std::make_unique<Entry>();
  entry->name = name;
  entry->help = help;
  // Collectors report plain values: a histogram collector renders as a gauge.
  entry->type = type == MetricType::kHistogram ? MetricType::kGauge : type;
  entry->label_names = std::move(label_names);
  entry->collect = std::move(collect);
  Register(std::move(entry));
}

std::string Registry::Render() const {
  std::vector<std::shared_ptr<const Entry>> entries;
  std::vector<std::string> problems;
  {
    absl::MutexLock lock(&mu_);
    entries = entries_;
    problems = problems_;
  }
  std::string out;
  for (const std::string& problem : problems) {
    absl::StrAppend(&out, "# not exported: ", problem, "\n");
  }
  for (const auto& entry : entries) {
    const std::string& name = entry->name;
    const std::vector<std::string>& labels = entry->label_names;
    absl::StrAppend(&out, "# HELP ", name, " ", EscapeHelp(entry->help), "\n",
                    "# TYPE ", name, " ", TypeName(entry->type), "\n");
    if (entry->counters != nullptr) {
      for (const auto& [values, counter] : entry->counters->Children()) {
        absl::StrAppend(&out, name, LabelSet(labels, values), " ",
                        counter->value(), "\n");
      }
    } else if (entry->gauges != nullptr) {
      for (const auto& [values, gauge] : entry->gauges->Children()) {
        absl::StrAppend(&out, name, LabelSet(labels, values), " ",
                        FormatValue(gauge->value()), "\n");
      }
    } else if (entry->histograms != nullptr) {
      for (const auto& [values, histogram] : entry->histograms->Children()) {
        Histogram::Snapshot s = histogram->snapshot();
        for (size_t i = 0; i < s.bounds.size(); ++i) {
          absl::StrAppend(
              &out, name, "_bucket",
              LabelSet(labels, values, "le", FormatValue(s.bounds[i])), " ",
              s.cumulative[i], "\n");
        }
        absl::StrAppend(&out, name, "_bucket",
                        LabelSet(labels, values, "le", "+Inf"), " ", s.count,
                        "\n", name, "_sum", LabelSet(labels, values), " ",
                        FormatValue(s.sum), "\n", name, "_count",
                        LabelSet(labels, values), " ", s.count, "\n");
      }
    } else if (entry->collect) {
      std::vector<Sample> samples = entry->collect();
      std::sort(samples.begin(), samples.end(),
                [](const Sample& a, const Sample& b) {
                  return a.label_values < b.label_values;
                });
      for (const Sample& sample : samples) {
        absl::StrAppend(&out, name, LabelSet(labels, sample.label_values), " ",
                        FormatValue(sample.value), "\n");
      }
    }
  }
  return out;
}

}  // namespace yolohook::monitoring
