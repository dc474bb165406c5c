#include "server/engine/data/loader.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/engine/data/random.h"

namespace yolohook::data {
namespace {

// Keeps the shuffle's stream apart from the per-sample streams.
constexpr uint64_t kShuffleStream = 0x73687566666c65ULL;  // "shuffle"
constexpr uint64_t kSampleStream = 0x73616d706c65ULL;     // "sample"

}  // namespace

DataLoader::DataLoader(const DetectionDataset* dataset, Options options)
    : dataset_(dataset), options_([&] {
        options.batch_size = std::max(options.batch_size, 1);
        options.workers = std::max(options.workers, 0);
        options.prefetch = std::max(options.prefetch, 1);
        return options;
      }()) {}

DataLoader::~DataLoader() { StopWorkers(); }

size_t DataLoader::num_batches() const {
  const size_t n = dataset_->size();
  const size_t bs = static_cast<size_t>(options_.batch_size);
  return (n + bs - 1) / bs;
}

void DataLoader::StopWorkers() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  abandon_ = true;
  for (std::thread& t : workers_) t.join();
  workers_.clear();
  absl::MutexLock lock(&mu_);
  ready_.clear();
}

void DataLoader::StartEpoch(int epoch, const AugmentOptions& hyp) {
  StopWorkers();

  started_ = true;
  epoch_ = epoch;
  hyp_ = options_.augment ? hyp : NoAugmentation();
  num_batches_ = static_cast<int64_t>(num_batches());
  order_.resize(dataset_->size());
  std::iota(order_.begin(), order_.end(), size_t{0});
  if (options_.shuffle && order_.size() > 1) {
    std::mt19937 rng = MakeRng(MixSeed(MixSeed(options_.seed, kShuffleStream),
                                       static_cast<uint64_t>(epoch)));
    for (size_t i = order_.size() - 1; i > 0; --i) {
      const size_t j =
          static_cast<size_t>(RandomInt(rng, 0, static_cast<int>(i)));
      std::swap(order_[i], order_[j]);
    }
  }

  {
    absl::MutexLock lock(&mu_);
    stop_ = false;
    next_claim_ = 0;
    consumed_ = 0;
    ready_.clear();
  }
  abandon_ = false;
  const int64_t threads = std::min<int64_t>(options_.workers, num_batches_);
  for (int64_t i = 0; i < threads; ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
}

absl::StatusOr<Batch> DataLoader::BuildBatch(int64_t b) const {
  Batch batch;
  batch.index = b;
  const size_t bs = static_cast<size_t>(options_.batch_size);
  const size_t begin = static_cast<size_t>(b) * bs;
  const size_t end = std::min(begin + bs, order_.size());
  batch.samples.reserve(end - begin);
  const uint64_t epoch_seed =
      MixSeed(MixSeed(options_.seed, kSampleStream),
              static_cast<uint64_t>(static_cast<int64_t>(epoch_)));
  for (size_t pos = begin; pos < end; ++pos) {
    if (abandon_) return absl::CancelledError("epoch abandoned");
    std::mt19937 rng = MakeRng(MixSeed(epoch_seed, pos));
    absl::StatusOr<Sample> sample = dataset_->Get(order_[pos], hyp_, rng);
    if (!sample.ok()) return sample.status();
    batch.samples.push_back(*std::move(sample));
  }
  return batch;
}

void DataLoader::WorkerLoop() {
  const int64_t prefetch = options_.prefetch;
  while (true) {
    int64_t b;
    {
      absl::MutexLock lock(&mu_);
      auto can_claim = [this, prefetch]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || next_claim_ >= num_batches_ ||
               next_claim_ < consumed_ + prefetch;
      };
      mu_.Await(absl::Condition(&can_claim));
      if (stop_ || next_claim_ >= num_batches_) return;
      b = next_claim_++;
    }
    absl::StatusOr<Batch> batch = BuildBatch(b);
    absl::MutexLock lock(&mu_);
    if (stop_) return;
    ready_.emplace(b, std::move(batch));
  }
}

absl::StatusOr<std::optional<Batch>> DataLoader::Next() {
  if (!started_) {
    return absl::FailedPreconditionError(
        "DataLoader::Next() called before StartEpoch()");
  }
  if (options_.workers == 0) {
    int64_t b;
    {
      absl::MutexLock lock(&mu_);
      if (consumed_ >= num_batches_) return std::optional<Batch>();
      b = consumed_++;
    }
    absl::StatusOr<Batch> batch = BuildBatch(b);
    if (!batch.ok()) return batch.status();
    return std::optional<Batch>(*std::move(batch));
  }
  absl::StatusOr<Batch> batch;
  {
    absl::MutexLock lock(&mu_);
    if (consumed_ >= num_batches_) return std::optional<Batch>();
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return ready_.count(consumed_) > 0;
    };
    mu_.Await(absl::Condition(&ready));
    auto it = ready_.find(consumed_);
    batch = std::move(it->second);
    ready_.erase(it);
    ++consumed_;
  }
  if (!batch.ok()) return batch.status();
  return std::optional<Batch>(*std::move(batch));
}

}  // namespace yolohook::data
