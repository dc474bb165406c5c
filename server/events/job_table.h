// The bus's jobs: each job's seq counter, attempt and selection data, and the
// events it retains in memory for replays. Sequencing and retention only.
#ifndef YOLOHOOK_SERVER_EVENTS_JOB_TABLE_H_
#define YOLOHOOK_SERVER_EVENTS_JOB_TABLE_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <string>

#include "server/events/event_log.h"

namespace yolohook::events {

// Thread-compatible: the bus calls it under its own lock.
//
// A job is known while it runs and while something refers to it (a
// subscription, a Subscribe in progress: see Pin); with an EventLog a
// finished job nobody refers to is forgotten, since its events are all in the
// log, so that memory follows the live jobs rather than every job ever run.
class JobTable {
 public:
  struct Job {
    std::map<std::string, std::string> labels;
    // Carried by the job's events.
    std::map<std::string, std::string> args;
    // The run its events belong to.
    int32_t attempt = 1;
    // The last seq handed out by NextSeq.
    int64_t last_seq = 0;
    // The last seq delivered to subscriptions (with a log: also stored).
    int64_t published_seq = 0;
    // The last `retention` delivered events, oldest first, gap-free.
    std::deque<EventRecordPtr> ring;
    // Subscribe calls in progress that keep the job known.
    int pins = 0;
    bool finished = false;
    // Stopped by a server going away; it resumes (here or elsewhere), so
    // its subscriptions do not end with JOBS_DONE.
    bool interrupted = false;
  };

  // `retention`: events per job kept in memory (at least 1). `logged`: events
  // are also in an EventLog, so finished jobs may be forgotten.
  JobTable(size_t retention, bool logged);

  Job* Find(const std::string& id);
  const Job* Find(const std::string& id) const;

  // Starts or resumes `id`: its seq continues after `last_seq` (what the log
  // holds), or after what is known already.
  Job& Start(const std::string& id,
             const std::map<std::string, std::string>& labels,
             const std::map<std::string, std::string>& args, int64_t last_seq,
             int32_t attempt);
  // Registers a job known only to the log as finished, with `last_seq`.
  Job& AddFinished(const std::string& id, int64_t last_seq);

  // The job's next seq (1, 2, ...); starts the job if it is unknown.
  int64_t NextSeq(const std::string& id);

  // `event` was delivered: retained, and the job's published seq.
  void Delivered(const EventRecordPtr& event);

  // The retained event with `seq`, or null when it is not in memory.
  EventRecordPtr Retained(const Job& job, int64_t seq) const;
  // The first retained seq (0: none).
  static int64_t RingFront(const Job& job);

  // The job stopped publishing (finished, or interrupted to resume). With a
  // log its events leave memory.
  void Finish(const std::string& id, bool interrupted);

  // Forgets `id` if it is finished, unpinned and `referenced` (does a
  // subscription refer to it) says no. Only with a log.
  template <typename Referenced>
  void ReleaseIfUnused(const std::string& id, Referenced referenced) {
    if (!logged_) return;
    auto it = jobs_.find(id);
    if (it == jobs_.end() || !it->second.finished || it->second.pins > 0)
      return;
    if (referenced(id)) return;
    jobs_.erase(it);
  }

  const std::map<std::string, Job>& jobs() const { return jobs_; }
  size_t size() const { return jobs_.size(); }

 private:
  const size_t retention_;
  const bool logged_;
  std::map<std::string, Job> jobs_;
};

}  // namespace yolohook::events

#endif  // YOLOHOOK_SERVER_EVENTS_JOB_TABLE_H_
