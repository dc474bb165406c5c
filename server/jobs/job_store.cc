#include "server/jobs/job_store.h"

#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/callbacks/events.h"
#include "server/common/status_macros.h"

namespace yolohook::jobs {
namespace {

constexpr int kBusyTimeoutMs = 5000;

// Resets a prepared statement (and its bindings) when it goes out of scope.
class StmtReset {
 public:
  explicit StmtReset(sqlite3_stmt* stmt) : stmt_(stmt) {}
  ~StmtReset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  StmtReset(const StmtReset&) = delete;
  StmtReset& operator=(const StmtReset&) = delete;

 private:
  sqlite3_stmt* stmt_;
};

// Finalizes a statement prepared for one call.
struct StmtFinalizer {
  void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};
using OwnedStmt = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

void BindText(sqlite3_stmt* stmt, int index, const std::string& text) {
  sqlite3_bind_text(stmt, index, text.data(), static_cast<int>(text.size()),
                    SQLITE_TRANSIENT);
}

void BindBlob(sqlite3_stmt* stmt, int index, const std::string& bytes) {
  sqlite3_bind_blob(stmt, index, bytes.data(), static_cast<int>(bytes.size()),
                    SQLITE_TRANSIENT);
}

std::string ColumnBytes(sqlite3_stmt* stmt, int index) {
  const void* data = sqlite3_column_blob(stmt, index);
  const int size = sqlite3_column_bytes(stmt, index);
  if (data == nullptr || size <= 0) return std::string();
  return std::string(static_cast<const char*>(data), static_cast<size_t>(size));
}

int64_t TimeKey(absl::Time time) { return absl::ToUnixNanos(time); }

// Page tokens: "<create_time nanos>/<id>" of the last job returned.
std::string MakePageToken(const JobRecord& job) {
  return absl::StrCat(TimeKey(job.create_time), "/", job.id);
}

absl::Status ParsePageToken(const std::string& token, int64_t* time_key,
                            std::string* id) {
  const size_t slash = token.find('/');
  if (slash == std::string::npos || slash + 1 >= token.size() ||
      !absl::SimpleAtoi(absl::string_view(token).substr(0, slash), time_key)) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_token: malformed token \"", token,
                     "\" (pass a next_page_token from a previous list)"));
  }
  *id = token.substr(slash + 1);
  return absl::OkStatus();
}

bool HasLabels(const JobRecord& job,
               const std::map<std::string, std::string>& labels) {
  for (const auto& [key, value] : labels) {
    auto it = job.labels.find(key);
    if (it == job.labels.end() || it->second != value) return false;
  }
  return true;
}

absl::StatusOr<JobRecord> ParseJob(const std::string& bytes,
                                   const std::string& id) {
  v1::Job proto;
  if (!proto.ParseFromString(bytes)) {
    return absl::DataLossError(
        absl::StrCat("job store: the record of job ", id, " is unreadable"));
  }
  return FromProto(proto);
}

}  // namespace

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(
    const std::string& path) {
  return Open(path, Options());
}

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(
    const std::string& path, const Options& options) {
  if (path.empty()) {
    return absl::InvalidArgumentError("job store: empty database path");
  }
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job store ", path, ": is a directory, expected a database file"));
  }
  const std::filesystem::path parent =
      std::filesystem::path(path).parent_path();
  if (!parent.empty() && !std::filesystem::exists(parent, ec)) {
    std::filesystem::create_directories(parent, ec);
    if (ec) {
      return absl::InternalError(
          absl::StrCat("job store ", path, ": cannot create directory ",
                       parent.string(), ": ", ec.message()));
    }
  }
  // Where SQLite would only say "unable to open database file".
  const std::string dir = parent.empty() ? "." : parent.string();
  if (::access(dir.c_str(), W_OK) != 0 && errno != ENOENT) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job store ", path, ": its directory ", dir,
        " is read-only; the store needs to write there (its journal too)"));
  }
  if (::access(path.c_str(), F_OK) == 0 && ::access(path.c_str(), W_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("job store ", path, " is read-only"));
  }
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(
      path.c_str(), &db,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
      nullptr);
  if (rc != SQLITE_OK) {
    std::string message =
        db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    if (rc == SQLITE_READONLY || rc == SQLITE_PERM) {
      return absl::FailedPreconditionError(
          absl::StrCat("job store ", path, " is read-only: ", message));
    }
    return absl::InternalError(
        absl::StrCat("job store ", path, ": cannot open: ", message));
  }
  std::unique_ptr<JobStore> store(new JobStore(path, db));
  absl::MutexLock lock(&store->mu_);
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  // Set before the first table exists; an older store is converted below.
  // With it, pages that retention frees go back to the file system.
  absl::Status status = store->Exec("PRAGMA auto_vacuum=INCREMENTAL");
  // The first statement that reads the header: a file that is not a database
  // fails here.
  if (status.ok()) status = store->Exec("PRAGMA journal_mode=WAL");
  if (!status.ok()) {
    const int code = sqlite3_extended_errcode(db) & 0xff;
    if (code == SQLITE_NOTADB || code == SQLITE_CORRUPT) {
      return absl::InvalidArgumentError(
          absl::StrCat("job store ", path,
                       ": not a yolohook job store (corrupt or foreign file: ",
                       sqlite3_errmsg(db), ")"));
    }
    return status;
  }
  YH_RETURN_IF_ERROR(store->Exec("PRAGMA synchronous=NORMAL"));
  // The WAL file is truncated back to this after checkpoints.
  YH_RETURN_IF_ERROR(store->Exec("PRAGMA journal_size_limit=67108864"));
  if (options.max_bytes > 0) {
    YH_ASSIGN_OR_RETURN(const int64_t page_size,
                        store->PragmaLocked("page_size"));
    YH_RETURN_IF_ERROR(store->Exec(
        absl::StrCat("PRAGMA max_page_count=",
                     std::max<int64_t>(options.max_bytes / page_size, 16))
            .c_str()));
  }
  YH_RETURN_IF_ERROR(
      store->Exec("CREATE TABLE IF NOT EXISTS jobs ("
                  " id TEXT PRIMARY KEY NOT NULL,"
                  " state INTEGER NOT NULL,"
                  " create_time INTEGER NOT NULL,"
                  " job BLOB NOT NULL,"
                  " end_time INTEGER NOT NULL DEFAULT 0,"
                  " direct INTEGER NOT NULL DEFAULT 0)"));
  YH_RETURN_IF_ERROR(store->MigrateLocked());
  YH_RETURN_IF_ERROR(store->Exec(
      "CREATE INDEX IF NOT EXISTS jobs_by_time ON jobs (create_time, id)"));
  YH_RETURN_IF_ERROR(
      store->Exec("CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state)"));
  YH_RETURN_IF_ERROR(store->Exec(
      "CREATE INDEX IF NOT EXISTS jobs_by_end ON jobs (state, end_time)"));
  YH_RETURN_IF_ERROR(
      store->Exec("CREATE TABLE IF NOT EXISTS events ("
                  " job_id TEXT NOT NULL,"
                  " seq INTEGER NOT NULL,"
                  " event BLOB NOT NULL,"
                  " name TEXT NOT NULL DEFAULT '',"
                  " PRIMARY KEY (job_id, seq)) WITHOUT ROWID"));
  YH_RETURN_IF_ERROR(store->MigrateEventsLocked());
  // A database with other tables of these names (not ours) fails here.
  status = store->Prepare();
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job store ", path, ": not a yolohook job store: ", status.message()));
  }
  return store;
}

JobStore::JobStore(std::string path, sqlite3* db)
    : path_(std::move(path)), db_(db) {}

JobStore::~JobStore() {
  absl::MutexLock lock(&mu_);
  for (sqlite3_stmt* stmt : {put_, get_, append_, read_, last_seq_}) {
    sqlite3_finalize(stmt);
  }
  sqlite3_close(db_);
}

absl::Status JobStore::ErrorFor(int code, absl::string_view what,
                                absl::string_view message) const {
  switch (code & 0xff) {
    case SQLITE_FULL:
      return absl::ResourceExhaustedError(
          absl::StrCat("job store ", path_,
                       " is full (the disk, or the store's size "
                       "limit --max_store_mb): ",
                       what, ": ", message));
    case SQLITE_READONLY:
      return absl::FailedPreconditionError(absl::StrCat(
          "job store ", path_, " is read-only: ", what, ": ", message));
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(absl::StrCat(
          "job store ", path_, " is corrupt: ", what, ": ", message));
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::UnavailableError(
          absl::StrCat("job store ", path_, " is busy: ", what, ": ", message));
    default:
      return absl::InternalError(
          absl::StrCat("job store ", path_, ": ", what, ": ", message));
  }
}

absl::Status JobStore::SqlError(absl::string_view what) {
  return ErrorFor(sqlite3_extended_errcode(db_), what, sqlite3_errmsg(db_));
}

absl::Status JobStore::Exec(const char* sql) {
  char* error = nullptr;
  const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &error);
  if (rc != SQLITE_OK) {
    std::string message = error != nullptr ? error : sqlite3_errmsg(db_);
    sqlite3_free(error);
    return ErrorFor(rc, sql, message);
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> JobStore::PragmaLocked(absl::string_view name) {
  const std::string sql = absl::StrCat("PRAGMA ", name);
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &raw, nullptr) != SQLITE_OK) {
    return SqlError(sql);
  }
  OwnedStmt stmt(raw);
  if (sqlite3_step(raw) != SQLITE_ROW) return SqlError(sql);
  return static_cast<int64_t>(sqlite3_column_int64(raw, 0));
}

absl::Status JobStore::MigrateEventsLocked() {
  // Stores written before events had a name column: rows without one are
  // read by parsing their event (see Read).
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db_, "PRAGMA table_info(events)", -1, &raw, nullptr) !=
      SQLITE_OK) {
    return SqlError("read the events table's columns");
  }
  bool has_name = false;
  {
    OwnedStmt stmt(raw);
    while (sqlite3_step(raw) == SQLITE_ROW) {
      const char* column =
          reinterpret_cast<const char*>(sqlite3_column_text(raw, 1));
      if (column != nullptr && std::string(column) == "name") has_name = true;
    }
  }
  if (has_name) return absl::OkStatus();
  return Exec("ALTER TABLE events ADD COLUMN name TEXT NOT NULL DEFAULT ''");
}

absl::Status JobStore::MigrateLocked() {
  // Stores written before retention lack the end_time and direct columns:
  // add them and fill them in from the records.
  bool has_end_time = false;
  {
    sqlite3_stmt* raw = nullptr;
    if (sqlite3_prepare_v2(db_, "PRAGMA table_info(jobs)", -1, &raw, nullptr) !=
        SQLITE_OK) {
      return SqlError("read the jobs table's columns");
    }
    OwnedStmt stmt(raw);
    while (sqlite3_step(raw) == SQLITE_ROW) {
      const char* column =
          reinterpret_cast<const char*>(sqlite3_column_text(raw, 1));
      if (column != nullptr && std::string(column) == "end_time")
        has_end_time = true;
    }
  }
  if (!has_end_time) {
    YH_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    absl::Status status =
        Exec("ALTER TABLE jobs ADD COLUMN end_time INTEGER NOT NULL DEFAULT 0");
    if (status.ok()) {
      status =
          Exec("ALTER TABLE jobs ADD COLUMN direct INTEGER NOT NULL DEFAULT 0");
    }
    std::vector<std::pair<std::string, int64_t>> ends;
    if (status.ok()) {
      sqlite3_stmt* raw = nullptr;
      if (sqlite3_prepare_v2(db_, "SELECT id, job FROM jobs", -1, &raw,
                             nullptr) != SQLITE_OK) {
        status = SqlError("read jobs to migrate");
      } else {
        OwnedStmt stmt(raw);
        while (sqlite3_step(raw) == SQLITE_ROW) {
          const std::string id(
              reinterpret_cast<const char*>(sqlite3_column_text(raw, 0)),
              static_cast<size_t>(sqlite3_column_bytes(raw, 0)));
          absl::StatusOr<JobRecord> job = ParseJob(ColumnBytes(raw, 1), id);
          if (job.ok() && job->end_time != absl::InfinitePast())
            ends.emplace_back(id, TimeKey(job->end_time));
        }
      }
    }
    for (const auto& [id, end] : ends) {
      if (!status.ok()) break;
      sqlite3_stmt* raw = nullptr;
      if (sqlite3_prepare_v2(db_, "UPDATE jobs SET end_time = ?1 WHERE id = ?2",
                             -1, &raw, nullptr) != SQLITE_OK) {
        status = SqlError("migrate jobs");
        break;
      }
      OwnedStmt stmt(raw);
      sqlite3_bind_int64(raw, 1, end);
      BindText(raw, 2, id);
      if (sqlite3_step(raw) != SQLITE_DONE) status = SqlError("migrate jobs");
    }
    if (!status.ok()) {
      Exec("ROLLBACK").IgnoreError();
      return status;
    }
    YH_RETURN_IF_ERROR(Exec("COMMIT"));
  }
  // A store created before auto_vacuum was set keeps freed pages until it is
  // rebuilt once.
  YH_ASSIGN_OR_RETURN(const int64_t auto_vacuum, PragmaLocked("auto_vacuum"));
  if (auto_vacuum != 2) {
    YH_RETURN_IF_ERROR(Exec("PRAGMA auto_vacuum=INCREMENTAL"));
    YH_RETURN_IF_ERROR(Exec("VACUUM"));
  }
  return absl::OkStatus();
}

absl::Status JobStore::Prepare() {
  struct {
    sqlite3_stmt** stmt;
    const char* sql;
  } statements[] = {
      {&put_,
       "INSERT OR REPLACE INTO jobs (id, state, create_time, job, end_time, "
       "direct) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"},
      {&get_, "SELECT job FROM jobs WHERE id = ?1"},
      {&append_,
       "INSERT INTO events (job_id, seq, event, name) VALUES (?1, ?2, ?3, "
       "?4)"},
      {&read_,
       "SELECT seq, event, name FROM events WHERE job_id = ?1 AND seq >= ?2 "
       "ORDER BY seq LIMIT ?3"},
      {&last_seq_,
       "SELECT COALESCE(MAX(seq), 0) FROM events WHERE job_id = ?1"},
  };
  for (auto& s : statements) {
    if (sqlite3_prepare_v3(db_, s.sql, -1, SQLITE_PREPARE_PERSISTENT, s.stmt,
                           nullptr) != SQLITE_OK) {
      return SqlError(absl::StrCat("prepare \"", s.sql, "\""));
    }
  }
  return absl::OkStatus();
}

absl::Status JobStore::Put(const JobRecord& job) {
  absl::MutexLock lock(&mu_);
  return PutLocked(job);
}

absl::Status JobStore::PutLocked(const JobRecord& job) {
  if (job.id.empty()) {
    return absl::InvalidArgumentError("job store: a job needs an id");
  }
  StmtReset reset(put_);
  BindText(put_, 1, job.id);
  sqlite3_bind_int(put_, 2, static_cast<int>(job.state));
  sqlite3_bind_int64(put_, 3, TimeKey(job.create_time));
  BindBlob(put_, 4, ToProto(job).SerializeAsString());
  sqlite3_bind_int64(
      put_, 5,
      job.end_time == absl::InfinitePast() ? 0 : TimeKey(job.end_time));
  sqlite3_bind_int(put_, 6, job.direct ? 1 : 0);
  if (sqlite3_step(put_) != SQLITE_DONE) {
    return SqlError(absl::StrCat("put job ", job.id));
  }
  return absl::OkStatus();
}

absl::StatusOr<JobRecord> JobStore::Get(const std::string& id) {
  std::string bytes;
  {
    absl::MutexLock lock(&mu_);
    StmtReset reset(get_);
    BindText(get_, 1, id);
    const int rc = sqlite3_step(get_);
    if (rc == SQLITE_DONE) {
      return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
    }
    if (rc != SQLITE_ROW) return SqlError(absl::StrCat("get job ", id));
    bytes = ColumnBytes(get_, 0);
  }
  return ParseJob(bytes, id);
}

absl::StatusOr<ListPage> JobStore::List(const ListQuery& query) {
  if (query.limit < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("limit: must be >= 0, got ", query.limit));
  }
  const int limit = query.limit == 0 ? kDefaultListLimit
                                     : std::min(query.limit, kMaxListLimit);
  int64_t after_time = 0;
  std::string after_id;
  const bool paged = !query.page_token.empty();
  if (paged) {
    YH_RETURN_IF_ERROR(
        ParsePageToken(query.page_token, &after_time, &after_id));
  }
  std::string sql = "SELECT id, job FROM jobs WHERE 1";
  if (!query.states.empty()) {
    std::vector<int> states;
    for (JobState state : query.states) {
      states.push_back(static_cast<int>(state));
    }
    absl::StrAppend(&sql, " AND state IN (", absl::StrJoin(states, ","), ")");
  }
  if (paged) {
    absl::StrAppend(
        &sql, " AND (create_time < ?1 OR (create_time = ?1 AND id < ?2))");
  }
  absl::StrAppend(&sql, " ORDER BY create_time DESC, id DESC");

  ListPage page;
  absl::MutexLock lock(&mu_);
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &raw, nullptr) != SQLITE_OK) {
    return SqlError("list jobs");
  }
  OwnedStmt stmt(raw);
  if (paged) {
    sqlite3_bind_int64(raw, 1, after_time);
    BindText(raw, 2, after_id);
  }
  bool more = false;
  int rc;
  while ((rc = sqlite3_step(raw)) == SQLITE_ROW) {
    const std::string id(
        reinterpret_cast<const char*>(sqlite3_column_text(raw, 0)),
        static_cast<size_t>(sqlite3_column_bytes(raw, 0)));
    YH_ASSIGN_OR_RETURN(JobRecord job, ParseJob(ColumnBytes(raw, 1), id));
    if (!HasLabels(job, query.labels)) continue;
    if (static_cast<int>(page.jobs.size()) == limit) {
      more = true;
      break;
    }
    page.jobs.push_back(std::move(job));
  }
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return SqlError("list jobs");
  if (more) page.next_page_token = MakePageToken(page.jobs.back());
  return page;
}

absl::StatusOr<std::map<JobState, int64_t>> JobStore::CountByState() {
  absl::MutexLock lock(&mu_);
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db_, "SELECT state, COUNT(*) FROM jobs GROUP BY state",
                         -1, &raw, nullptr) != SQLITE_OK) {
    return SqlError("count jobs by state");
  }
  OwnedStmt stmt(raw);
  std::map<JobState, int64_t> counts;
  int rc;
  while ((rc = sqlite3_step(raw)) == SQLITE_ROW) {
    const int state = sqlite3_column_int(raw, 0);
    if (state < static_cast<int>(JobState::kQueued) ||
        state > static_cast<int>(JobState::kInterrupted)) {
      continue;
    }
    counts[static_cast<JobState>(state)] = sqlite3_column_int64(raw, 1);
  }
  if (rc != SQLITE_DONE) return SqlError("count jobs by state");
  return counts;
}

absl::StatusOr<std::vector<JobRecord>> JobStore::MarkRunningInterrupted(
    absl::Time now) {
  absl::MutexLock lock(&mu_);
  sqlite3_stmt* raw = nullptr;
  const std::string sql = absl::StrCat(
      "SELECT id, job FROM jobs WHERE state IN (",
      static_cast<int>(JobState::kQueued), ",",
      static_cast<int>(JobState::kRunning), ") ORDER BY create_time, id");
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &raw, nullptr) != SQLITE_OK) {
    return SqlError("find unfinished jobs");
  }
  std::vector<JobRecord> interrupted;
  {
    OwnedStmt stmt(raw);
    int rc;
    while ((rc = sqlite3_step(raw)) == SQLITE_ROW) {
      const std::string id(
          reinterpret_cast<const char*>(sqlite3_column_text(raw, 0)),
          static_cast<size_t>(sqlite3_column_bytes(raw, 0)));
      YH_ASSIGN_OR_RETURN(JobRecord job, ParseJob(ColumnBytes(raw, 1), id));
      interrupted.push_back(std::move(job));
    }
    if (rc != SQLITE_DONE) return SqlError("find unfinished jobs");
  }
  YH_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  for (JobRecord& job : interrupted) {
    job.error = "server restarted";
    job.end_time = now;
    job.Enter(JobState::kInterrupted, now, job.error);
    absl::Status status = PutLocked(job);
    if (!status.ok()) {
      Exec("ROLLBACK").IgnoreError();
      return status;
    }
  }
  YH_RETURN_IF_ERROR(Exec("COMMIT"));
  return interrupted;
}

absl::Status JobStore::AppendEvent(const v1::Event& event) {
  absl::StatusOr<Event> kind = EventFromName(event.name());
  events::EventRecord record;
  record.job_id = event.job_id();
  record.seq = event.seq();
  record.event = kind.ok() ? *kind : Event::kOnPretrainRoutineStart;
  record.bytes = events::Serialize(event);
  return Append({&record});
}

absl::StatusOr<std::vector<v1::Event>> JobStore::ReadEvents(
    const std::string& job_id, int64_t from_seq, int64_t limit) {
  YH_ASSIGN_OR_RETURN(std::vector<events::EventRecord> records,
                      Read(job_id, from_seq, limit));
  std::vector<v1::Event> out(records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    if (!out[i].ParseFromString(*records[i].bytes)) {
      return absl::DataLossError(absl::StrCat("job store ", path_, ": event ",
                                              records[i].seq, " of job ",
                                              job_id, " is unreadable"));
    }
  }
  return out;
}

absl::Status JobStore::Append(
    const std::vector<const events::EventRecord*>& events) {
  if (events.empty()) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  YH_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  absl::Status first;
  for (const events::EventRecord* event : events)
    first.Update(AppendLocked(*event));
  absl::Status commit = Exec("COMMIT");
  if (!commit.ok()) {
    Exec("ROLLBACK").IgnoreError();
    return commit;
  }
  return first;
}

absl::Status JobStore::AppendLocked(const events::EventRecord& event) {
  if (event.job_id.empty() || event.seq < 1 || event.bytes == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job store: an event needs a job id and a seq >= 1 (job \"",
        event.job_id, "\", seq ", event.seq, ")"));
  }
  StmtReset reset(append_);
  BindText(append_, 1, event.job_id);
  sqlite3_bind_int64(append_, 2, event.seq);
  // The bytes the subscribers received, stored as they are.
  sqlite3_bind_blob(append_, 3, event.bytes->data(),
                    static_cast<int>(event.bytes->size()), SQLITE_STATIC);
  const absl::string_view name = EventName(event.event);
  sqlite3_bind_text(append_, 4, name.data(), static_cast<int>(name.size()),
                    SQLITE_STATIC);
  const int rc = sqlite3_step(append_);
  if (rc == SQLITE_CONSTRAINT) {
    return absl::AlreadyExistsError(absl::StrCat(
        "job ", event.job_id, ": event seq ", event.seq, " already stored"));
  }
  if (rc != SQLITE_DONE) {
    return SqlError(
        absl::StrCat("append event ", event.seq, " of job ", event.job_id));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<events::EventRecord>> JobStore::Read(
    const std::string& job_id, int64_t from_seq, int64_t limit) {
  std::vector<events::EventRecord> events;
  if (limit <= 0) return events;
  absl::MutexLock lock(&mu_);
  StmtReset reset(read_);
  BindText(read_, 1, job_id);
  sqlite3_bind_int64(read_, 2, from_seq);
  sqlite3_bind_int64(read_, 3, limit);
  int rc;
  while ((rc = sqlite3_step(read_)) == SQLITE_ROW) {
    events::EventRecord event;
    event.job_id = job_id;
    event.seq = sqlite3_column_int64(read_, 0);
    event.bytes = std::make_shared<const std::string>(ColumnBytes(read_, 1));
    const unsigned char* name = sqlite3_column_text(read_, 2);
    absl::StatusOr<Event> kind = EventFromName(
        name != nullptr ? reinterpret_cast<const char*>(name) : "");
    if (!kind.ok()) {
      // Stored before the name had a column of its own: it is in the event.
      v1::Event parsed;
      if (!parsed.ParseFromString(*event.bytes) ||
          !(kind = EventFromName(parsed.name())).ok()) {
        return absl::DataLossError(absl::StrCat("job store ", path_, ": event ",
                                                event.seq, " of job ", job_id,
                                                " is unreadable"));
      }
    }
    event.event = *kind;
    events.push_back(std::move(event));
  }
  if (rc != SQLITE_DONE) {
    return SqlError(absl::StrCat("read events of job ", job_id));
  }
  return events;
}

absl::StatusOr<int64_t> JobStore::LastSeq(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  StmtReset reset(last_seq_);
  BindText(last_seq_, 1, job_id);
  if (sqlite3_step(last_seq_) != SQLITE_ROW) {
    return SqlError(absl::StrCat("last seq of job ", job_id));
  }
  return static_cast<int64_t>(sqlite3_column_int64(last_seq_, 0));
}

absl::StatusOr<int64_t> JobStore::SizeBytes() {
  absl::MutexLock lock(&mu_);
  return SizeBytesLocked();
}

absl::StatusOr<int64_t> JobStore::SizeBytesLocked() {
  YH_ASSIGN_OR_RETURN(const int64_t pages, PragmaLocked("page_count"));
  YH_ASSIGN_OR_RETURN(const int64_t page_size, PragmaLocked("page_size"));
  std::error_code ec;
  const auto wal = std::filesystem::file_size(path_ + "-wal", ec);
  return pages * page_size + (ec ? 0 : static_cast<int64_t>(wal));
}

absl::StatusOr<std::vector<std::string>> JobStore::SelectIdsLocked(
    const std::string& sql, const std::vector<int64_t>& params) {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &raw, nullptr) != SQLITE_OK) {
    return SqlError("select jobs to delete");
  }
  OwnedStmt stmt(raw);
  for (size_t i = 0; i < params.size(); ++i) {
    sqlite3_bind_int64(raw, static_cast<int>(i + 1), params[i]);
  }
  std::vector<std::string> ids;
  int rc;
  while ((rc = sqlite3_step(raw)) == SQLITE_ROW) {
    ids.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(raw, 0)),
                     static_cast<size_t>(sqlite3_column_bytes(raw, 0)));
  }
  if (rc != SQLITE_DONE) return SqlError("select jobs to delete");
  return ids;
}

absl::Status JobStore::DeleteJobsLocked(const std::vector<std::string>& ids,
                                        RetentionResult& result) {
  if (ids.empty()) return absl::OkStatus();
  YH_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  absl::Status status;
  for (const char* sql : {"DELETE FROM events WHERE job_id = ?1",
                          "DELETE FROM jobs WHERE id = ?1"}) {
    sqlite3_stmt* raw = nullptr;
    if (sqlite3_prepare_v2(db_, sql, -1, &raw, nullptr) != SQLITE_OK) {
      status = SqlError("delete jobs");
      break;
    }
    OwnedStmt stmt(raw);
    const bool events = absl::StrContains(sql, "events");
    for (const std::string& id : ids) {
      sqlite3_reset(raw);
      BindText(raw, 1, id);
      if (sqlite3_step(raw) != SQLITE_DONE) {
        status = SqlError(absl::StrCat("delete job ", id));
        break;
      }
      (events ? result.events_deleted : result.jobs_deleted) +=
          sqlite3_changes(db_);
    }
    if (!status.ok()) break;
  }
  if (!status.ok()) {
    Exec("ROLLBACK").IgnoreError();
    return status;
  }
  return Exec("COMMIT");
}

absl::StatusOr<RetentionResult> JobStore::DeleteExpired(
    const RetentionPolicy& policy, absl::Time now) {
  // Jobs are deleted a batch at a time, each batch one transaction, so that
  // other statements get the store between batches.
  constexpr int64_t kBatch = 256;
  const std::string finished =
      absl::StrCat("state IN (", static_cast<int>(JobState::kSucceeded), ",",
                   static_cast<int>(JobState::kFailed), ",",
                   static_cast<int>(JobState::kCancelled), ",",
                   static_cast<int>(JobState::kInterrupted), ")");
  auto cutoff = [now](absl::Duration age) -> int64_t {
    if (age <= absl::ZeroDuration() || age == absl::InfiniteDuration())
      return 0;  // nothing is too old
    return TimeKey(now - age);
  };
  RetentionResult result;
  // By age: direct jobs (Predict calls) sooner than the others.
  const int64_t direct_cutoff = cutoff(policy.direct_max_age);
  const int64_t any_cutoff = cutoff(policy.max_age);
  while (direct_cutoff > 0 || any_cutoff > 0) {
    std::vector<std::string> ids;
    {
      absl::MutexLock lock(&mu_);
      YH_ASSIGN_OR_RETURN(
          ids, SelectIdsLocked(
                   absl::StrCat("SELECT id FROM jobs WHERE ", finished,
                                " AND ((direct = 1 AND end_time < ?1) OR "
                                "end_time < ?2) LIMIT ?3"),
                   {direct_cutoff, any_cutoff, kBatch}));
      YH_RETURN_IF_ERROR(DeleteJobsLocked(ids, result));
    }
    if (static_cast<int64_t>(ids.size()) < kBatch) break;
  }
  // By count: the newest max_finished_jobs stay.
  while (policy.max_finished_jobs > 0) {
    std::vector<std::string> ids;
    {
      absl::MutexLock lock(&mu_);
      YH_ASSIGN_OR_RETURN(
          ids, SelectIdsLocked(
                   absl::StrCat("SELECT id FROM (SELECT id, end_time FROM jobs "
                                "WHERE ",
                                finished,
                                " ORDER BY end_time DESC, id DESC LIMIT -1 "
                                "OFFSET ?1) ORDER BY end_time LIMIT ?2"),
                   {policy.max_finished_jobs, kBatch}));
      YH_RETURN_IF_ERROR(DeleteJobsLocked(ids, result));
    }
    if (static_cast<int64_t>(ids.size()) < kBatch) break;
  }
  absl::MutexLock lock(&mu_);
  YH_RETURN_IF_ERROR(ReclaimLocked());
  // By size: the oldest finished jobs go while the store is too large.
  if (policy.max_bytes > 0) {
    YH_ASSIGN_OR_RETURN(int64_t size, SizeBytesLocked());
    while (size > policy.max_bytes) {
      YH_ASSIGN_OR_RETURN(
          std::vector<std::string> ids,
          SelectIdsLocked(absl::StrCat("SELECT id FROM jobs WHERE ", finished,
                                       " ORDER BY end_time, id LIMIT ?1"),
                          {kBatch / 8}));
      if (ids.empty()) break;  // only live jobs left
      YH_RETURN_IF_ERROR(DeleteJobsLocked(ids, result));
      YH_RETURN_IF_ERROR(ReclaimLocked());
      YH_ASSIGN_OR_RETURN(size, SizeBytesLocked());
    }
  }
  YH_ASSIGN_OR_RETURN(result.bytes, SizeBytesLocked());
  return result;
}

absl::Status JobStore::ReclaimLocked() {
  // Freed pages go back to the file system, and the WAL is emptied.
  YH_RETURN_IF_ERROR(Exec("PRAGMA incremental_vacuum"));
  return Exec("PRAGMA wal_checkpoint(TRUNCATE)");
}

}  // namespace yolohook::jobs
