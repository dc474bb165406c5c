// The bus's event-log writer: stores events on a thread of its own, a batch
// (one transaction) at a time, and hands each batch on once it is stored, so
// that what a subscriber receives is already in the log (a resume after a
// crash finds every event it saw) while no job waits for a write.
#ifndef YOLOHOOK_SERVER_EVENTS_LOG_WRITER_H_
#define YOLOHOOK_SERVER_EVENTS_LOG_WRITER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/events/event_log.h"

namespace yolohook::events {

// Thread-safe. `stored` is called on the writer's thread, with each batch in
// queue order, without the writer's lock held; it must not call Queue or
// Flush.
class LogWriter {
 public:
  // A job's events that may be queued and not yet stored: enough that a job
  // rarely waits for the log, few enough to bound what a crash can lose
  // (events that no subscriber has seen yet).
  static constexpr size_t kMaxUnstored = 256;

  // What happened to one batch.
  struct Batch {
    // In queue order.
    std::vector<EventRecordPtr> events;
    // The log's error for the batch (the events are handed on anyway: a
    // failing store must not stop live delivery).
    absl::Status status;
  };

  LogWriter(EventLog* log, std::function<void(Batch batch)> stored);
  // Stores and hands on everything queued, then stops its thread.
  ~LogWriter();
  LogWriter(const LogWriter&) = delete;
  LogWriter& operator=(const LogWriter&) = delete;

  // Queues `event`; waits while kMaxUnstored events of its job are queued and
  // not yet stored.
  void Queue(EventRecordPtr event) ABSL_LOCKS_EXCLUDED(mu_);

  // Waits until everything queued so far has been stored and handed on.
  void Flush() ABSL_LOCKS_EXCLUDED(mu_);

  // Forgets a finished job's accounting (call after its last Queue).
  void ForgetJob(const std::string& job_id) ABSL_LOCKS_EXCLUDED(mu_);

  // Batches whose Append failed.
  int64_t failures() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);

  EventLog* const log_;
  const std::function<void(Batch)> stored_;
  mutable absl::Mutex mu_;
  std::deque<EventRecordPtr> queue_ ABSL_GUARDED_BY(mu_);
  int64_t queued_ ABSL_GUARDED_BY(mu_) = 0;  // events ever queued
  int64_t done_ ABSL_GUARDED_BY(mu_) = 0;    // events stored and handed on
  // Per job: events queued and not yet done.
  std::map<std::string, size_t> pending_ ABSL_GUARDED_BY(mu_);
  int64_t failures_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace yolohook::events

#endif  // YOLOHOOK_SERVER_EVENTS_LOG_WRITER_H_
