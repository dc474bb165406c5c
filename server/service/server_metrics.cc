#include "server/service/server_metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "server/engine/version.h"

namespace yolohook::service {
namespace {

using monitoring::MetricType;
using monitoring::Sample;

constexpr Mode kModes[] = {Mode::kTrain, Mode::kVal, Mode::kPredict,
                           Mode::kExport};

// Process figures Prometheus' client libraries export under these names;
// read from /proc and getrusage at each scrape (a few microseconds).
void AddProcessCollectors(monitoring::Registry& registry) {
  registry.AddCollector(
      "process_cpu_seconds_total", "User and system CPU time spent, seconds.",
      MetricType::kCounter, {}, [] {
        rusage usage{};
        getrusage(RUSAGE_SELF, &usage);
        const double seconds =
            static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
            static_cast<double>(usage.ru_utime.tv_usec +
                                usage.ru_stime.tv_usec) /
                1e6;
        return std::vector<Sample>{{{}, seconds}};
      });
  registry.AddCollector("process_resident_memory_bytes",
                        "Resident memory, bytes.", MetricType::kGauge, {}, [] {
                          std::ifstream statm("/proc/self/statm");
                          long pages = 0;
                          long resident = 0;
                          statm >> pages >> resident;
                          return std::vector<Sample>{
                              {{},
                               static_cast<double>(resident) *
                                   static_cast<double>(sysconf(_SC_PAGESIZE))}};
                        });
  registry.AddCollector(
      "process_open_fds", "Open file descriptors.", MetricType::kGauge, {}, [] {
        std::error_code ec;
        double count = 0;
        for (std::filesystem::directory_iterator it("/proc/self/fd", ec), end;
             !ec && it != end; it.increment(ec)) {
          ++count;
        }
        return std::vector<Sample>{{{}, count}};
      });
}

}  // namespace

ServerMetrics::ServerMetrics(monitoring::Registry& registry)
    : registry_(registry) {
  registry
      .AddGaugeFamily("yolohook_build_info",
                      "Always 1; the version label says which build runs.",
                      {"version"})
      .With({kVersion})
      .Set(1);
  registry
      .AddGauge("yolohook_start_time_seconds",
                "When the server started, seconds since the Unix epoch.")
      .Set(absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()));
  monitoring::Family<monitoring::Counter>& submitted =
      registry.AddCounterFamily(
          "yolohook_jobs_submitted_total",
          "Jobs accepted (SubmitJob, Predict, PredictStream) by task and mode.",
          {"task", "mode"});
  for (Mode mode : kModes) {
    submitted_[static_cast<int>(mode)] =
        &submitted.With({"detect", std::string(ModeName(mode))});
  }
  round_trip_ = &registry.AddHistogram(
      "yolohook_intercept_rtt_seconds",
      "Interceptor round trips: an event queued for an intercepting "
      "subscription to its reply, seconds.",
      monitoring::LatencyBuckets());
  monitoring::Family<monitoring::Histogram>& predict =
      registry.AddHistogramFamily(
          "yolohook_predict_latency_seconds",
          "Prediction latency: a Predict call from request to response, or "
          "a PredictStream frame from arrival to its result, seconds.",
          {"rpc"}, monitoring::LatencyBuckets());
  predict_latency_ = &predict.With({"Predict"});
  frame_latency_ = &predict.With({"PredictStream"});
  AddProcessCollectors(registry);
}

void ServerMetrics::Watch(const events::EventBus* bus, jobs::JobStore* store) {
  registry_.AddCollector(
      "yolohook_jobs", "Jobs in the job store by state.", MetricType::kGauge,
      {"state"}, [store] {
        std::vector<Sample> samples;
        absl::StatusOr<std::map<jobs::JobState, int64_t>> counts =
            store->CountByState();
        if (!counts.ok()) return samples;  // no figures rather than wrong ones
        for (jobs::JobState state :
             {jobs::JobState::kQueued, jobs::JobState::kRunning,
              jobs::JobState::kSucceeded, jobs::JobState::kFailed,
              jobs::JobState::kCancelled, jobs::JobState::kInterrupted}) {
          auto it = counts->find(state);
          samples.push_back(
              {{absl::AsciiStrToLower(jobs::JobStateName(state))},
               it == counts->end() ? 0.0 : static_cast<double>(it->second)});
        }
        return samples;
      });
  // One stats() call per counter is one bus lock each: cheap next to a
  // scrape's HTTP round trip, and it keeps each collector self-contained.
  auto counter = [&](const char* name, const char* help,
                     int64_t events::BusStats::*field) {
    registry_.AddCollector(name, help, MetricType::kCounter, {}, [bus, field] {
      return std::vector<Sample>{
          {{}, static_cast<double>(bus->stats().*field)}};
    });
  };
  counter("yolohook_events_published_total",
          "Callback events published by jobs (sequenced).",
          &events::BusStats::events_published);
  counter("yolohook_events_sent_total",
          "Events handed to subscribers' streams (observers and "
          "interceptors, replays included).",
          &events::BusStats::events_sent);
  registry_.AddCollector(
      "yolohook_replies_total",
      "Interceptor replies: applied, or rejected (invalid mutations, or no "
      "event awaiting them).",
      MetricType::kCounter, {"result"}, [bus] {
        events::BusStats stats = bus->stats();
        return std::vector<Sample>{
            {{"applied"}, static_cast<double>(stats.replies_applied)},
            {{"rejected"}, static_cast<double>(stats.replies_rejected)}};
      });
  counter("yolohook_reply_timeouts_total",
          "Interceptors that missed their reply deadline.",
          &events::BusStats::reply_timeouts);
  counter("yolohook_mutations_rejected_total",
          "Replies whose mutations failed validation (nothing applied).",
          &events::BusStats::mutations_rejected);
  counter("yolohook_subscribers_lagging_total",
          "Subscriptions ended because their queue was full (LAGGING).",
          &events::BusStats::lagging_ended);
  registry_.AddCollector(
      "yolohook_subscriptions", "Active subscriptions by mode.",
      MetricType::kGauge, {"mode"}, [bus] {
        events::BusStats stats = bus->stats();
        return std::vector<Sample>{
            {{"intercept"}, static_cast<double>(stats.intercept_subscriptions)},
            {{"observe"}, static_cast<double>(stats.observer_subscriptions)}};
      });
}

void ServerMetrics::JobSubmitted(Mode mode) {
  const int index = static_cast<int>(mode);
  if (index >= 0 && index < 4) submitted_[index]->Increment();
}

void ServerMetrics::PredictDone(absl::Duration latency) {
  predict_latency_->Observe(absl::ToDoubleSeconds(latency));
}

void ServerMetrics::FrameDone(absl::Duration latency) {
  frame_latency_->Observe(absl::ToDoubleSeconds(latency));
}

void ServerMetrics::RoundTrip(absl::Duration latency) {
  round_trip_->Observe(absl::ToDoubleSeconds(latency));
}

}  // namespace yolohook::service
