#include "server/jobs/job_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/run_as.h"
#include "tests/testing/temp_dir.h"

namespace yolohook::jobs {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::unique_ptr<JobStore> OpenOrDie(const std::string& path) {
  absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open(path);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? std::move(*store) : nullptr;
}

JobRecord MakeJob(const std::string& id, int64_t create_seconds,
                  JobState state = JobState::kQueued) {
  JobRecord job;
  job.id = id;
  job.mode = Mode::kTrain;
  job.state = state;
  job.create_time = absl::FromUnixSeconds(create_seconds);
  return job;
}

JobRecord FullJob() {
  JobRecord job;
  job.id = "job-0123456789ab";
  job.mode = Mode::kPredict;
  job.state = JobState::kSucceeded;
  job.args = {{"imgsz", "64"}, {"conf", "0.5"}};
  job.labels = {{"team", "vision"}, {"run", "7"}};
  job.create_time = absl::FromUnixNanos(1700000000123456789);
  job.start_time = absl::FromUnixNanos(1700000001000000001);
  job.end_time = absl::FromUnixNanos(1700000002500000000);
  job.error = "";
  job.save_dir = "/data/runs/detect/predict3";
  job.metrics = {{"metrics/mAP50(B)", 0.75}, {"fitness", 0.5}};
  Result result;
  result.path = "a.jpg";
  result.orig_height = 48;
  result.orig_width = 64;
  Box box;
  box.x1 = 1.5f;
  box.y1 = 2;
  box.x2 = 30;
  box.y2 = 40.25f;
  box.conf = 0.875f;
  box.cls = 1;
  box.track_id = 42;
  Box plain;
  plain.x2 = 3;
  plain.y2 = 4;
  plain.conf = 0.25f;
  result.boxes = {box, plain};
  result.names = {"circle", "square"};
  result.speed = {1.25, 10.5, 0.75};
  job.results = {result};
  job.artifacts = {{"weights_best", "/w/best.pt"}, {"onnx", "/w/best.onnx"}};
  job.last_seq = 17;
  job.attempt = 2;
  job.direct = true;
  job.history = {{JobState::kQueued, absl::FromUnixSeconds(1700000000), "", 1},
                 {JobState::kInterrupted, absl::FromUnixSeconds(1700000001),
                  "server shut down", 1},
                 {JobState::kQueued, absl::FromUnixSeconds(1700000002),
                  "resuming from /w/last.pt", 2}};
  return job;
}

v1::Event MakeEvent(const std::string& job_id, int64_t seq,
                    const std::string& name) {
  v1::Event event;
  event.set_job_id(job_id);
  event.set_seq(seq);
  event.set_name(name);
  return event;
}

std::vector<std::string> Ids(const std::vector<JobRecord>& jobs) {
  std::vector<std::string> ids;
  for (const JobRecord& job : jobs) ids.push_back(job.id);
  return ids;
}

void ExpectSameJob(const JobRecord& got, const JobRecord& want) {
  EXPECT_EQ(got.id, want.id);
  EXPECT_EQ(got.mode, want.mode);
  EXPECT_EQ(got.state, want.state);
  EXPECT_EQ(got.args, want.args);
  EXPECT_EQ(got.labels, want.labels);
  EXPECT_EQ(got.create_time, want.create_time);
  EXPECT_EQ(got.start_time, want.start_time);
  EXPECT_EQ(got.end_time, want.end_time);
  EXPECT_EQ(got.error, want.error);
  EXPECT_EQ(got.save_dir, want.save_dir);
  EXPECT_EQ(got.metrics, want.metrics);
  EXPECT_EQ(got.artifacts, want.artifacts);
  EXPECT_EQ(got.last_seq, want.last_seq);
  EXPECT_EQ(got.attempt, want.attempt);
  EXPECT_EQ(got.direct, want.direct);
  EXPECT_EQ(got.history, want.history);
  ASSERT_EQ(got.results.size(), want.results.size());
  for (size_t i = 0; i < got.results.size(); ++i) {
    const Result& g = got.results[i];
    const Result& w = want.results[i];
    EXPECT_EQ(g.path, w.path);
    EXPECT_EQ(g.orig_height, w.orig_height);
    EXPECT_EQ(g.orig_width, w.orig_width);
    EXPECT_EQ(g.names, w.names);
    EXPECT_EQ(g.speed.preprocess_ms, w.speed.preprocess_ms);
    EXPECT_EQ(g.speed.inference_ms, w.speed.inference_ms);
    EXPECT_EQ(g.speed.postprocess_ms, w.speed.postprocess_ms);
    ASSERT_EQ(g.boxes.size(), w.boxes.size());
    for (size_t b = 0; b < g.boxes.size(); ++b) {
      EXPECT_EQ(g.boxes[b].x1, w.boxes[b].x1);
      EXPECT_EQ(g.boxes[b].y1, w.boxes[b].y1);
      EXPECT_EQ(g.boxes[b].x2, w.boxes[b].x2);
      EXPECT_EQ(g.boxes[b].y2, w.boxes[b].y2);
      EXPECT_EQ(g.boxes[b].conf, w.boxes[b].conf);
      EXPECT_EQ(g.boxes[b].cls, w.boxes[b].cls);
      EXPECT_EQ(g.boxes[b].track_id, w.boxes[b].track_id);
    }
  }
}

TEST(JobStoreTest, OpenCreatesFileAndParentDirectories) {
  testing::TempDir dir;
  const std::string path = dir.Sub("a/b/jobs.db");
  auto store = OpenOrDie(path);
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(std::filesystem::exists(path));
  EXPECT_EQ(store->path(), path);
}

TEST(JobStoreTest, PutGetRoundTripsEveryField) {
  testing::TempDir dir;
  auto store = OpenOrDie(dir.Sub("jobs.db"));
  ASSERT_NE(store, nullptr);
  const JobRecord job = FullJob();
  ASSERT_TRUE(store->Put(job).ok());
  absl::StatusOr<JobRecord> got = store->Get(job.id);
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectSameJob(*got, job);
}

TEST(JobStoreTest, UnsetTimesStayUnset) {
  testing::TempDir dir;
  auto store = OpenOrDie(dir.Sub("jobs.db"));
  JobRecord job;
  job.id = "job-x";
  ASSERT_TRUE(store->Put(job).ok());
  absl::StatusOr<JobRecord> got = store->Get("job-x");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->create_time, absl::InfinitePast());
  EXPECT_EQ(got->start_time, absl::InfinitePast());
  EXPECT_EQ(got->end_time, absl::InfinitePast());
  EXPECT_FALSE(ToProto(*got).has_start_time());
}

TEST(JobStoreTest, PutReplacesAndGetUnknownIsNotFound) {
  testing::TempDir dir;
  auto store = OpenOrDie(dir.Sub("jobs.db"));
  JobRecord job = MakeJob("job-1", 10);
  ASSERT_TRUE(store->Put(job).ok());
  job.state = JobState::kFailed;
  job.error = "boom";
  ASSERT_TRUE(store->Put(job).ok());
  absl::StatusOr<JobRecord> got = store->Get("job-1");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->state, JobState::kFailed);
  EXPECT_EQ(got->error, "boom");

  absl::StatusOr<JobRecord> missing = store->Get("job-nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("job-nope"));
  EXPECT_EQ(store->Put(JobRecord{}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(JobStoreTest, ListIsNewestFirstAndFiltersStatesAndLabels) {
  testing::TempDir dir;
  auto store = OpenOrDie(dir.Sub("jobs.db"));
  JobRecord a = MakeJob("job-a", 100, JobState::kSucceeded);
  a.labels = {{"team", "x"}, {"kind", "big"}};
  JobRecord b = MakeJob("job-b", 300, JobState::kRunning);
  b.labels = {{"team", "x"}};
  JobRecord c = MakeJob("job-c", 200, JobState::kFailed);
  c.labels = {{"team", "y"}};
  JobRecord d = MakeJob("job-d", 300, JobState::kSucceeded);  // ties with b
  for (const JobRecord& job : {a, b, c, d}) ASSERT_TRUE(store->Put(job).ok());

  absl::StatusOr<ListPage> all = store->List({});
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_THAT(Ids(all->jobs), ElementsAre("job-d", "job-b", "job-c", "job-a"));
  EXPECT_THAT(all->next_page_token, IsEmpty());

  ListQuery by_state;
  by_state.states = {JobState::kSucceeded, JobState::kFailed};
  EXPECT_THAT(Ids(store->List(by_state)->jobs),
              ElementsAre("job-d", "job-c", "job-a"));

  ListQuery by_label;
  by_label.labels = {{"team", "x"}};
  EXPECT_THAT(Ids(store->List(by_label)->jobs), ElementsAre("job-b", "job-a"));
  by_label.labels = {{"team", "x"}, {"kind", "big"}};
  EXPECT_THAT(Ids(store->List(by_label)->jobs), ElementsAre("job-a"));

  ListQuery both;
  both.states = {JobState::kRunning};
  both.labels = {{"team", "y"}};
  EXPECT_THAT(store->List(both)->jobs, IsEmpty());
}

TEST(JobStoreTest, ListPagesThroughEveryJobOnce) {
  testing::TempDir dir;
  auto store = OpenOrDie(dir.Sub("jobs.db"));
  for (int i = 0; i < 5; ++i) {
    JobRecord job = MakeJob("job-" + std::to_string(i), 1000 + i);
    job.labels = {{"odd", i % 2 ? "yes" : "no"}};
    ASSERT_TRUE(store->Put(job).ok());
  }
  ListQuery query;
  query.limit = 2;
  std::vector<std::vector<std::string>> pages;
  do {
    absl::StatusOr<ListPage> page = store->List(query);
    ASSERT_TRUE(page.ok()) << page.status();
    pages.push_back(Ids(page->jobs));
    query.page_token = page->next_page_token;
  } while (!query.page_token.empty() && pages.size() < 10);
  EXPECT_THAT(pages,
              ElementsAre(ElementsAre("job-4", "job-3"),
                          ElementsAre("job-2", "job-1"), ElementsAre("job-0")));

  // A label filter pages over the matching jobs only.
  ListQuery odd;
  odd.limit = 1;
  odd.labels = {{"odd", "yes"}};
  absl::StatusOr<ListPage> first = store->List(odd);
  ASSERT_TRUE(first.ok());
  EXPECT_THAT(Ids(first->jobs), ElementsAre("job-3"));
  ASSERT_FALSE(first->next_page_token.empty());
  odd.page_token = first->next_page_token;
  absl::StatusOr<ListPage> second = store->List(odd);
  ASSERT_TRUE(second.ok());
  EXPECT_THAT(Ids(second->jobs), ElementsAre("job-1"));
  EXPECT_THAT(second->next_page_token, IsEmpty());

  ListQuery bad;
  bad.page_token = "garbage";
  EXPECT_EQ(store->List(bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  ListQuery negative;
  negative.limit = -1;
  EXPECT_EQ(store->List(negative).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(JobStoreTest, EventsAppendReadAndLastSeq) {
  testing::TempDir dir;
  auto store = OpenOrDie(dir.Sub("jobs.db"));
  EXPECT_EQ(*store->LastSeq("job-1"), 0);
  for (int64_t seq = 1; seq <= 4; ++seq) {
    ASSERT_TRUE(
        store->AppendEvent(MakeEvent("job-1", seq, "e" + std::to_string(seq)))
            .ok());
  }
  ASSERT_TRUE(store->AppendEvent(MakeEvent("job-2", 1, "other")).ok());
  EXPECT_EQ(*store->LastSeq("job-1"), 4);
  EXPECT_EQ(*store->LastSeq("job-2"), 1);

  absl::StatusOr<std::vector<v1::Event>> read =
      store->ReadEvents("job-1", 2, 2);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->size(), 2u);
  EXPECT_EQ((*read)[0].seq(), 2);
  EXPECT_EQ((*read)[0].name(), "e2");
  EXPECT_EQ((*read)[1].seq(), 3);
  EXPECT_EQ(store->ReadEvents("job-1", 1, 100)->size(), 4u);
  EXPECT_THAT(*store->ReadEvents("job-1", 5, 100), IsEmpty());
  EXPECT_THAT(*store->ReadEvents("job-1", 1, 0), IsEmpty());

  absl::Status duplicate = store->AppendEvent(MakeEvent("job-1", 3, "again"));
  EXPECT_EQ(duplicate.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(store->AppendEvent(MakeEvent("", 1, "x")).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->AppendEvent(MakeEvent("job-1", 0, "x")).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(JobStoreTest, AppendStoresEveryEventAndReportsTheFirstFailure) {
  testing::TempDir dir;
  auto store = OpenOrDie(dir.Sub("jobs.db"));
  ASSERT_TRUE(store->AppendEvent(MakeEvent("job-1", 2, "stored before")).ok());
  std::vector<v1::Event> events = {
      MakeEvent("job-1", 1, "a"), MakeEvent("job-1", 2, "duplicate"),
      MakeEvent("job-1", 3, "c"), MakeEvent("job-2", 1, "d")};
  std::vector<events::EventRecord> records(events.size());
  std::vector<const events::EventRecord*> batch;
  for (size_t i = 0; i < events.size(); ++i) {
    records[i].job_id = events[i].job_id();
    records[i].seq = events[i].seq();
    records[i].bytes = events::Serialize(events[i]);
    batch.push_back(&records[i]);
  }
  absl::Status status = store->Append(batch);
  EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(status.message(), HasSubstr("seq 2"));
  // The duplicate did not undo the others of its transaction.
  absl::StatusOr<std::vector<v1::Event>> read =
      store->ReadEvents("job-1", 1, 10);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->size(), 3u);
  EXPECT_EQ((*read)[0].name(), "a");
  EXPECT_EQ((*read)[1].name(), "stored before");
  EXPECT_EQ((*read)[2].name(), "c");
  EXPECT_EQ(*store->LastSeq("job-2"), 1);
  EXPECT_TRUE(store->Append({}).ok());
}

TEST(JobStoreTest, ReopenKeepsJobsAndEvents) {
  testing::TempDir dir;
  const std::string path = dir.Sub("jobs.db");
  {
    auto store = OpenOrDie(path);
    ASSERT_TRUE(store->Put(FullJob()).ok());
    ASSERT_TRUE(
        store->AppendEvent(MakeEvent(FullJob().id, 1, "on_predict_start"))
            .ok());
    ASSERT_TRUE(
        store->AppendEvent(MakeEvent(FullJob().id, 2, "on_predict_end")).ok());
  }
  auto store = OpenOrDie(path);
  ASSERT_NE(store, nullptr);
  absl::StatusOr<JobRecord> got = store->Get(FullJob().id);
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectSameJob(*got, FullJob());
  EXPECT_EQ(*store->LastSeq(FullJob().id), 2);
  absl::StatusOr<std::vector<v1::Event>> events =
      store->ReadEvents(FullJob().id, 1, 10);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[1].name(), "on_predict_end");
}

TEST(JobStoreTest, MarkRunningInterruptedReturnsUnfinishedJobs) {
  testing::TempDir dir;
  const std::string path = dir.Sub("jobs.db");
  {
    auto store = OpenOrDie(path);
    ASSERT_TRUE(store->Put(MakeJob("job-q", 2, JobState::kQueued)).ok());
    ASSERT_TRUE(store->Put(MakeJob("job-r", 1, JobState::kRunning)).ok());
    ASSERT_TRUE(store->Put(MakeJob("job-s", 3, JobState::kSucceeded)).ok());
    ASSERT_TRUE(store->Put(MakeJob("job-c", 4, JobState::kCancelled)).ok());
  }
  auto store = OpenOrDie(path);
  const absl::Time now = absl::FromUnixSeconds(5000);
  absl::StatusOr<std::vector<JobRecord>> interrupted =
      store->MarkRunningInterrupted(now);
  ASSERT_TRUE(interrupted.ok()) << interrupted.status();
  EXPECT_THAT(Ids(*interrupted), ElementsAre("job-r", "job-q"));
  for (const std::string id : {"job-r", "job-q"}) {
    absl::StatusOr<JobRecord> job = store->Get(id);
    ASSERT_TRUE(job.ok());
    EXPECT_EQ(job->state, JobState::kInterrupted);
    EXPECT_EQ(job->error, "server restarted");
    EXPECT_EQ(job->end_time, now);
    ASSERT_FALSE(job->history.empty());
    EXPECT_EQ(job->history.back(), (StateChange{JobState::kInterrupted, now,
                                                "server restarted", 0}));
  }
  EXPECT_EQ(store->Get("job-s")->state, JobState::kSucceeded);
  EXPECT_EQ(store->Get("job-c")->state, JobState::kCancelled);
  EXPECT_THAT(*store->MarkRunningInterrupted(now), IsEmpty());
}

TEST(JobStoreTest, CountByStateCountsEveryStoredJob) {
  testing::TempDir dir;
  auto store = OpenOrDie(dir.Sub("jobs.db"));
  EXPECT_THAT(*store->CountByState(), IsEmpty());
  ASSERT_TRUE(store->Put(MakeJob("job-a", 1, JobState::kQueued)).ok());
  ASSERT_TRUE(store->Put(MakeJob("job-b", 2, JobState::kSucceeded)).ok());
  ASSERT_TRUE(store->Put(MakeJob("job-c", 3, JobState::kSucceeded)).ok());
  ASSERT_TRUE(store->Put(MakeJob("job-a", 1, JobState::kRunning)).ok());
  absl::StatusOr<std::map<JobState, int64_t>> counts = store->CountByState();
  ASSERT_TRUE(counts.ok()) << counts.status();
  EXPECT_EQ(*counts, (std::map<JobState, int64_t>{{JobState::kRunning, 1},
                                                  {JobState::kSucceeded, 2}}));
}

TEST(JobStoreTest, CorruptFileGivesClearError) {
  testing::TempDir dir;
  const std::string path = dir.Sub("jobs.db");
  {
    std::ofstream out(path, std::ios::binary);
    out << std::string(8192, 'x');
  }
  absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open(path);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(store.status().message(), HasSubstr(path));
  EXPECT_THAT(store.status().message(), HasSubstr("not a yolohook job store"));
}

TEST(JobStoreTest, DirectoryIsRejected) {
  testing::TempDir dir;
  absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open(dir.path());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(store.status().message(), HasSubstr(dir.path()));
  EXPECT_THAT(store.status().message(), HasSubstr("directory"));
}

JobRecord FinishedJob(const std::string& id, int64_t end_seconds,
                      bool direct = false) {
  JobRecord job = MakeJob(id, end_seconds - 1, JobState::kSucceeded);
  job.end_time = absl::FromUnixSeconds(end_seconds);
  job.direct = direct;
  return job;
}

std::vector<std::string> AllIds(JobStore& store) {
  ListQuery query;
  query.limit = JobStore::kMaxListLimit;
  absl::StatusOr<ListPage> page = store.List(query);
  EXPECT_TRUE(page.ok()) << page.status();
  std::vector<std::string> ids = Ids(page->jobs);
  std::sort(ids.begin(), ids.end());
  return ids;
}

TEST(JobStoreTest, HistoryKeepsTheNewestEntries) {
  JobRecord job = MakeJob("job-h", 1);
  for (int i = 0; i < 100; ++i) {
    job.attempt = i;
    job.Enter(i % 2 ? JobState::kRunning : JobState::kQueued,
              absl::FromUnixSeconds(i), absl::StrCat("step ", i));
  }
  ASSERT_EQ(job.history.size(), JobRecord::kMaxHistory);
  EXPECT_EQ(job.history.back().reason, "step 99");
  EXPECT_EQ(job.history.back().attempt, 99);
  EXPECT_EQ(job.history.front().reason,
            absl::StrCat("step ", 100 - JobRecord::kMaxHistory));
  EXPECT_EQ(job.state, JobState::kRunning);
}

TEST(JobStoreTest, RetentionDeletesExpiredFinishedJobsWithTheirEvents) {
  testing::TempDir dir;
  auto store = OpenOrDie(dir.Sub("jobs.db"));
  const int64_t now = 100000;
  ASSERT_TRUE(store->Put(FinishedJob("job-old", now - 7200)).ok());
  ASSERT_TRUE(store->Put(FinishedJob("job-new", now - 60)).ok());
  ASSERT_TRUE(store->Put(FinishedJob("job-predict-old", now - 900, true)).ok());
  ASSERT_TRUE(store->Put(FinishedJob("job-predict-new", now - 30, true)).ok());
  JobRecord running = MakeJob("job-running", 1, JobState::kRunning);
  ASSERT_TRUE(store->Put(running).ok());
  for (const char* id : {"job-old", "job-new", "job-running"}) {
    for (int seq = 1; seq <= 3; ++seq)
      ASSERT_TRUE(
          store->AppendEvent(MakeEvent(id, seq, "on_train_start")).ok());
  }
  RetentionPolicy policy;
  policy.max_age = absl::Hours(1);
  policy.direct_max_age = absl::Minutes(10);
  policy.max_finished_jobs = 0;
  absl::StatusOr<RetentionResult> result =
      store->DeleteExpired(policy, absl::FromUnixSeconds(now));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->jobs_deleted, 2);
  EXPECT_EQ(result->events_deleted, 3);
  EXPECT_GT(result->bytes, 0);
  EXPECT_THAT(AllIds(*store),
              ElementsAre("job-new", "job-predict-new", "job-running"));
  EXPECT_EQ(*store->LastSeq("job-old"), 0);
  EXPECT_EQ(*store->LastSeq("job-new"), 3);

  // By count: the jobs that ended last stay; running jobs never count.
  policy.max_age = absl::ZeroDuration();
  policy.direct_max_age = absl::ZeroDuration();
  policy.max_finished_jobs = 1;
  result = store->DeleteExpired(policy, absl::FromUnixSeconds(now));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->jobs_deleted, 1);
  EXPECT_THAT(AllIds(*store), ElementsAre("job-predict-new", "job-running"));
}

TEST(JobStoreTest, RetentionKeepsTheStoreUnderItsSize) {
  testing::TempDir dir;
  auto store = OpenOrDie(dir.Sub("jobs.db"));
  const std::string payload(4000, 'p');
  for (int j = 0; j < 200; ++j) {
    const std::string id = absl::StrCat("job-", 1000 + j);
    ASSERT_TRUE(store->Put(FinishedJob(id, 1000 + j)).ok());
    v1::Event event = MakeEvent(id, 1, "on_predict_batch_end");
    event.mutable_predictor()->add_strings(payload);
    ASSERT_TRUE(store->AppendEvent(event).ok());
  }
  const int64_t before = *store->SizeBytes();
  ASSERT_GT(before, 800 << 10);
  RetentionPolicy policy;
  policy.max_age = absl::ZeroDuration();
  policy.direct_max_age = absl::ZeroDuration();
  policy.max_finished_jobs = 0;
  policy.max_bytes = 300 << 10;
  absl::StatusOr<RetentionResult> result =
      store->DeleteExpired(policy, absl::FromUnixSeconds(5000));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_LE(result->bytes, policy.max_bytes);
  EXPECT_EQ(*store->SizeBytes(), result->bytes);
  EXPECT_GT(result->jobs_deleted, 100);
  // The oldest went first.
  EXPECT_EQ(store->Get("job-1000").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(store->Get("job-1199").ok());
}

TEST(JobStoreTest, AFullStoreIsResourceExhaustedNamingIt) {
  testing::TempDir dir;
  const std::string path = dir.Sub("jobs.db");
  JobStore::Options options;
  options.max_bytes = 256 << 10;
  absl::StatusOr<std::unique_ptr<JobStore>> store =
      JobStore::Open(path, options);
  ASSERT_TRUE(store.ok()) << store.status();
  absl::Status status;
  JobRecord job = MakeJob("job-big", 1);
  job.args["note"] = std::string(20000, 'n');
  for (int i = 0; i < 100 && status.ok(); ++i) {
    job.id = absl::StrCat("job-", i);
    status = (*store)->Put(job);
  }
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(status.message(), HasSubstr(path));
  EXPECT_THAT(status.message(), HasSubstr("full"));
  // Earlier jobs are still there.
  EXPECT_TRUE((*store)->Get("job-0").ok());
}

TEST(JobStoreTest, AStoreWithoutRetentionColumnsIsMigrated) {
  testing::TempDir dir;
  const std::string path = dir.Sub("jobs.db");
  {
    // The schema before retention: no end_time, no direct, no auto_vacuum.
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db,
                           "CREATE TABLE jobs (id TEXT PRIMARY KEY NOT NULL,"
                           " state INTEGER NOT NULL, create_time INTEGER NOT "
                           "NULL, job BLOB NOT NULL)",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    const std::string blob =
        ToProto(FinishedJob("job-old", 500)).SerializeAsString();
    sqlite3_stmt* stmt = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(
                  db, "INSERT INTO jobs VALUES ('job-old', 2, 499, ?1)", -1,
                  &stmt, nullptr),
              SQLITE_OK);
    sqlite3_bind_blob(stmt, 1, blob.data(), static_cast<int>(blob.size()),
                      SQLITE_TRANSIENT);
    ASSERT_EQ(sqlite3_step(stmt), SQLITE_DONE);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
  }
  auto store = OpenOrDie(path);
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(store->Get("job-old").ok());
  // Its end time was carried over: age retention sees it as it is.
  RetentionPolicy policy;
  policy.max_age = absl::Seconds(1000);
  policy.max_finished_jobs = 0;
  EXPECT_EQ(
      store->DeleteExpired(policy, absl::FromUnixSeconds(1000))->jobs_deleted,
      0);
  EXPECT_EQ(
      store->DeleteExpired(policy, absl::FromUnixSeconds(2000))->jobs_deleted,
      1);
}

TEST(JobStoreTest, AReadOnlyDirectoryIsNamedAsSuch) {
  testing::TempDir dir;
  // nobody must reach the directory to find it read-only.
  std::filesystem::permissions(dir.path(), std::filesystem::perms::all);
  const std::string ro = dir.Sub("ro");
  std::filesystem::create_directories(ro);
  std::filesystem::permissions(ro, std::filesystem::perms::owner_read |
                                       std::filesystem::perms::owner_exec |
                                       std::filesystem::perms::group_read |
                                       std::filesystem::perms::others_read |
                                       std::filesystem::perms::group_exec |
                                       std::filesystem::perms::others_exec);
  // Root writes anywhere: check as an unprivileged user then.
  const std::string message = testing::RunAsNobody([&ro] {
    absl::StatusOr<std::unique_ptr<JobStore>> store =
        JobStore::Open(ro + "/jobs.db");
    return absl::StrCat(absl::StatusCodeToString(store.status().code()), ": ",
                        store.status().message());
  });
  EXPECT_THAT(message, HasSubstr("FAILED_PRECONDITION"));
  EXPECT_THAT(message, HasSubstr("read-only"));
  EXPECT_THAT(message, HasSubstr(ro));
}

TEST(JobTest, ProtoWithoutModeOrStateIsRejected) {
  v1::Job proto = ToProto(FullJob());
  EXPECT_EQ(proto.mode(), v1::MODE_PREDICT);
  EXPECT_EQ(proto.state(), v1::JOB_STATE_SUCCEEDED);
  proto.set_mode(v1::MODE_UNSPECIFIED);
  absl::StatusOr<JobRecord> no_mode = FromProto(proto);
  EXPECT_EQ(no_mode.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(no_mode.status().message(), HasSubstr("job-0123456789ab"));
  proto.set_mode(v1::MODE_TRAIN);
  proto.set_state(v1::JOB_STATE_UNSPECIFIED);
  EXPECT_EQ(FromProto(proto).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(JobStateName(JobState::kInterrupted), "INTERRUPTED");
  EXPECT_TRUE(IsFinished(JobState::kCancelled));
  EXPECT_FALSE(IsFinished(JobState::kRunning));
}

}  // namespace
}  // namespace yolohook::jobs
