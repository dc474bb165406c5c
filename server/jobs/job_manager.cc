#include "server/jobs/job_manager.h"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <optional>
#include <random>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "server/common/image_header.h"
#include "server/common/limits.h"
#include "server/common/status_macros.h"

namespace yolohook::jobs {
namespace {

using Args = std::map<std::string, std::string>;

constexpr char kRestartedError[] = "server restarted";
constexpr char kShutdownError[] = "server shut down";

std::string Elapsed(const JobRecord& record) {
  if (record.start_time == absl::InfinitePast()) return "";
  return absl::StrFormat(
      "%.1fs", absl::ToDoubleSeconds(record.end_time - record.start_time));
}

// What a finished job's log line adds to its state.
std::string FinishDetail(const JobRecord& record,
                         const std::string& cancel_reason) {
  const std::string elapsed = Elapsed(record);
  switch (record.state) {
    case JobState::kSucceeded: {
      std::string detail = elapsed.empty() ? "" : absl::StrCat(" in ", elapsed);
      for (const auto& [key, name] : {std::pair<const char*, const char*>{
                                          "metrics/mAP50-95(B)", "mAP50-95"},
                                      {"metrics/mAP50(B)", "mAP50"}}) {
        auto it = record.metrics.find(key);
        if (it != record.metrics.end())
          absl::StrAppend(&detail, ", ", name, " ",
                          absl::StrFormat("%.4g", it->second));
      }
      if (record.mode == Mode::kPredict) {
        size_t boxes = 0;
        for (const Result& r : record.results) boxes += r.boxes.size();
        if (!record.results.empty())
          absl::StrAppend(&detail, ", ", record.results.size(), " images, ",
                          boxes, " boxes");
      }
      for (const Artifact& artifact : record.artifacts) {
        if (record.mode == Mode::kExport)
          absl::StrAppend(&detail, ", ", artifact.path);
      }
      if (!record.save_dir.empty())
        absl::StrAppend(&detail, ", ", record.save_dir);
      return detail;
    }
    case JobState::kCancelled:
      return absl::StrCat(elapsed.empty() ? "" : " after ", elapsed, ": ",
                          cancel_reason.empty() ? record.error : cancel_reason);
    default:
      return absl::StrCat(elapsed.empty() ? "" : " after ", elapsed, ": ",
                          record.error);
  }
}

// How the bus is told a job ended: interrupted jobs that a later server
// resumes are not finished for their subscribers.
events::EventBus::JobEnd BusEnd(const JobRecord& record) {
  return record.state == JobState::kInterrupted && !record.direct
             ? events::EventBus::JobEnd::kInterrupted
             : events::EventBus::JobEnd::kFinished;
}

}  // namespace

absl::StatusOr<std::unique_ptr<JobManager>> JobManager::Create(
    Options options, JobStore* store, Runner* runner, events::EventBus* bus) {
  if (store == nullptr || runner == nullptr) {
    return absl::InvalidArgumentError(
        "job manager: needs a store and a runner");
  }
  if (options.concurrency < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "job manager: concurrency must be >= 1, got ", options.concurrency));
  }
  if (options.max_queued < 0 || options.max_direct < 0) {
    return absl::InvalidArgumentError(
        "job manager: max_queued and max_direct must be >= 0");
  }
  std::unique_ptr<JobManager> manager(
      new JobManager(std::move(options), store, runner, bus));
  YH_RETURN_IF_ERROR(manager->Recover());
  absl::MutexLock lock(&manager->shutdown_mu_);
  JobManager* self = manager.get();
  for (int i = 0; i < manager->options_.concurrency; ++i) {
    manager->workers_.emplace_back([self] { self->WorkerLoop(); });
  }
  const absl::Duration every = manager->options_.retention_interval;
  if (every > absl::ZeroDuration() && every != absl::InfiniteDuration()) {
    manager->retention_thread_ = std::thread([self] { self->RetentionLoop(); });
  }
  return manager;
}

JobManager::JobManager(Options options, JobStore* store, Runner* runner,
                       events::EventBus* bus)
    : options_(std::move(options)), store_(store), runner_(runner), bus_(bus) {
  std::random_device device;
  id_state_ = (static_cast<uint64_t>(device()) << 32) ^ device() ^
              static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
}

JobManager::~JobManager() { Shutdown(/*checkpoint=*/true); }

absl::Time JobManager::Now() const {
  return options_.now ? options_.now() : absl::Now();
}

void JobManager::Log(const std::string& id, absl::string_view text) const {
  // Every line of a multi-line message is a record of its own with the
  // prefix, so that the lines of concurrent jobs can be told apart.
  const std::string prefix = absl::StrCat("[", id, "] ");
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    Emit(absl::StrCat(prefix, line));
  }
}

void JobManager::Emit(absl::string_view record) const {
  if (options_.log) {
    options_.log(record);
  } else {
    // One write per line keeps concurrent jobs' lines whole.
    std::fputs(absl::StrCat(record, "\n").c_str(), stdout);
    std::fflush(stdout);
  }
}

void JobManager::LogState(const JobRecord& record,
                          absl::string_view detail) const {
  Log(record.id, absl::StrCat(ModeName(record.mode), " ",
                              JobStateName(record.state), detail));
}

absl::StatusOr<std::map<std::string, std::string>> JobManager::Validate(
    Mode mode, const std::map<std::string, std::string>& args,
    const std::map<std::string, std::string>& labels,
    const std::vector<engine::InputImage>& images) const {
  YH_RETURN_IF_ERROR(CheckArgs("args", args));
  YH_RETURN_IF_ERROR(CheckLabels("labels", labels));
  absl::StatusOr<Config> config = MakeConfig(mode, args);
  if (!config.ok()) {
    return absl::InvalidArgumentError(config.status().message());
  }
  std::map<std::string, std::string> confined = args;
  if (options_.paths != nullptr) {
    YH_ASSIGN_OR_RETURN(confined, options_.paths->ConfineArgs(mode, args));
  }
  if (!images.empty() && mode != Mode::kPredict) {
    return absl::InvalidArgumentError(absl::StrCat(
        "images: inline images are for predict jobs, not ", ModeName(mode)));
  }
  if (options_.max_images > 0 &&
      images.size() > static_cast<size_t>(options_.max_images)) {
    return absl::InvalidArgumentError(
        absl::StrCat("images: ", images.size(),
                     " images in one request, more than the limit of ",
                     options_.max_images, " (yolohookd --max_images)"));
  }
  for (size_t i = 0; i < images.size(); ++i) {
    YH_RETURN_IF_ERROR(CheckLength(absl::StrCat("images[", i, "].name"),
                                   images[i].name, kMaxNameBytes));
    const std::string what =
        absl::StrCat("images[", i, "] (", Quoted(images[i].name), ")");
    if (images[i].data.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": empty image data"));
    }
    YH_RETURN_IF_ERROR(
        CheckImageSize(what, images[i].data, options_.max_image_pixels));
  }
  return confined;
}

absl::Status JobManager::CheckFrame(int64_t index, absl::string_view name,
                                    absl::string_view data) const {
  YH_RETURN_IF_ERROR(CheckLength(absl::StrCat("frame ", index, " image.name"),
                                 name, kMaxNameBytes));
  return CheckImageSize(absl::StrCat("frame ", index, " (", Quoted(name), ")"),
                        data, options_.max_image_pixels);
}

std::string JobManager::NewIdLocked() {
  while (true) {
    // splitmix64: well mixed, and unique per state within the 48 bits used.
    id_state_ += 0x9E3779B97F4A7C15ULL;
    uint64_t z = id_state_;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    std::string id = absl::StrFormat("job-%012x", z & 0xFFFFFFFFFFFFULL);
    if (active_.count(id) != 0) continue;
    if (store_->Get(id).status().code() == absl::StatusCode::kNotFound) {
      return id;
    }
  }
}

void JobManager::PersistLocked(const JobRecord& record) {
  absl::Status status = store_->Put(record);
  if (!status.ok()) {
    Log(record.id,
        absl::StrCat("cannot store the job's record: ", status.ToString()));
  }
}

absl::Status JobManager::Recover() {
  YH_ASSIGN_OR_RETURN(std::vector<JobRecord> unfinished,
                      store_->MarkRunningInterrupted(Now()));
  for (const JobRecord& job : unfinished) {
    LogState(job, absl::StrCat(": ", kRestartedError));
  }
  if (!options_.resume_interrupted) return absl::OkStatus();
  // Jobs a clean shutdown interrupted are resumed as well. Jobs started by
  // Predict or PredictStream are not: their callers were told UNAVAILABLE.
  std::vector<JobRecord> candidates;
  ListQuery query;
  query.states = {JobState::kInterrupted};
  query.limit = JobStore::kMaxListLimit;
  do {
    YH_ASSIGN_OR_RETURN(ListPage page, store_->List(query));
    for (JobRecord& job : page.jobs) {
      if (!job.direct) candidates.push_back(std::move(job));
    }
    query.page_token = page.next_page_token;
  } while (!query.page_token.empty());
  // Oldest first, so that the queue keeps submission order.
  std::reverse(candidates.begin(), candidates.end());

  for (JobRecord& job : candidates) {
    const std::string reason = PrepareResume(job);
    job.error.clear();
    job.start_time = absl::InfinitePast();
    job.end_time = absl::InfinitePast();
    ++job.attempt;
    job.Enter(JobState::kQueued, Now(), reason);
    auto active = std::make_shared<Active>();
    active->record = job;
    {
      absl::MutexLock lock(&mu_);
      YH_RETURN_IF_ERROR(store_->Put(job));
      active_[job.id] = active;
      ++queued_;
    }
    if (bus_ != nullptr)
      bus_->StartJob(job.id, job.labels, job.args, job.attempt);
    LogState(job, absl::StrCat(", attempt ", job.attempt, ", ", reason));
    absl::MutexLock lock(&mu_);
    queue_.push_back(job.id);
  }
  return absl::OkStatus();
}

std::string JobManager::PrepareResume(JobRecord& job) {
  if (job.mode != Mode::kTrain || job.save_dir.empty()) return "running again";
  const std::filesystem::path save_dir(job.save_dir);
  const std::string last = (save_dir / "weights" / "last.pt").string();
  std::error_code ec;
  if (std::filesystem::is_regular_file(last, ec)) {
    job.args["resume"] = last;
    return absl::StrCat("resuming from ", last);
  }
  // No epoch finished: train again from the start, in the same run
  // directory.
  job.args["project"] = save_dir.parent_path().string();
  job.args["name"] = save_dir.filename().string();
  job.args["exist_ok"] = "true";
  return absl::StrCat("training again from the start in ", job.save_dir);
}

absl::StatusOr<JobRecord> JobManager::Submit(
    Mode mode, const std::map<std::string, std::string>& args,
    const std::map<std::string, std::string>& labels,
    std::vector<engine::InputImage> images) {
  YH_ASSIGN_OR_RETURN(const Args checked, Validate(mode, args, labels, images));
  auto active = std::make_shared<Active>();
  JobRecord record;
  // among the jobs waiting, this one included
  int position = 0;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) {
      return absl::UnavailableError("the server is shutting down");
    }
    if (queued_ >= options_.max_queued) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the job queue is full (", options_.max_queued,
                       " jobs waiting, the limit set by yolohookd "
                       "--max_queued); retry when a job has started"));
    }
    record.id = NewIdLocked();
    record.mode = mode;
    record.args = checked;
    record.labels = labels;
    record.create_time = Now();
    record.attempt = 1;
    record.Enter(JobState::kQueued, record.create_time);
    YH_RETURN_IF_ERROR(store_->Put(record));
    active->record = record;
    active->images = std::move(images);
    active_[record.id] = active;
    ++queued_;
    position = queued_;
  }
  // The bus learns of the job before any worker can publish its events.
  // Logged before a worker can take it, so that QUEUED precedes RUNNING.
  LogState(record, absl::StrCat(", position ", position));
  if (bus_ != nullptr) bus_->StartJob(record.id, labels, checked, 1);
  absl::MutexLock lock(&mu_);
  auto it = active_.find(record.id);
  // Cancel or Shutdown may have ended it meanwhile.
  if (it != active_.end() && it->second->record.state == JobState::kQueued) {
    queue_.push_back(record.id);
  }
  return record;
}

absl::StatusOr<JobRecord> JobManager::RunNow(
    Mode mode, const std::map<std::string, std::string>& args,
    const std::map<std::string, std::string>& labels,
    std::vector<engine::InputImage> images, DoneCallback done) {
  YH_ASSIGN_OR_RETURN(const Args checked, Validate(mode, args, labels, images));
  auto active = std::make_shared<Active>();
  active->images = std::move(images);
  active->done = std::move(done);
  return StartDirect(std::move(active), mode, checked, labels);
}

absl::StatusOr<JobRecord> JobManager::RunStream(
    const std::map<std::string, std::string>& args,
    const std::map<std::string, std::string>& labels,
    engine::FrameStream stream, DoneCallback done) {
  if (!stream)
    return absl::InvalidArgumentError("the frame stream has no source");
  YH_ASSIGN_OR_RETURN(const Args checked,
                      Validate(Mode::kPredict, args, labels, {}));
  auto active = std::make_shared<Active>();
  active->stream = std::move(stream);
  active->done = std::move(done);
  return StartDirect(std::move(active), Mode::kPredict, checked, labels);
}

absl::StatusOr<JobRecord> JobManager::StartDirect(
    std::shared_ptr<Active> active, Mode mode,
    const std::map<std::string, std::string>& args,
    const std::map<std::string, std::string>& labels) {
  JobRecord record;
  std::vector<std::thread> finished;
  {
    absl::MutexLock lock(&mu_);
    finished = ReapDirectLocked();
    if (shutting_down_) {
      return absl::UnavailableError("the server is shutting down");
    }
    if (direct_ >= options_.max_direct) {
      return absl::ResourceExhaustedError(
          absl::StrCat(options_.max_direct,
                       " immediate jobs are running; retry when one ends"));
    }
    record.id = NewIdLocked();
    record.mode = mode;
    record.args = args;
    record.labels = labels;
    record.direct = true;
    record.create_time = Now();
    record.start_time = record.create_time;
    record.attempt = 1;
    record.Enter(JobState::kRunning, record.start_time);
    YH_RETURN_IF_ERROR(store_->Put(record));
    active->record = record;
    active_[record.id] = active;
    ++direct_;
  }
  for (std::thread& thread : finished) thread.join();
  LogState(record, "");
  if (bus_ != nullptr) bus_->StartJob(record.id, labels, args);
  absl::MutexLock lock(&mu_);
  direct_threads_[record.id].thread = std::thread([this, active] {
    Execute(active);
    absl::MutexLock lock(&mu_);
    --direct_;
    direct_threads_[active->record.id].finished = true;
  });
  return record;
}

std::vector<std::thread> JobManager::ReapDirectLocked() {
  std::vector<std::thread> finished;
  for (auto it = direct_threads_.begin(); it != direct_threads_.end();) {
    if (it->second.finished) {
      finished.push_back(std::move(it->second.thread));
      it = direct_threads_.erase(it);
    } else {
      ++it;
    }
  }
  return finished;
}

void JobManager::WorkerLoop() {
  while (true) {
    std::shared_ptr<Active> job;
    JobRecord running;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](JobManager* self) ABSL_NO_THREAD_SAFETY_ANALYSIS {
            return self->shutting_down_ || !self->queue_.empty();
          },
          this));
      if (queue_.empty()) return;  // shutting down
      const std::string id = queue_.front();
      queue_.pop_front();
      auto it = active_.find(id);
      if (it == active_.end() ||
          it->second->record.state != JobState::kQueued) {
        continue;  // cancelled while queued
      }
      job = it->second;
      --queued_;
      job->record.start_time = Now();
      job->record.Enter(JobState::kRunning, job->record.start_time);
      PersistLocked(job->record);
      running = job->record;
    }
    LogState(running, "");
    Execute(job);
  }
}

void JobManager::Execute(const std::shared_ptr<Active>& job) {
  JobRecord work;
  {
    absl::MutexLock lock(&mu_);
    work = job->record;
  }
  const std::string id = work.id;

  Callbacks callbacks;
  // The run directory is persisted as soon as the engine reports it, so that a
  // restart finds weights/last.pt of a train job that was running.
  bool save_dir_known = false;
  callbacks.AddForAll([this, job, &save_dir_known](EventContext& ctx) {
    if (save_dir_known) return;
    std::string save_dir;
    if (ctx.trainer != nullptr) save_dir = ctx.trainer->save_dir;
    if (ctx.validator != nullptr) save_dir = ctx.validator->save_dir;
    if (ctx.predictor != nullptr) save_dir = ctx.predictor->save_dir;
    if (save_dir.empty()) return;
    save_dir_known = true;
    absl::MutexLock lock(&mu_);
    job->record.save_dir = save_dir;
    PersistLocked(job->record);
  });
  if (bus_ != nullptr) callbacks.AddForAll(bus_->CallbackFor(id));

  engine::RunOptions run;
  run.callbacks = &callbacks;
  run.cancel = &job->cancel;
  run.log = [this, id](absl::string_view line) { Log(id, line); };
  run.images = job->images;
  run.stream = job->stream;
  const Mode mode = work.mode;
  if (options_.paths != nullptr) {
    run.check_args = [paths = options_.paths,
                      mode](const std::map<std::string, std::string>& args) {
      return paths->ConfineArgs(mode, args).status();
    };
  }

  absl::Status status;
  try {
    // Paths were checked at submission; a link or file may have changed
    // since, so they are checked again where they are used.
    status = run.check_args ? run.check_args(work.args) : absl::OkStatus();
    if (!status.ok()) {
      status = absl::Status(
          status.code(),
          absl::StrCat("the job's paths no longer pass the allowed roots "
                       "(checked again before it ran): ",
                       status.message()));
    } else {
      status = runner_->Run(work, run);
    }
  } catch (const std::exception& e) {
    status = absl::InternalError(absl::StrCat("the job crashed: ", e.what()));
  } catch (...) {
    status = absl::InternalError("the job crashed with an unknown exception");
  }
  const int64_t last_seq = bus_ != nullptr ? bus_->LastSeq(id) : work.last_seq;

  JobRecord final_record;
  std::string cancel_reason;
  {
    absl::MutexLock lock(&mu_);
    cancel_reason = job->interrupt ? "" : job->cancel_reason;
    JobRecord& record = job->record;
    if (!work.save_dir.empty()) record.save_dir = work.save_dir;
    record.metrics = work.metrics;
    record.results = work.results;
    record.artifacts = work.artifacts;
    JobState state;
    std::string why;
    if (status.ok()) {
      state = JobState::kSucceeded;
      record.error.clear();
    } else if (job->cancel.load() &&
               status.code() == absl::StatusCode::kCancelled) {
      state = job->interrupt ? JobState::kInterrupted : JobState::kCancelled;
      record.error = job->interrupt ? kShutdownError : "cancelled";
      why = job->interrupt ? kShutdownError : job->cancel_reason;
    } else {
      state = JobState::kFailed;
      record.error = std::string(status.message());
      why = record.error;
    }
    record.end_time = Now();
    record.Enter(state, record.end_time, std::move(why));
    record.last_seq = last_seq;
    PersistLocked(record);
    final_record = record;
  }
  LogState(final_record, FinishDetail(final_record, cancel_reason));
  if (bus_ != nullptr) bus_->FinishJob(id, BusEnd(final_record));
  {
    // Leaving active_ releases Wait: everything about the job is final now.
    absl::MutexLock lock(&mu_);
    active_.erase(id);
  }
  if (job->done) job->done(final_record);
}

absl::StatusOr<JobRecord> JobManager::Get(const std::string& id) {
  {
    absl::MutexLock lock(&mu_);
    auto it = active_.find(id);
    if (it != active_.end()) {
      JobRecord record = it->second->record;
      if (bus_ != nullptr && record.state == JobState::kRunning) {
        // The bus never calls into the manager, so querying it here is safe.
        record.last_seq = bus_->LastSeq(id);
      }
      return record;
    }
  }
  return store_->Get(id);
}

absl::StatusOr<ListPage> JobManager::List(const ListQuery& query) {
  YH_ASSIGN_OR_RETURN(ListPage page, store_->List(query));
  // A running job's record is stored when its state changes, not at each
  // event: its last seq so far is the bus's, as in Get.
  if (bus_ != nullptr) {
    for (JobRecord& job : page.jobs) {
      if (job.state == JobState::kRunning)
        job.last_seq = std::max(job.last_seq, bus_->LastSeq(job.id));
    }
  }
  return page;
}

absl::StatusOr<JobRecord> JobManager::Cancel(const std::string& id,
                                             const std::string& reason) {
  JobRecord cancelled;
  JobRecord running;
  std::function<void()> interrupt;  // a frame stream's
  std::optional<JobState> finished_state;
  {
    absl::MutexLock lock(&mu_);
    auto it = active_.find(id);
    if (it != active_.end()) {
      Active& job = *it->second;
      switch (job.record.state) {
        case JobState::kRunning:
          if (!job.cancel.load())
            job.cancel_reason = reason.empty() ? "cancelled" : reason;
          job.cancel.store(true);
          running = job.record;
          interrupt = job.stream.interrupt;
          break;
        case JobState::kQueued:
          job.record.error = "cancelled before it started";
          job.record.end_time = Now();
          job.record.Enter(JobState::kCancelled, job.record.end_time,
                           reason.empty() ? job.record.error : reason);
          PersistLocked(job.record);
          cancelled = job.record;
          --queued_;
          active_.erase(it);
          break;
        default:  // ended a moment ago, not yet released
          finished_state = job.record.state;
          break;
      }
    }
  }
  if (!running.id.empty()) {
    // The engine stops at its next batch; a frame stream waiting for its
    // caller is woken so that it does not wait for the next frame.
    if (interrupt) interrupt();
    return running;
  }
  if (cancelled.id.empty()) {
    if (!finished_state) {
      YH_ASSIGN_OR_RETURN(JobRecord finished, store_->Get(id));
      finished_state = finished.state;
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", id, " already finished (", JobStateName(*finished_state), ")"));
  }
  LogState(cancelled,
           absl::StrCat(": before it started",
                        reason.empty() ? "" : absl::StrCat(" (", reason, ")")));
  if (bus_ != nullptr) bus_->FinishJob(id);
  return cancelled;
}

absl::StatusOr<JobRecord> JobManager::Wait(const std::string& id,
                                           absl::Duration timeout) {
  {
    absl::MutexLock lock(&mu_);
    struct Finished {
      JobManager* self;
      const std::string* id;
      bool operator()() const ABSL_NO_THREAD_SAFETY_ANALYSIS {
        return self->active_.count(*id) == 0;
      }
    } finished{this, &id};
    if (!mu_.AwaitWithTimeout(absl::Condition(&finished), timeout)) {
      return absl::DeadlineExceededError(absl::StrCat(
          "job ", id, " is still ", JobStateName(active_[id]->record.state),
          " after ", absl::FormatDuration(timeout)));
    }
  }
  return store_->Get(id);
}

absl::StatusOr<RetentionResult> JobManager::ApplyRetention() {
  YH_ASSIGN_OR_RETURN(RetentionResult result,
                      store_->DeleteExpired(options_.retention, Now()));
  if (result.jobs_deleted > 0) {
    Emit(absl::StrFormat(
        "retention: deleted %d finished jobs and %d events; the store takes "
        "%.1f MB",
        result.jobs_deleted, result.events_deleted,
        static_cast<double>(result.bytes) / (1 << 20)));
  }
  return result;
}

void JobManager::RetentionLoop() {
  while (true) {
    absl::StatusOr<RetentionResult> applied = ApplyRetention();
    if (!applied.ok()) {
      Emit(absl::StrCat("retention failed: ", applied.status().message()));
    }
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&shutting_down_),
                         options_.retention_interval);
    if (shutting_down_) return;
  }
}

void JobManager::Shutdown(bool checkpoint) {
  absl::MutexLock shutdown_lock(&shutdown_mu_);
  std::vector<std::string> interrupted;
  std::vector<JobRecord> interrupted_records;
  std::vector<std::thread> direct;
  std::vector<std::function<void()>> interrupts;  // blocked frame streams
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
    for (auto it = active_.begin(); it != active_.end();) {
      Active& job = *it->second;
      if (job.record.state == JobState::kQueued) {
        job.record.error = kShutdownError;
        job.record.end_time = Now();
        job.record.Enter(JobState::kInterrupted, job.record.end_time,
                         kShutdownError);
        PersistLocked(job.record);
        interrupted.push_back(job.record.id);
        interrupted_records.push_back(job.record);
        it = active_.erase(it);
        continue;
      }
      if (checkpoint) {
        job.interrupt = true;
        job.cancel.store(true);
        if (job.stream.interrupt) interrupts.push_back(job.stream.interrupt);
      }
      ++it;
    }
    queue_.clear();
    queued_ = 0;
  }
  for (const JobRecord& record : interrupted_records) {
    LogState(record, absl::StrCat(": ", kShutdownError, " before it started"));
  }
  for (const std::function<void()>& interrupt : interrupts) interrupt();
  if (bus_ != nullptr) {
    for (const std::string& id : interrupted) {
      bus_->FinishJob(id, events::EventBus::JobEnd::kInterrupted);
    }
  }
  for (std::thread& worker : workers_) worker.join();
  workers_.clear();
  if (retention_thread_.joinable()) retention_thread_.join();
  // RunNow threads end on their own; wait for each, then join it.
  {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](JobManager* self)
             ABSL_NO_THREAD_SAFETY_ANALYSIS { return self->direct_ == 0; },
        this));
    for (auto& [id, thread] : direct_threads_) {
      direct.push_back(std::move(thread.thread));
    }
    direct_threads_.clear();
  }
  for (std::thread& thread : direct) thread.join();
}

}  // namespace yolohook::jobs
