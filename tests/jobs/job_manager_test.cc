#include "server/jobs/job_manager.h"

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/events/event_bus.h"
#include "server/jobs/job_store.h"
#include "server/jobs/paths.h"
#include "tests/testing/fake_runner.h"
#include "tests/testing/temp_dir.h"

namespace yolohook::jobs {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;
using ::testing::StartsWith;
using ::testing::UnorderedElementsAre;

class JobManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    OpenStore();
    runner_ = std::make_unique<yolohook::testing::FakeRunner>(dir_.Sub("runs"));
  }

  // The manager logs into log_ until it is gone.
  void TearDown() override {
    if (manager_ != nullptr) manager_->Shutdown(/*checkpoint=*/true);
    manager_.reset();
  }

  void OpenStore() {
    absl::StatusOr<std::unique_ptr<JobStore>> store =
        JobStore::Open(dir_.Sub("jobs.db"));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    events::EventBus::Options bus_options;
    bus_options.log = store_.get();
    bus_ = std::make_unique<events::EventBus>(std::move(bus_options));
  }

  // Stops the manager and the bus and closes the store, as a server exit does.
  void StopServer(bool checkpoint) {
    manager_->Shutdown(checkpoint);
    manager_.reset();
    bus_.reset();
    store_.reset();
  }

  void StartManager(JobManager::Options options = {}) {
    options.log = [this](absl::string_view line) {
      absl::MutexLock lock(&log_mu_);
      log_.emplace_back(line);
    };
    absl::StatusOr<std::unique_ptr<JobManager>> manager = JobManager::Create(
        std::move(options), store_.get(), runner_.get(), bus_.get());
    ASSERT_TRUE(manager.ok()) << manager.status();
    manager_ = std::move(*manager);
  }

  JobRecord SubmitOrDie(Mode mode, std::map<std::string, std::string> args,
                        std::map<std::string, std::string> labels = {}) {
    absl::StatusOr<JobRecord> job = manager_->Submit(mode, args, labels);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? *job : JobRecord{};
  }

  JobRecord WaitOrDie(const std::string& id) {
    absl::StatusOr<JobRecord> job = manager_->Wait(id);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? *job : JobRecord{};
  }

  std::vector<std::string> Log() {
    absl::MutexLock lock(&log_mu_);
    return log_;
  }

  yolohook::testing::TempDir dir_;
  std::unique_ptr<JobStore> store_;
  std::unique_ptr<events::EventBus> bus_;
  std::unique_ptr<yolohook::testing::FakeRunner> runner_;
  std::unique_ptr<JobManager> manager_;
  absl::Mutex log_mu_;
  std::vector<std::string> log_ ABSL_GUARDED_BY(log_mu_);
};

TEST_F(JobManagerTest, SubmittedJobRunsToSucceededWithRunnerResults) {
  StartManager();
  const JobRecord queued =
      SubmitOrDie(Mode::kTrain, {{"epochs", "1"}}, {{"team", "x"}});
  EXPECT_EQ(queued.state, JobState::kQueued);
  EXPECT_THAT(queued.id, StartsWith("job-"));
  EXPECT_EQ(queued.id.size(), 16u);
  EXPECT_NE(queued.create_time, absl::InfinitePast());

  const JobRecord done = WaitOrDie(queued.id);
  EXPECT_EQ(done.state, JobState::kSucceeded);
  EXPECT_THAT(done.error, IsEmpty());
  EXPECT_THAT(done.metrics,
              UnorderedElementsAre(Pair("epochs_completed", 1),
                                   Pair("metrics/mAP50(B)", 0.1)));
  EXPECT_EQ(done.save_dir, dir_.Sub("runs/" + queued.id));
  ASSERT_EQ(done.artifacts.size(), 2u);
  EXPECT_EQ(done.artifacts[1].kind, "weights_last");
  EXPECT_THAT(done.args, ElementsAre(Pair("epochs", "1")));
  EXPECT_THAT(done.labels, ElementsAre(Pair("team", "x")));
  EXPECT_NE(done.start_time, absl::InfinitePast());
  EXPECT_GE(done.end_time, done.start_time);
  EXPECT_GE(done.start_time, done.create_time);

  // The fake fired a one-epoch run's events through the bus, which stored
  // them.
  const int fired = yolohook::testing::FakeRunner::TrainEvents(1);
  EXPECT_EQ(done.last_seq, fired);
  absl::StatusOr<std::vector<v1::Event>> events =
      store_->ReadEvents(queued.id, 1, 100);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), static_cast<size_t>(fired));
  EXPECT_EQ(events->front().name(), "on_pretrain_routine_start");
  EXPECT_EQ(events->back().name(), "teardown");
  EXPECT_EQ(bus_->LastSeq(queued.id), fired);

  // Get and List read the same record.
  EXPECT_EQ(manager_->Get(queued.id)->state, JobState::kSucceeded);
  absl::StatusOr<ListPage> page = manager_->List({});
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->jobs.size(), 1u);
  EXPECT_EQ(page->jobs[0].id, queued.id);
  EXPECT_EQ(manager_->Get("job-unknown").status().code(),
            absl::StatusCode::kNotFound);

  // Its log lines carry its id.
  bool found = false;
  for (const std::string& line : Log()) {
    if (absl::StartsWith(line,
                         absl::StrCat("[", queued.id, "] train SUCCEEDED in ")))
      found = true;
  }
  EXPECT_TRUE(found);
}

TEST_F(JobManagerTest, BadArgumentsAreInvalidArgumentNamingTheKey) {
  StartManager();
  absl::StatusOr<JobRecord> bad_value =
      manager_->Submit(Mode::kTrain, {{"epochs", "many"}}, {});
  EXPECT_EQ(bad_value.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_value.status().message(), HasSubstr("epochs"));

  absl::StatusOr<JobRecord> unknown =
      manager_->Submit(Mode::kTrain, {{"epochz", "3"}}, {});
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(), HasSubstr("epochz"));

  EXPECT_THAT(manager_->List({})->jobs, IsEmpty());
  EXPECT_THAT(runner_->started(), IsEmpty());
}

TEST_F(JobManagerTest, InlineImagesAreChecked) {
  StartManager();
  absl::StatusOr<JobRecord> empty = manager_->Submit(
      Mode::kPredict, {}, {}, {{"ok.png", "bytes"}, {"empty.png", ""}});
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(empty.status().message(), HasSubstr("empty.png"));

  absl::StatusOr<JobRecord> wrong_mode =
      manager_->Submit(Mode::kTrain, {}, {}, {{"a.png", "bytes"}});
  EXPECT_EQ(wrong_mode.status().code(), absl::StatusCode::kInvalidArgument);

  absl::StatusOr<JobRecord> ok =
      manager_->Submit(Mode::kPredict, {}, {}, {{"a.png", "bytes"}});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(WaitOrDie(ok->id).state, JobState::kSucceeded);
  EXPECT_EQ(runner_->images(ok->id), 1u);
}

TEST_F(JobManagerTest, QueuedJobsRunInSubmissionOrderOneAtATime) {
  StartManager();
  const JobRecord first = SubmitOrDie(Mode::kTrain, {{"name", "block"}});
  runner_->AwaitStarted(1);
  const JobRecord second = SubmitOrDie(Mode::kVal, {});
  const JobRecord third = SubmitOrDie(Mode::kExport, {});
  EXPECT_EQ(manager_->Get(first.id)->state, JobState::kRunning);
  EXPECT_EQ(manager_->Get(second.id)->state, JobState::kQueued);
  EXPECT_EQ(manager_->Get(third.id)->state, JobState::kQueued);
  runner_->Release("block");
  EXPECT_EQ(WaitOrDie(third.id).state, JobState::kSucceeded);
  EXPECT_EQ(WaitOrDie(first.id).state, JobState::kSucceeded);
  EXPECT_THAT(runner_->started(), ElementsAre(first.id, second.id, third.id));
  EXPECT_EQ(runner_->max_running(), 1);
}

TEST_F(JobManagerTest, ConcurrencyRunsJobsSideBySide) {
  JobManager::Options options;
  options.concurrency = 2;
  StartManager(options);
  const JobRecord a = SubmitOrDie(Mode::kTrain, {{"name", "block-a"}});
  const JobRecord b = SubmitOrDie(Mode::kTrain, {{"name", "block-b"}});
  // Both block until released: this returns only if both run at once.
  runner_->AwaitStarted(2);
  EXPECT_EQ(runner_->max_running(), 2);
  runner_->ReleaseAll();
  EXPECT_EQ(WaitOrDie(a.id).state, JobState::kSucceeded);
  EXPECT_EQ(WaitOrDie(b.id).state, JobState::kSucceeded);
}

TEST_F(JobManagerTest, MaxQueuedRejectsWithResourceExhausted) {
  JobManager::Options options;
  options.max_queued = 1;
  StartManager(options);
  const JobRecord running = SubmitOrDie(Mode::kTrain, {{"name", "block"}});
  runner_->AwaitStarted(1);
  const JobRecord queued = SubmitOrDie(Mode::kVal, {});
  absl::StatusOr<JobRecord> rejected = manager_->Submit(Mode::kVal, {}, {});
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(rejected.status().message()),
              HasSubstr("--max_queued"));
  runner_->ReleaseAll();
  EXPECT_EQ(WaitOrDie(queued.id).state, JobState::kSucceeded);
  // With the queue drained there is room again.
  absl::StatusOr<JobRecord> accepted = manager_->Submit(Mode::kVal, {}, {});
  ASSERT_TRUE(accepted.ok()) << accepted.status();
  EXPECT_EQ(WaitOrDie(accepted->id).state, JobState::kSucceeded);
  EXPECT_EQ(WaitOrDie(running.id).state, JobState::kSucceeded);
}

TEST_F(JobManagerTest, CancelQueuedJobEndsItAtOnce) {
  StartManager();
  const JobRecord running = SubmitOrDie(Mode::kTrain, {{"name", "block"}});
  runner_->AwaitStarted(1);
  const JobRecord queued = SubmitOrDie(Mode::kVal, {});
  absl::StatusOr<JobRecord> cancelled = manager_->Cancel(queued.id);
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state, JobState::kCancelled);
  EXPECT_NE(cancelled->end_time, absl::InfinitePast());
  EXPECT_EQ(store_->Get(queued.id)->state, JobState::kCancelled);
  EXPECT_EQ(WaitOrDie(queued.id).state, JobState::kCancelled);

  runner_->ReleaseAll();
  EXPECT_EQ(WaitOrDie(running.id).state, JobState::kSucceeded);
  EXPECT_THAT(runner_->started(), ElementsAre(running.id));

  absl::StatusOr<JobRecord> again = manager_->Cancel(running.id);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(again.status().message(), HasSubstr("SUCCEEDED"));
  EXPECT_EQ(manager_->Cancel("job-unknown").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(JobManagerTest, CancelRunningJobStopsTheRunner) {
  StartManager();
  const JobRecord job = SubmitOrDie(Mode::kTrain, {{"name", "block"}});
  runner_->AwaitStarted(1);
  absl::StatusOr<JobRecord> cancelling = manager_->Cancel(job.id);
  ASSERT_TRUE(cancelling.ok()) << cancelling.status();
  EXPECT_EQ(cancelling->state, JobState::kRunning);
  const JobRecord done = WaitOrDie(job.id);
  EXPECT_EQ(done.state, JobState::kCancelled);
  EXPECT_EQ(done.error, "cancelled");
  EXPECT_EQ(done.last_seq, 1);  // its first event only
}

TEST_F(JobManagerTest, FailingRunnerFailsTheJobWithItsMessage) {
  StartManager();
  const JobRecord failing = SubmitOrDie(Mode::kTrain, {{"name", "fail"}});
  const JobRecord next = SubmitOrDie(Mode::kTrain, {});
  const JobRecord failed = WaitOrDie(failing.id);
  EXPECT_EQ(failed.state, JobState::kFailed);
  EXPECT_EQ(failed.error, "data: dataset exploded");
  EXPECT_NE(failed.end_time, absl::InfinitePast());
  // The manager goes on with the next job.
  EXPECT_EQ(WaitOrDie(next.id).state, JobState::kSucceeded);
}

TEST_F(JobManagerTest, WaitTimesOutOnARunningJob) {
  StartManager();
  const JobRecord job = SubmitOrDie(Mode::kTrain, {{"name", "block"}});
  runner_->AwaitStarted(1);
  absl::StatusOr<JobRecord> waited =
      manager_->Wait(job.id, absl::ZeroDuration());
  EXPECT_EQ(waited.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(waited.status().message(), HasSubstr("RUNNING"));
  runner_->ReleaseAll();
  EXPECT_EQ(WaitOrDie(job.id).state, JobState::kSucceeded);
  EXPECT_EQ(manager_->Wait("job-unknown").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(JobManagerTest, RunNowBypassesTheQueue) {
  StartManager();  // one runner thread, kept busy below
  const JobRecord blocking = SubmitOrDie(Mode::kTrain, {{"name", "block"}});
  runner_->AwaitStarted(1);

  absl::Notification done;
  absl::StatusOr<JobRecord> final_record;
  absl::StatusOr<JobRecord> started = manager_->RunNow(
      Mode::kPredict, {{"imgsz", "64"}}, {{"rpc", "predict"}},
      {{"a.png", "bytes"}}, [&](absl::StatusOr<JobRecord> record) {
        final_record = std::move(record);
        done.Notify();
      });
  ASSERT_TRUE(started.ok()) << started.status();
  EXPECT_EQ(started->state, JobState::kRunning);
  done.WaitForNotification();
  ASSERT_TRUE(final_record.ok()) << final_record.status();
  EXPECT_EQ(final_record->id, started->id);
  EXPECT_EQ(final_record->state, JobState::kSucceeded);
  // on_predict_start, the image's three events, on_predict_end.
  EXPECT_EQ(final_record->last_seq, 5);
  EXPECT_EQ(runner_->images(started->id), 1u);
  EXPECT_EQ(store_->Get(started->id)->state, JobState::kSucceeded);

  absl::StatusOr<JobRecord> bad =
      manager_->RunNow(Mode::kPredict, {{"conf", "x"}}, {}, {}, nullptr);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  runner_->ReleaseAll();
  EXPECT_EQ(WaitOrDie(blocking.id).state, JobState::kSucceeded);
}

TEST_F(JobManagerTest, ShutdownInterruptsQueuedAndRunningJobs) {
  StartManager();
  const JobRecord running = SubmitOrDie(Mode::kVal, {{"name", "block"}});
  runner_->AwaitStarted(1);
  const JobRecord queued = SubmitOrDie(Mode::kVal, {});
  manager_->Shutdown(/*checkpoint=*/true);
  const JobRecord r = *store_->Get(running.id);
  const JobRecord q = *store_->Get(queued.id);
  EXPECT_EQ(r.state, JobState::kInterrupted);
  EXPECT_EQ(q.state, JobState::kInterrupted);
  EXPECT_EQ(r.error, "server shut down");
  EXPECT_THAT(runner_->started(), ElementsAre(running.id));
  EXPECT_EQ(manager_->Submit(Mode::kVal, {}, {}).status().code(),
            absl::StatusCode::kUnavailable);
  manager_->Shutdown(true);  // idempotent
}

TEST_F(JobManagerTest, ShutdownWithoutCheckpointLetsRunningJobsFinish) {
  StartManager();
  const JobRecord running = SubmitOrDie(Mode::kVal, {{"name", "block"}});
  runner_->AwaitStarted(1);
  runner_->ReleaseAll();
  manager_->Shutdown(/*checkpoint=*/false);
  EXPECT_EQ(store_->Get(running.id)->state, JobState::kSucceeded);
}

TEST_F(JobManagerTest, RestartResumesTrainJobAfterShutdown) {
  StartManager();
  const JobRecord train = SubmitOrDie(Mode::kTrain, {{"name", "block"}});
  runner_->AwaitStarted(1);
  // The manager stored the run directory as soon as the engine reported it;
  // give the run a last.pt as the trainer would after an epoch.
  const std::string save_dir = dir_.Sub("runs/" + train.id);
  EXPECT_EQ(store_->Get(train.id)->save_dir, save_dir);
  std::filesystem::create_directories(save_dir + "/weights");
  std::ofstream(save_dir + "/weights/last.pt") << "weights";
  StopServer(/*checkpoint=*/true);

  OpenStore();
  EXPECT_EQ(store_->Get(train.id)->state, JobState::kInterrupted);
  runner_->ReleaseAll();
  StartManager();
  const JobRecord resumed = WaitOrDie(train.id);
  EXPECT_EQ(resumed.state, JobState::kSucceeded);
  EXPECT_THAT(
      runner_->args(train.id),
      UnorderedElementsAre(Pair("name", "block"),
                           Pair("resume", save_dir + "/weights/last.pt")));
  // The resumed run's events follow the first run's first event.
  const int fired = 1 + yolohook::testing::FakeRunner::TrainEvents(1);
  EXPECT_EQ(resumed.last_seq, fired);
  EXPECT_EQ(store_->ReadEvents(train.id, 1, 100)->size(),
            static_cast<size_t>(fired));
}

TEST_F(JobManagerTest, RestartAfterCrashInterruptsUnfinishedJobs) {
  // What a server that died left behind: a running train job with last.pt, a
  // running val job and a queued train job that never started.
  const std::string save_dir = dir_.Sub("runs/old");
  std::filesystem::create_directories(save_dir + "/weights");
  std::ofstream(save_dir + "/weights/last.pt") << "weights";
  JobRecord train;
  train.id = "job-00000000000a";
  train.mode = Mode::kTrain;
  train.state = JobState::kRunning;
  train.args = {{"epochs", "3"}};
  train.create_time = absl::FromUnixSeconds(100);
  train.save_dir = save_dir;
  JobRecord val = train;
  val.id = "job-00000000000b";
  val.mode = Mode::kVal;
  JobRecord queued = train;
  queued.id = "job-00000000000c";
  queued.state = JobState::kQueued;
  queued.save_dir.clear();
  for (const JobRecord& job : {train, val, queued}) {
    ASSERT_TRUE(store_->Put(job).ok());
  }

  StartManager();
  // Every interrupted job runs again as its next attempt, in submission
  // order: the train job from its last.pt, the others from the start.
  for (const std::string& id : {train.id, val.id, queued.id}) {
    const JobRecord job = WaitOrDie(id);
    EXPECT_EQ(job.state, JobState::kSucceeded) << id;
    EXPECT_EQ(job.attempt, 1) << id;  // the dead server's records had none
    ASSERT_GE(job.history.size(), 4u) << id;
    const StateChange& interrupted = job.history[job.history.size() - 4];
    EXPECT_EQ(interrupted.state, JobState::kInterrupted);
    EXPECT_EQ(interrupted.reason, "server restarted");
    const StateChange& queued_again = job.history[job.history.size() - 3];
    EXPECT_EQ(queued_again.state, JobState::kQueued);
    EXPECT_EQ(queued_again.attempt, 1);
    EXPECT_EQ(job.history[job.history.size() - 2].state, JobState::kRunning);
    EXPECT_EQ(job.history.back().state, JobState::kSucceeded);
  }
  EXPECT_EQ(runner_->args(train.id).at("resume"),
            save_dir + "/weights/last.pt");
  EXPECT_EQ(runner_->args(val.id).count("resume"), 0u);
  EXPECT_THAT(runner_->started(), ElementsAre(train.id, val.id, queued.id));
  EXPECT_THAT(Log(), Contains(absl::StrCat("[", train.id,
                                           "] train QUEUED, attempt 1, "
                                           "resuming from ",
                                           save_dir, "/weights/last.pt")));
}

TEST_F(JobManagerTest, EachResumeIsANewAttemptWithItsHistory) {
  StartManager();
  const JobRecord blocked = SubmitOrDie(Mode::kTrain, {{"name", "block"}});
  EXPECT_EQ(blocked.attempt, 1);
  runner_->AwaitStarted(1);
  manager_->Shutdown(/*checkpoint=*/true);
  const JobRecord interrupted = *store_->Get(blocked.id);
  EXPECT_EQ(interrupted.state, JobState::kInterrupted);
  ASSERT_FALSE(interrupted.history.empty());
  EXPECT_EQ(interrupted.history.back().reason, "server shut down");
  EXPECT_EQ(interrupted.history.back().attempt, 1);
  manager_.reset();
  StartManager();  // the next server
  const JobRecord done = WaitOrDie(blocked.id);
  EXPECT_EQ(done.state, JobState::kSucceeded);
  EXPECT_EQ(done.attempt, 2);
  std::vector<std::pair<JobState, int>> states;
  for (const StateChange& change : done.history)
    states.emplace_back(change.state, change.attempt);
  EXPECT_THAT(
      states,
      ElementsAre(Pair(JobState::kQueued, 1), Pair(JobState::kRunning, 1),
                  Pair(JobState::kInterrupted, 1), Pair(JobState::kQueued, 2),
                  Pair(JobState::kRunning, 2), Pair(JobState::kSucceeded, 2)));
}

TEST_F(JobManagerTest, ListReportsARunningJobsLastSeq) {
  StartManager();
  const JobRecord blocked = SubmitOrDie(Mode::kTrain, {{"name", "block"}});
  runner_->AwaitStarted(1);
  const int64_t live = manager_->Get(blocked.id)->last_seq;
  ASSERT_GT(live, 0);
  absl::StatusOr<ListPage> page = manager_->List({});
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->jobs.size(), 1u);
  EXPECT_EQ(page->jobs[0].state, JobState::kRunning);
  EXPECT_EQ(page->jobs[0].last_seq, live);
  runner_->ReleaseAll();
  WaitOrDie(blocked.id);
}

TEST_F(JobManagerTest, RetentionForgetsExpiredJobs) {
  JobManager::Options options;
  options.retention.max_finished_jobs = 2;
  options.retention_interval = absl::InfiniteDuration();
  StartManager(options);
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(SubmitOrDie(Mode::kVal, {}).id);
    WaitOrDie(ids.back());
  }
  absl::StatusOr<RetentionResult> result = manager_->ApplyRetention();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->jobs_deleted, 3);
  EXPECT_EQ(manager_->Get(ids[0]).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(manager_->Get(ids[4]).ok());
  EXPECT_THAT(
      Log(),
      Contains(::testing::StartsWith("retention: deleted 3 finished jobs")));
}

TEST_F(JobManagerTest, ResumeCanBeTurnedOff) {
  const std::string save_dir = dir_.Sub("runs/old");
  std::filesystem::create_directories(save_dir + "/weights");
  std::ofstream(save_dir + "/weights/last.pt") << "weights";
  JobRecord train;
  train.id = "job-00000000000a";
  train.mode = Mode::kTrain;
  train.state = JobState::kRunning;
  train.save_dir = save_dir;
  ASSERT_TRUE(store_->Put(train).ok());

  JobManager::Options options;
  options.resume_interrupted = false;
  StartManager(options);
  EXPECT_EQ(manager_->Get(train.id)->state, JobState::kInterrupted);
  const JobRecord next = SubmitOrDie(Mode::kVal, {});
  EXPECT_EQ(WaitOrDie(next.id).state, JobState::kSucceeded);
  EXPECT_THAT(runner_->started(), ElementsAre(next.id));
  EXPECT_THAT(
      Log(),
      Contains("[job-00000000000a] train INTERRUPTED: server restarted"));
}

TEST_F(JobManagerTest, EveryStateChangeWritesOneLine) {
  StartManager();
  const JobRecord blocked = SubmitOrDie(Mode::kTrain, {{"name", "block"}});
  runner_->AwaitStarted(1);
  const JobRecord queued = SubmitOrDie(Mode::kVal, {});
  const JobRecord failing = SubmitOrDie(Mode::kTrain, {{"name", "fail"}});
  ASSERT_TRUE(manager_->Cancel(queued.id, "CancelJob from tester").ok());
  ASSERT_TRUE(manager_->Cancel(blocked.id, "CancelJob from tester").ok());
  EXPECT_EQ(WaitOrDie(blocked.id).state, JobState::kCancelled);
  EXPECT_EQ(WaitOrDie(failing.id).state, JobState::kFailed);
  const JobRecord ok = SubmitOrDie(Mode::kTrain, {{"epochs", "1"}});
  EXPECT_EQ(WaitOrDie(ok.id).state, JobState::kSucceeded);

  auto lines_of = [this](const std::string& id) {
    std::vector<std::string> out;
    for (const std::string& line : Log()) {
      if (absl::StartsWith(line, absl::StrCat("[", id, "] ")))
        out.push_back(line.substr(id.size() + 3));
    }
    return out;
  };
  EXPECT_THAT(lines_of(blocked.id),
              ElementsAre("train QUEUED, position 1", "train RUNNING",
                          StartsWith("train CANCELLED after ")));
  EXPECT_THAT(lines_of(blocked.id).back(), EndsWith(": CancelJob from tester"));
  EXPECT_THAT(lines_of(queued.id),
              ElementsAre("val QUEUED, position 1",
                          "val CANCELLED: before it started (CancelJob from "
                          "tester)"));
  std::vector<std::string> failed = lines_of(failing.id);
  ASSERT_FALSE(failed.empty());
  EXPECT_THAT(failed.back(), StartsWith("train FAILED after "));
  EXPECT_THAT(failed.back(), EndsWith(": data: dataset exploded"));
  std::vector<std::string> succeeded = lines_of(ok.id);
  ASSERT_EQ(succeeded.size(), 3u);
  EXPECT_EQ(succeeded[1], "train RUNNING");
  EXPECT_THAT(succeeded[2], StartsWith("train SUCCEEDED in "));
  EXPECT_THAT(succeeded[2], HasSubstr("mAP50 0.1"));
}

TEST_F(JobManagerTest, PathsOutsideTheRootsAreRefusedAndOthersResolved) {
  const std::string data = dir_.Sub("data");
  std::filesystem::create_directories(data + "/sets");
  JobManager::Options options;
  absl::StatusOr<PathPolicy> paths = PathPolicy::Create(data, {});
  ASSERT_TRUE(paths.ok()) << paths.status();
  options.paths = std::make_shared<const PathPolicy>(*paths);
  StartManager(options);
  absl::StatusOr<JobRecord> outside =
      manager_->Submit(Mode::kVal, {{"data", "../elsewhere.yaml"}}, {});
  EXPECT_EQ(outside.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(outside.status().message()),
              HasSubstr("data=../elsewhere.yaml"));
  const JobRecord inside =
      SubmitOrDie(Mode::kVal, {{"data", "sets/data.yaml"}});
  EXPECT_EQ(inside.args.at("data"), data + "/sets/data.yaml");
  EXPECT_EQ(WaitOrDie(inside.id).args.at("data"), data + "/sets/data.yaml");
}

TEST_F(JobManagerTest, ImageLimits) {
  JobManager::Options options;
  options.max_images = 2;
  options.max_image_pixels = 100;
  StartManager(options);
  std::vector<engine::InputImage> three(3, {"a.png", "x"});
  absl::StatusOr<JobRecord> many =
      manager_->Submit(Mode::kPredict, {}, {}, three);
  EXPECT_EQ(many.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(many.status().message()),
              HasSubstr("3 images in one request, more than the limit of 2 "
                        "(yolohookd --max_images)"));
  // A PNG header declaring 20x20 pixels is refused before any decoding.
  std::string png("\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\0\x14\0\0\0\x14", 24);
  absl::StatusOr<JobRecord> big = manager_->Submit(
      Mode::kPredict, {}, {}, {{"small.png", "x"}, {"big.png", png}});
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(big.status().message()),
              HasSubstr("images[1] (\"big.png\"): 20x20 pixels (400) is more "
                        "than the limit of 100"));
  EXPECT_THAT(std::string(big.status().message()),
              HasSubstr("--max_image_pixels"));
  EXPECT_THAT(std::string(manager_->CheckFrame(7, "f.png", png).message()),
              HasSubstr("frame 7 (\"f.png\"): 20x20"));
  EXPECT_TRUE(manager_->CheckFrame(7, "f.png", "x").ok());
}

// Collects what a bus stream has for its client.
class StreamReader {
 public:
  explicit StreamReader(events::EventBus& bus)
      : stream_(bus.Connect([this] {
          absl::MutexLock lock(&mu_);
          ++ready_;
        })) {}
  ~StreamReader() { stream_->Close(); }

  events::Stream& stream() { return *stream_; }

  // The next message, waiting for the bus to announce one.
  std::shared_ptr<const v1::ServerMessage> Next() {
    while (true) {
      int seen;
      {
        absl::MutexLock lock(&mu_);
        seen = ready_;
      }
      if (events::OutgoingPtr message = stream_->Next()) {
        return std::make_shared<const v1::ServerMessage>(message->Parse());
      }
      absl::MutexLock lock(&mu_);
      auto changed = [this, seen]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
        return ready_ != seen;
      };
      mu_.Await(absl::Condition(&changed));
    }
  }

 private:
  absl::Mutex mu_;
  int ready_ ABSL_GUARDED_BY(mu_) = 0;
  std::shared_ptr<events::Stream> stream_;
};

TEST_F(JobManagerTest, LabelSubscriptionReceivesTheJobsEvents) {
  StartManager();
  StreamReader reader(*bus_);
  v1::Subscribe subscribe;
  subscribe.set_subscription_id("mine");
  (*subscribe.mutable_match_labels())["team"] = "x";
  ASSERT_TRUE(reader.stream().Subscribe(subscribe).ok());
  EXPECT_TRUE(reader.Next()->has_subscribed());

  const JobRecord other = SubmitOrDie(Mode::kVal, {}, {{"team", "y"}});
  const JobRecord job =
      SubmitOrDie(Mode::kTrain, {{"epochs", "1"}}, {{"team", "x"}});
  EXPECT_EQ(WaitOrDie(other.id).state, JobState::kSucceeded);
  EXPECT_EQ(WaitOrDie(job.id).state, JobState::kSucceeded);

  std::vector<std::string> names;
  const size_t fired = yolohook::testing::FakeRunner::TrainEvents(1);
  while (names.size() < fired) {
    std::shared_ptr<const v1::ServerMessage> message = reader.Next();
    ASSERT_TRUE(message->has_event());
    EXPECT_EQ(message->event().job_id(), job.id);
    EXPECT_EQ(message->event().seq(), static_cast<int64_t>(names.size()) + 1);
    EXPECT_EQ(message->event().args().at("epochs"), "1");
    names.push_back(message->event().name());
  }
  EXPECT_THAT(
      names, ElementsAre("on_pretrain_routine_start", "on_pretrain_routine_end",
                         "on_train_start", "on_train_epoch_start",
                         "on_train_batch_start", "on_train_batch_end",
                         "on_train_batch_start", "on_train_batch_end",
                         "on_train_epoch_end", "on_fit_epoch_end",
                         "on_train_end", "teardown"));
}

TEST_F(JobManagerTest, InterceptorFailingTheJobFailsIt) {
  StartManager();
  StreamReader reader(*bus_);
  v1::Subscribe subscribe;
  subscribe.set_subscription_id("gate");
  (*subscribe.mutable_match_labels())["gated"] = "yes";
  subscribe.add_events("on_fit_epoch_end");
  subscribe.set_mode(v1::SUBSCRIPTION_MODE_INTERCEPT);
  subscribe.mutable_reply_timeout()->set_seconds(60);
  ASSERT_TRUE(reader.stream().Subscribe(subscribe).ok());
  EXPECT_TRUE(reader.Next()->has_subscribed());

  const JobRecord job = SubmitOrDie(Mode::kTrain, {}, {{"gated", "yes"}});
  std::shared_ptr<const v1::ServerMessage> message = reader.Next();
  ASSERT_TRUE(message->has_event());
  ASSERT_TRUE(message->event().reply_required());
  EXPECT_EQ(message->event().name(), "on_fit_epoch_end");
  EXPECT_EQ(manager_->Get(job.id)->state, JobState::kRunning);

  v1::Reply reply;
  reply.set_subscription_id("gate");
  reply.set_job_id(job.id);
  reply.set_seq(message->event().seq());
  reply.add_mutations()->mutable_fail_job()->set_reason("loss exploded");
  const v1::ReplyResult result = reader.stream().Reply(reply);
  EXPECT_TRUE(result.applied()) << result.reason();

  const JobRecord failed = WaitOrDie(job.id);
  EXPECT_EQ(failed.state, JobState::kFailed);
  EXPECT_THAT(failed.error, HasSubstr("loss exploded"));
  // The job ended at the intercepted event: on_train_end never fired.
  EXPECT_EQ(failed.last_seq, message->event().seq());
  EXPECT_EQ(store_->ReadEvents(job.id, 1, 100)->back().name(),
            "on_fit_epoch_end");
}

}  // namespace
}  // namespace yolohook::jobs
