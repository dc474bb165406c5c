#include "server/monitoring/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <thread>
#include <vector>

namespace yolohook::monitoring {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(MetricsRegistryTest, RendersASmallRegistryInTheTextFormat) {
  Registry registry;
  Counter& events = registry.AddCounter("app_events_total", "Events seen.");
  Family<Counter>& jobs =
      registry.AddCounterFamily("app_jobs_total", "Jobs by mode.", {"mode"});
  Gauge& temperature = registry.AddGauge("app_temperature", "Degrees.");
  Histogram& latency = registry.AddHistogram("app_latency_seconds",
                                             "Request latency.", {0.1, 1});
  registry.AddCollector("app_queue", "Queued items.", MetricType::kGauge,
                        {"queue"}, [] {
                          return std::vector<Sample>{{{"b"}, 2}, {{"a"}, 1.5}};
                        });
  events.Increment();
  events.Increment(2);
  jobs.With({"val"}).Increment();
  jobs.With({"train"}).Increment(3);
  temperature.Set(-2.5);
  latency.Observe(0.05);
  latency.Observe(0.1);  // le is inclusive
  latency.Observe(0.5);
  latency.Observe(7);

  EXPECT_EQ(registry.Render(),
            "# HELP app_events_total Events seen.\n"
            "# TYPE app_events_total counter\n"
            "app_events_total 3\n"
            "# HELP app_jobs_total Jobs by mode.\n"
            "# TYPE app_jobs_total counter\n"
            "app_jobs_total{mode=\"train\"} 3\n"
            "app_jobs_total{mode=\"val\"} 1\n"
            "# HELP app_temperature Degrees.\n"
            "# TYPE app_temperature gauge\n"
            "app_temperature -2.5\n"
            "# HELP app_latency_seconds Request latency.\n"
            "# TYPE app_latency_seconds histogram\n"
            "app_latency_seconds_bucket{le=\"0.1\"} 2\n"
            "app_latency_seconds_bucket{le=\"1\"} 3\n"
            "app_latency_seconds_bucket{le=\"+Inf\"} 4\n"
            "app_latency_seconds_sum 7.65\n"
            "app_latency_seconds_count 4\n"
            "# HELP app_queue Queued items.\n"
            "# TYPE app_queue gauge\n"
            "app_queue{queue=\"a\"} 1.5\n"
            "app_queue{queue=\"b\"} 2\n");
}

TEST(MetricsRegistryTest, EscapesLabelValuesAndHelp) {
  Registry registry;
  registry.AddCounterFamily("x_total", "Line one\nback\\slash", {"path"})
      .With({"a\"b\\c\nd"})
      .Increment();
  EXPECT_EQ(registry.Render(),
            "# HELP x_total Line one\\nback\\\\slash\n"
            "# TYPE x_total counter\n"
            "x_total{path=\"a\\\"b\\\\c\\nd\"} 1\n");
}

TEST(MetricsRegistryTest, LabelledHistogramsPutLeLast) {
  Registry registry;
  Family<Histogram>& rtt =
      registry.AddHistogramFamily("rtt_seconds", "RTT.", {"rpc"}, {0.5});
  rtt.With({"Predict"}).Observe(0.25);
  rtt.With({"Predict"}).Observe(std::numeric_limits<double>::quiet_NaN());
  EXPECT_EQ(registry.Render(),
            "# HELP rtt_seconds RTT.\n"
            "# TYPE rtt_seconds histogram\n"
            "rtt_seconds_bucket{rpc=\"Predict\",le=\"0.5\"} 1\n"
            "rtt_seconds_bucket{rpc=\"Predict\",le=\"+Inf\"} 1\n"
            "rtt_seconds_sum{rpc=\"Predict\"} 0.25\n"
            "rtt_seconds_count{rpc=\"Predict\"} 1\n");
}

TEST(MetricsRegistryTest, HistogramBucketsAreCumulativeAndBoundsCleaned) {
  Histogram histogram({1, 0.5, 2, std::numeric_limits<double>::infinity(), 4});
  EXPECT_EQ(histogram.bounds(), (std::vector<double>{1, 2, 4}));
  for (double v : {0.0, 1.0, 1.5, 3.0, 100.0}) histogram.Observe(v);
  Histogram::Snapshot s = histogram.snapshot();
  EXPECT_EQ(s.cumulative, (std::vector<int64_t>{2, 3, 4, 5}));
  EXPECT_EQ(s.count, 5);
  EXPECT_DOUBLE_EQ(s.sum, 105.5);
}

TEST(MetricsRegistryTest, InvalidAndDuplicateNamesAreReportedNotExported) {
  Registry registry;
  registry.AddCounter("ok_total", "Fine.").Increment();
  registry.AddCounter("ok_total", "Again.").Increment();
  registry.AddCounter("0bad", "Bad name.").Increment();
  registry.AddCounterFamily("bad_label_total", "Bad label.", {"__x"});
  registry.AddHistogramFamily("h", "Reserved.", {"le"}, {1});
  std::string text = registry.Render();
  EXPECT_THAT(text, HasSubstr("# not exported: \"ok_total\" is already "
                              "registered\n"));
  EXPECT_THAT(text, HasSubstr("# not exported: \"0bad\" is not a valid"));
  EXPECT_THAT(text, HasSubstr("\"bad_label_total\" has an invalid label"));
  EXPECT_THAT(text, HasSubstr("\"h\" uses the label \"le\""));
  EXPECT_THAT(text, HasSubstr("ok_total 1\n"));
  EXPECT_THAT(text, Not(HasSubstr("Again.")));
  EXPECT_THAT(text, Not(HasSubstr("\n0bad")));
}

TEST(MetricsRegistryTest, FamiliesWithNoChildrenRenderOnlyTheirHeader) {
  Registry registry;
  registry.AddCounterFamily("idle_total", "Nothing yet.", {"a"});
  EXPECT_EQ(registry.Render(),
            "# HELP idle_total Nothing yet.\n# TYPE idle_total counter\n");
}

TEST(MetricsRegistryTest, MissingLabelValuesAreEmpty) {
  Registry registry;
  registry.AddCounterFamily("two_total", "Two labels.", {"a", "b"})
      .With({"x"})
      .Increment();
  EXPECT_THAT(registry.Render(), HasSubstr("two_total{a=\"x\",b=\"\"} 1\n"));
}

TEST(MetricsRegistryTest, ConcurrentUpdatesAreAllCounted) {
  Registry registry;
  Counter& counter = registry.AddCounter("c_total", "C.");
  Gauge& gauge = registry.AddGauge("g", "G.");
  Histogram& histogram = registry.AddHistogram("h", "H.", {1});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        counter.Increment();
        gauge.Add(1);
        histogram.Observe(0.5);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(counter.value(), 40000);
  EXPECT_EQ(gauge.value(), 40000);
  EXPECT_EQ(histogram.snapshot().count, 40000);
  EXPECT_EQ(histogram.snapshot().sum, 20000);
}

TEST(MetricsFormatTest, ValuesUseTheShortestExactText) {
  EXPECT_EQ(FormatValue(0.1), "0.1");
  EXPECT_EQ(FormatValue(3), "3");
  EXPECT_EQ(FormatValue(1e-7), "1e-07");
  EXPECT_EQ(FormatValue(0.0005), "0.0005");  // not 5e-04: le labels match
  EXPECT_EQ(FormatValue(1795822966.25), "1.79582296625e+09");  // as Go
  EXPECT_EQ(FormatValue(1e21), "1e+21");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::quiet_NaN()), "NaN");
}

}  // namespace
}  // namespace yolohook::monitoring
