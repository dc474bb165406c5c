// Batches of a DetectionDataset, prepared ahead on worker threads.
#ifndef YOLOHOOK_SERVER_ENGINE_DATA_LOADER_H_
#define YOLOHOOK_SERVER_ENGINE_DATA_LOADER_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <optional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/engine/data/augment.h"
#include "server/engine/data/dataset.h"

namespace yolohook::data {

// One batch of an epoch.
struct Batch {
  // batch index within the epoch
  int64_t index = 0;
  // in order
  std::vector<Sample> samples;
};

// Produces an epoch's batches on worker threads, ahead of the consumer
// (bounded prefetch), always in the same order and with the same pixels for
// the same seed and epoch whatever the thread timing: sample k of an epoch is
// augmented with a generator derived from (seed, epoch, k) only.
//
// The dataset is not owned and must outlive the loader; it is only read.
// Thread-compatible: one consumer thread calls StartEpoch() and Next(); the
// workers are internal.
class DataLoader {
 public:
  struct Options {
    // samples per batch
    int batch_size = 16;
    // reshuffle every epoch (seeded by seed and epoch)
    bool shuffle = false;
    // loading threads (0 = load on the consumer's thread)
    int workers = 2;
    // batches prepared ahead
    int prefetch = 4;
    // shuffle and augmentation seed
    uint64_t seed = 0;
    // apply training augmentation with the epoch's AugmentOptions (else
    // NoAugmentation())
    bool augment = false;
  };

  DataLoader(const DetectionDataset* dataset, Options options);
  ~DataLoader();  // stops and joins the workers

  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // ceil(size / batch_size).
  size_t num_batches() const;

  // Starts the batches of `epoch` with these augmentation settings (e.g.
  // mosaic 0 once mosaic is closed). Abandons an epoch in progress: its
  // prepared batches are dropped and its workers joined first.
  void StartEpoch(int epoch, const AugmentOptions& hyp);

  // The next batch in order; nullopt after the epoch's last. Blocks until the
  // batch is ready. Errors: FAILED_PRECONDITION before StartEpoch(); a sample
  // that failed to load (naming the file) fails its batch, and the following
  // call continues with the next batch.
  absl::StatusOr<std::optional<Batch>> Next();

  // Dataset indices of the current epoch, in sample order.
  const std::vector<size_t>& order() const { return order_; }

 private:
  // Stops and joins the workers of the current epoch and drops its batches.
  void StopWorkers() ABSL_LOCKS_EXCLUDED(mu_);
  void WorkerLoop() ABSL_LOCKS_EXCLUDED(mu_);
  // Loads batch `b` of the current epoch; CANCELLED if the epoch is abandoned
  // meanwhile.
  absl::StatusOr<Batch> BuildBatch(int64_t b) const;

  const DetectionDataset* const dataset_;
  const Options options_;

  // The epoch's plan: written by StartEpoch() while no worker runs, then only
  // read (by the workers too) until the next StartEpoch().
  bool started_ = false;
  int epoch_ = 0;
  AugmentOptions hyp_;
  std::vector<size_t> order_;
  int64_t num_batches_ = 0;

  // checked between samples
  std::atomic<bool> abandon_{false};
  std::vector<std::thread> workers_;

  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  int64_t next_claim_ ABSL_GUARDED_BY(mu_) = 0;  // next batch to prepare
  int64_t consumed_ ABSL_GUARDED_BY(mu_) = 0;    // next batch to hand out
  std::map<int64_t, absl::StatusOr<Batch>> ready_ ABSL_GUARDED_BY(mu_);
};

}  // namespace yolohook::data

#endif  // YOLOHOOK_SERVER_ENGINE_DATA_LOADER_H_
