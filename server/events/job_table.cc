#include "server/events/job_table.h"

#include <algorithm>

namespace yolohook::events {

JobTable::JobTable(size_t retention, bool logged)
    : retention_(std::max<size_t>(retention, 1)), logged_(logged) {}

JobTable::Job* JobTable::Find(const std::string& id) {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second;
}

const JobTable::Job* JobTable::Find(const std::string& id) const {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second;
}

JobTable::Job& JobTable::Start(const std::string& id,
                               const std::map<std::string, std::string>& labels,
                               const std::map<std::string, std::string>& args,
                               int64_t last_seq, int32_t attempt) {
  Job& job = jobs_[id];
  job.labels = labels;
  job.args = args;
  job.attempt = std::max(attempt, 1);
  job.finished = false;
  job.interrupted = false;
  job.last_seq = std::max(job.last_seq, last_seq);
  job.published_seq = std::max(job.published_seq, last_seq);
  return job;
}

JobTable::Job& JobTable::AddFinished(const std::string& id, int64_t last_seq) {
  Job& job = jobs_[id];
  job.last_seq = std::max(job.last_seq, last_seq);
  job.published_seq = std::max(job.published_seq, last_seq);
  job.finished = true;
  return job;
}

int64_t JobTable::NextSeq(const std::string& id) {
  return ++jobs_[id].last_seq;
}

void JobTable::Delivered(const EventRecordPtr& event) {
  Job& job = jobs_[event->job_id];
  job.published_seq = std::max(job.published_seq, event->seq);
  // A resumed job's ring continues where it stopped; a gap (a job known
  // again after it was forgotten) starts it afresh, so that it stays
  // gap-free.
  if (!job.ring.empty() && job.ring.back()->seq + 1 != event->seq)
    job.ring.clear();
  if (event->with_images != nullptr) {
    // Frames are for live delivery only: the ring keeps the plain event.
    auto plain = std::make_shared<EventRecord>(*event);
    plain->with_images = nullptr;
    job.ring.push_back(std::move(plain));
  } else {
    job.ring.push_back(event);
  }
  while (job.ring.size() > retention_) job.ring.pop_front();
}

EventRecordPtr JobTable::Retained(const Job& job, int64_t seq) const {
  const int64_t front = RingFront(job);
  if (front == 0 || seq < front || seq > job.ring.back()->seq) return nullptr;
  return job.ring[static_cast<size_t>(seq - front)];
}

int64_t JobTable::RingFront(const Job& job) {
  return job.ring.empty() ? 0 : job.ring.front()->seq;
}

void JobTable::Finish(const std::string& id, bool interrupted) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  it->second.finished = true;
  it->second.interrupted = interrupted;
  if (logged_) it->second.ring.clear();
}

}  // namespace yolohook::events
