// The job store: every job's record and events in one SQLite file, so that
// jobs and their event history survive restarts.
#ifndef YOLOHOOK_SERVER_JOBS_JOB_STORE_H_
#define YOLOHOOK_SERVER_JOBS_JOB_STORE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/callbacks/callbacks.h"  // event_bus.h uses Callback
#include "server/events/event_log.h"
#include "server/jobs/job.h"

struct sqlite3;
struct sqlite3_stmt;

namespace yolohook::jobs {

// Which jobs List returns.
struct ListQuery {
  // only these states (empty: all)
  std::vector<JobState> states;
  // only jobs carrying all of these
  std::map<std::string, std::string> labels;
  // at most this many (0: kDefaultListLimit)
  int limit = 0;
  // from a previous ListPage ("" : the first page)
  std::string page_token;
};

// One page of List.
struct ListPage {
  // newest first
  std::vector<JobRecord> jobs;
  // for the next page; "" on the last page
  std::string next_page_token;
};

// Which finished jobs (SUCCEEDED, FAILED, CANCELLED, INTERRUPTED) are deleted
// with their events. Queued and running jobs are never deleted.
struct RetentionPolicy {
  // Finished jobs that ended longer ago than this (zero or infinite: none by
  // age).
  absl::Duration max_age = absl::Hours(24 * 30);
  // Finished jobs started by Predict or PredictStream (JobRecord::direct)
  // that ended longer ago than this.
  absl::Duration direct_max_age = absl::Minutes(10);
  // At most this many finished jobs are kept, those that ended last (0: no
  // limit).
  int64_t max_finished_jobs = 10000;
  // While the store takes more bytes than this, the finished jobs that ended
  // first are deleted (0: no limit).
  int64_t max_bytes = 0;
};

// What a DeleteExpired call did.
struct RetentionResult {
  // Jobs deleted.
  int64_t jobs_deleted = 0;
  // Their events deleted.
  int64_t events_deleted = 0;
  // The store's size afterwards (database and WAL files, bytes).
  int64_t bytes = 0;
};

// Job records and events in a SQLite database (WAL mode, one connection,
// prepared statements). Records are stored as serialized v1::Job with their id,
// state and creation time as indexed columns; events as serialized v1::Event
// keyed by (job_id, seq). Thread-safe: one mutex serializes every statement.
class JobStore : public events::EventLog {
 public:
  // List's limit when 0
  static constexpr int kDefaultListLimit = 100;
  // larger limits are clamped
  static constexpr int kMaxListLimit = 1000;

  struct Options {
    // The database never grows past this (bytes; 0: no limit): writes beyond
    // fail with RESOURCE_EXHAUSTED, as on a full disk. Retention
    // (RetentionPolicy::max_bytes, set lower) keeps it from getting there.
    int64_t max_bytes = 0;
  };

  // Opens (creating the file, its parent directories and the schema if
  // needed, and bringing an older store's schema up to date) the store at
  // `path`. Errors naming the path: INVALID_ARGUMENT for a directory or a
  // file that is not a job store (e.g. corrupt); FAILED_PRECONDITION when the
  // file or its directory is read-only; INTERNAL when SQLite fails otherwise.
  // Every method's errors: RESOURCE_EXHAUSTED when the disk (or max_bytes)
  // is full, FAILED_PRECONDITION when the store became read-only, DATA_LOSS
  // when it is corrupt, INTERNAL otherwise; each names the store.
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(const std::string& path,
                                                        const Options& options);
  // Open with the default options.
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(
      const std::string& path);

  ~JobStore() override;
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  // Inserts or replaces the record with job.id. Errors: INVALID_ARGUMENT for
  // an empty id; INTERNAL on a database error.
  absl::Status Put(const JobRecord& job) ABSL_LOCKS_EXCLUDED(mu_);

  // The record with `id`. Errors: NOT_FOUND naming the id; DATA_LOSS for an
  // unreadable record; INTERNAL on a database error.
  absl::StatusOr<JobRecord> Get(const std::string& id) ABSL_LOCKS_EXCLUDED(mu_);

  // Matching jobs, newest (by create_time, then id) first. Errors:
  // INVALID_ARGUMENT for a malformed page token or a negative limit; INTERNAL.
  absl::StatusOr<ListPage> List(const ListQuery& query)
      ABSL_LOCKS_EXCLUDED(mu_);

  // How many jobs are in each state (states without jobs are absent).
  // Errors: INTERNAL on a database error.
  absl::StatusOr<std::map<JobState, int64_t>> CountByState()
      ABSL_LOCKS_EXCLUDED(mu_);

  // The jobs that were QUEUED or RUNNING (the server stopped under them)
  // become INTERRUPTED with error "server restarted" and end time `now`; they
  // are returned, oldest first, in their new state.
  absl::StatusOr<std::vector<JobRecord>> MarkRunningInterrupted(
      absl::Time now = absl::Now()) ABSL_LOCKS_EXCLUDED(mu_);

  // events::EventLog: one transaction for all of them (a failed event does
  // not undo the others). ALREADY_EXISTS for a (job, seq) already stored,
  // INVALID_ARGUMENT for an empty job id or seq < 1.
  absl::Status Append(const std::vector<const events::EventRecord*>& events)
      override ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<std::vector<events::EventRecord>> Read(
      const std::string& job_id, int64_t from_seq, int64_t limit) override
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<int64_t> LastSeq(const std::string& job_id) override
      ABSL_LOCKS_EXCLUDED(mu_);

  // One event as the wire carries it, stored as Append would (tools, tests).
  absl::Status AppendEvent(const v1::Event& event) ABSL_LOCKS_EXCLUDED(mu_);
  // Events as Read finds them, parsed. Errors: DATA_LOSS for one that does
  // not parse, and Read's.
  absl::StatusOr<std::vector<v1::Event>> ReadEvents(const std::string& job_id,
                                                    int64_t from_seq,
                                                    int64_t limit)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Deletes the finished jobs `policy` says have expired at `now`, with
  // their events, and gives the freed space back to the file system.
  absl::StatusOr<RetentionResult> DeleteExpired(const RetentionPolicy& policy,
                                                absl::Time now)
      ABSL_LOCKS_EXCLUDED(mu_);

  // The bytes the store takes on disk (database and WAL).
  absl::StatusOr<int64_t> SizeBytes() ABSL_LOCKS_EXCLUDED(mu_);

  const std::string& path() const { return path_; }

 private:
  JobStore(std::string path, sqlite3* db);

  absl::Status Prepare() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds the columns older stores lack, and turns on incremental vacuum.
  absl::Status MigrateLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status MigrateEventsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<int64_t> PragmaLocked(absl::string_view name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<int64_t> SizeBytesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::vector<std::string>> SelectIdsLocked(
      const std::string& sql, const std::vector<int64_t>& params)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Deletes jobs and their events in one transaction, counting them.
  absl::Status DeleteJobsLocked(const std::vector<std::string>& ids,
                                RetentionResult& result)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ReclaimLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The status for SQLite result `code` while doing `what`.
  absl::Status ErrorFor(int code, absl::string_view what,
                        absl::string_view message) const;
  absl::Status AppendLocked(const events::EventRecord& event)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status PutLocked(const JobRecord& job)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Exec(const char* sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status SqlError(absl::string_view what)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  absl::Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
  sqlite3_stmt* put_ ABSL_GUARDED_BY(mu_) = nullptr;
  sqlite3_stmt* get_ ABSL_GUARDED_BY(mu_) = nullptr;
  sqlite3_stmt* append_ ABSL_GUARDED_BY(mu_) = nullptr;
  sqlite3_stmt* read_ ABSL_GUARDED_BY(mu_) = nullptr;
  sqlite3_stmt* last_seq_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace yolohook::jobs

#endif  // YOLOHOOK_SERVER_JOBS_JOB_STORE_H_
