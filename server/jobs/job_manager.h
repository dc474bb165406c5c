// The job manager: accepts jobs, queues them, runs them on threads it owns,
// records their lifecycle in the job store and streams their events through
// the event bus.
#ifndef YOLOHOOK_SERVER_JOBS_JOB_MANAGER_H_
#define YOLOHOOK_SERVER_JOBS_JOB_MANAGER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/callbacks/callbacks.h"
#include "server/engine/config.h"
#include "server/engine/run.h"
#include "server/events/event_bus.h"
#include "server/jobs/job.h"
#include "server/jobs/job_store.h"
#include "server/jobs/paths.h"

namespace yolohook::jobs {

// Runs one job to its end: the engine in production (EngineRunner), a fake in
// tests. Implementations must be thread-safe: the manager calls Run from
// several threads at once (one per running job).
class Runner {
 public:
  virtual ~Runner() = default;

  // Runs `job` (its mode and args) with `run` (callbacks, cancel flag, log,
  // in-memory images) and fills job.save_dir, metrics, results and artifacts.
  // Errors as the engine's (server/engine/run.h): CANCELLED when run.cancel
  // was set, ABORTED when a callback failed the job, ... Must not throw.
  virtual absl::Status Run(JobRecord& job, const engine::RunOptions& run) = 0;
};

// Owns the job queue and the threads that run jobs. Uses (does not own) a
// JobStore, a Runner and optionally an EventBus, which must outlive it.
// Thread-safe.
//
// Lifecycle: QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED, or
// INTERRUPTED when the server stops under a job. Each change is kept in the
// record's history. On creation the manager marks the jobs a previous server
// left QUEUED or RUNNING as INTERRUPTED, and queues every interrupted job
// again, under the same id as its next attempt: train jobs with a
// weights/last.pt resume from it, others run again from the start. Jobs
// started by RunNow or RunStream are not resumed (their callers are gone).
//
// Every state change writes one line to the log (Options::log):
//   [job-1a2b] train QUEUED, position 2
//   [job-1a2b] train RUNNING
//   [job-1a2b] train SUCCEEDED in 5m12s, mAP50-95 0.412, mAP50 0.7
//   [job-1a2b] predict FAILED after 1.2s: <error>
//   [job-1a2b] train CANCELLED after 3.0s: CancelJob by alice
//   [job-1a2b] train INTERRUPTED: server shut down
//
// The manager never holds its lock while calling the runner, the bus or a
// done callback. Callbacks passed in (done) run on the job's thread.
class JobManager {
 public:
  struct Options {
    // queued jobs running at once (runner threads)
    int concurrency = 1;
    // queued jobs; Submit beyond: RESOURCE_EXHAUSTED
    int max_queued = 64;
    // RunNow jobs running at once; RESOURCE_EXHAUSTED beyond
    int max_direct = 4;
    // inline images per job (0 = no limit)
    int max_images = 0;
    // width x height of an inline image or frame (0 = no limit)
    int64_t max_image_pixels = 0;
    // on creation, requeue interrupted train jobs
    bool resume_interrupted = true;
    // Receives each job's log lines, prefixed "[<job id>] ". Null: stdout.
    std::function<void(absl::string_view line)> log;
    // The clock for job times (tests inject a fake). Null: absl::Now.
    std::function<absl::Time()> now;
    // Confines the paths that jobs name to allowed roots (their arguments are
    // recorded and run resolved). Null: paths are taken as they are.
    std::shared_ptr<const PathPolicy> paths;
    // Which finished jobs the store forgets, checked every
    // retention_interval (and once at creation).
    RetentionPolicy retention;
    // How often retention runs (zero or infinite: never).
    absl::Duration retention_interval = absl::Minutes(1);
  };

  // Called once with the job's final record when a RunNow job ends (its state
  // says how), or with an error if the record could not be stored.
  using DoneCallback = std::function<void(absl::StatusOr<JobRecord>)>;

  // Recovers the store's unfinished jobs (see the class comment) and starts the
  // runner threads. `bus` may be null (no events). Errors: the store's;
  // INVALID_ARGUMENT for concurrency < 1 or a negative limit.
  static absl::StatusOr<std::unique_ptr<JobManager>> Create(
      Options options, JobStore* store, Runner* runner, events::EventBus* bus);

  // Shutdown(true) unless already shut down.
  ~JobManager();
  JobManager(const JobManager&) = delete;
  JobManager& operator=(const JobManager&) = delete;

  // Queues a job and returns its record (QUEUED). Errors: INVALID_ARGUMENT
  // naming a bad argument (key or value), arguments or labels beyond the
  // limits of server/common/limits.h, a path outside the allowed roots
  // (Options::paths), an empty inline image, more than max_images images, an
  // image larger than max_image_pixels, or images for a mode other than
  // predict; RESOURCE_EXHAUSTED when max_queued jobs
  // wait; UNAVAILABLE after Shutdown; the store's errors.
  absl::StatusOr<JobRecord> Submit(
      Mode mode, const std::map<std::string, std::string>& args,
      const std::map<std::string, std::string>& labels,
      std::vector<engine::InputImage> images = {}) ABSL_LOCKS_EXCLUDED(mu_);

  // Runs a job at once on a thread of its own, bypassing the queue (the
  // Predict RPC). Returns its record (RUNNING); `done` follows when it ends.
  // Errors as Submit, RESOURCE_EXHAUSTED when max_direct jobs run.
  absl::StatusOr<JobRecord> RunNow(
      Mode mode, const std::map<std::string, std::string>& args,
      const std::map<std::string, std::string>& labels,
      std::vector<engine::InputImage> images, DoneCallback done)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Runs a predict job fed frame by frame (the PredictStream RPC) at once on
  // a thread of its own, like RunNow: the engine pulls frames with
  // stream.next and hands each result to stream.on_result, both on the job's
  // thread. The record keeps no results (a stream may be endless). Errors as
  // RunNow.
  absl::StatusOr<JobRecord> RunStream(
      const std::map<std::string, std::string>& args,
      const std::map<std::string, std::string>& labels,
      engine::FrameStream stream, DoneCallback done) ABSL_LOCKS_EXCLUDED(mu_);

  // Checks one frame of a stream (RunStream) before it is queued for the
  // job: INVALID_ARGUMENT naming the frame's index and size when its header
  // declares more than max_image_pixels.
  absl::Status CheckFrame(int64_t index, absl::string_view name,
                          absl::string_view data) const;

  // The job's record (a running job's last_seq is the bus's). NOT_FOUND.
  absl::StatusOr<JobRecord> Get(const std::string& id) ABSL_LOCKS_EXCLUDED(mu_);

  // Jobs from the store, newest first. Errors as JobStore::List.
  absl::StatusOr<ListPage> List(const ListQuery& query);

  // Cancels a job: a queued one becomes CANCELLED at once; a running one gets
  // its cancel flag and becomes CANCELLED when the engine stops (at its next
  // batch or image). Returns the record after the call. Errors: NOT_FOUND;
  // FAILED_PRECONDITION naming the state of a finished job.
  // `reason` (who asked, or why) goes to the job's CANCELLED log line.
  absl::StatusOr<JobRecord> Cancel(const std::string& id,
                                   const std::string& reason = "")
      ABSL_LOCKS_EXCLUDED(mu_);

  // Blocks until the job has finished (or `timeout` passes) and returns its
  // record. Errors: NOT_FOUND; DEADLINE_EXCEEDED naming the job's state.
  absl::StatusOr<JobRecord> Wait(
      const std::string& id, absl::Duration timeout = absl::InfiniteDuration())
      ABSL_LOCKS_EXCLUDED(mu_);

  // Applies the retention policy now (the retention thread does it every
  // retention_interval). Errors: the store's.
  absl::StatusOr<RetentionResult> ApplyRetention() ABSL_LOCKS_EXCLUDED(mu_);

  // Stops accepting jobs; queued jobs become INTERRUPTED. With `checkpoint`,
  // running jobs get their cancel flag (train jobs keep weights/last.pt of
  // their last finished epoch) and become INTERRUPTED, so that the next
  // manager on the store resumes train jobs; without it they run to their end.
  // Joins every thread the manager started. Idempotent.
  void Shutdown(bool checkpoint) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // A job the manager is queuing or running.
  struct Active {
    // the latest state (persisted)
    JobRecord record;
    // predict: inline images
    std::vector<engine::InputImage> images;
    // predict: a frame stream
    engine::FrameStream stream;
    // the engine's cancel flag
    std::atomic<bool> cancel{false};
    // who or what cancelled it
    std::string cancel_reason;
    // cancelled by Shutdown(true)
    bool interrupt = false;
    // RunNow only
    DoneCallback done;
  };
  // A thread running a RunNow job.
  struct DirectThread {
    std::thread thread;
    bool finished = false;
  };

  JobManager(Options options, JobStore* store, Runner* runner,
             events::EventBus* bus);

  absl::Time Now() const;
  void Log(const std::string& id, absl::string_view line) const;
  // Writes one log record (Options::log, else stdout).
  void Emit(absl::string_view record) const;
  // One line per state change: "[<id>] <mode> <STATE>" and `detail`
  // (", position 2", " in 3.5s, mAP50-95 0.41", ": <error>").
  void LogState(const JobRecord& record, absl::string_view detail) const;
  // Checks a job; returns its arguments with paths resolved.
  absl::StatusOr<std::map<std::string, std::string>> Validate(
      Mode mode, const std::map<std::string, std::string>& args,
      const std::map<std::string, std::string>& labels,
      const std::vector<engine::InputImage>& images) const;
  std::string NewIdLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Recover() ABSL_LOCKS_EXCLUDED(mu_);
  // Sets up an interrupted job's arguments for its next attempt (a train job
  // resumes from its last.pt, or starts again in the same run directory);
  // returns why it runs again, for its history and log.
  static std::string PrepareResume(JobRecord& job);
  void PersistLocked(const JobRecord& record)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WorkerLoop() ABSL_LOCKS_EXCLUDED(mu_);
  // The retention thread: ApplyRetention every retention_interval until
  // Shutdown.
  void RetentionLoop() ABSL_LOCKS_EXCLUDED(mu_);
  // Runs a job already marked RUNNING, records how it ended and calls done.
  void Execute(const std::shared_ptr<Active>& job) ABSL_LOCKS_EXCLUDED(mu_);
  // RunNow and RunStream: records the job RUNNING and starts its thread.
  absl::StatusOr<JobRecord> StartDirect(
      std::shared_ptr<Active> active, Mode mode,
      const std::map<std::string, std::string>& args,
      const std::map<std::string, std::string>& labels)
      ABSL_LOCKS_EXCLUDED(mu_);
  std::vector<std::thread> ReapDirectLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  JobStore* const store_;
  Runner* const runner_;
  events::EventBus* const bus_;

  mutable absl::Mutex mu_;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  // Queued and running jobs by id; a job leaves when it finishes.
  std::map<std::string, std::shared_ptr<Active>> active_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> queue_ ABSL_GUARDED_BY(mu_);  // FIFO of queued ids
  int queued_ ABSL_GUARDED_BY(mu_) = 0;                 // jobs in state QUEUED
  int direct_ ABSL_GUARDED_BY(mu_) = 0;                 // RunNow jobs running
  uint64_t id_state_ ABSL_GUARDED_BY(mu_) = 0;          // id generator state
  std::map<std::string, DirectThread> direct_threads_ ABSL_GUARDED_BY(mu_);

  // Serializes Shutdown calls; guards the runner threads.
  absl::Mutex shutdown_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  std::vector<std::thread> workers_ ABSL_GUARDED_BY(shutdown_mu_);
  std::thread retention_thread_ ABSL_GUARDED_BY(shutdown_mu_);
};

}  // namespace yolohook::jobs

#endif  // YOLOHOOK_SERVER_JOBS_JOB_MANAGER_H_
