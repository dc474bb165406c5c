#include "server/events/log_writer.h"

#include <utility>

namespace yolohook::events {

LogWriter::LogWriter(EventLog* log, std::function<void(Batch)> stored)
    : log_(log), stored_(std::move(stored)) {
  thread_ = std::thread([this] { Loop(); });
}

LogWriter::~LogWriter() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

void LogWriter::Queue(EventRecordPtr event) {
  absl::MutexLock lock(&mu_);
  size_t& pending = pending_[event->job_id];
  if (pending >= kMaxUnstored) {
    const std::string& job = event->job_id;
    auto room = [this, &job]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return pending_[job] < kMaxUnstored;
    };
    mu_.Await(absl::Condition(&room));
  }
  ++pending_[event->job_id];
  queue_.push_back(std::move(event));
  ++queued_;
}

void LogWriter::Flush() {
  absl::MutexLock lock(&mu_);
  const int64_t target = queued_;
  auto done = [this, target]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return done_ >= target;
  };
  mu_.Await(absl::Condition(&done));
}

void LogWriter::ForgetJob(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  auto it = pending_.find(job_id);
  if (it != pending_.end() && it->second == 0) pending_.erase(it);
}

int64_t LogWriter::failures() const {
  absl::MutexLock lock(&mu_);
  return failures_;
}

void LogWriter::Loop() {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !queue_.empty() || stop_;
  };
  while (true) {
    mu_.Await(absl::Condition(&ready));
    if (queue_.empty()) return;  // stopping, and everything stored
    // Everything queued goes in one transaction: under load, batches grow
    // and the cost of a commit is shared by more events (group commit).
    Batch batch;
    batch.events.assign(std::make_move_iterator(queue_.begin()),
                        std::make_move_iterator(queue_.end()));
    queue_.clear();
    mu_.Unlock();
    if (log_ != nullptr) {
      std::vector<const EventRecord*> events;
      events.reserve(batch.events.size());
      for (const EventRecordPtr& event : batch.events)
        events.push_back(event.get());
      batch.status = log_->Append(events);
    }
    std::vector<std::string> jobs;
    jobs.reserve(batch.events.size());
    for (const EventRecordPtr& event : batch.events)
      jobs.push_back(event->job_id);
    const bool failed = !batch.status.ok();
    stored_(std::move(batch));
    mu_.Lock();
    if (failed) ++failures_;
    for (const std::string& job : jobs) --pending_[job];
    done_ += static_cast<int64_t>(jobs.size());
  }
}

}  // namespace yolohook::events
