// A PredictService.PredictStream call (see FrameStream in client.h).
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "client/cpp/client.h"
#include "client/cpp/connection.h"
#include "yolohook/v1/predict.grpc.pb.h"

namespace yolohook {

// One PredictStream call. The reader thread owns stream reads; writes,
// WritesDone and grpc's Finish are serialised by write_mu_, and Finish runs
// only after the reader saw the end of the stream.
class FrameStream::Impl {
 public:
  // `setup`: the client's option errors; when not OK the stream ends with it
  // at once, without a call.
  Impl(std::shared_ptr<grpc::Channel> channel,
       const client_internal::ChannelSetup& setup,
       const std::map<std::string, std::string>& args,
       const std::map<std::string, std::string>& labels)
      : target_(setup.target()),
        stub_(v1::PredictService::NewStub(std::move(channel))) {
    if (!setup.problem().ok()) {
      absl::MutexLock write_lock(&write_mu_);
      absl::MutexLock lock(&mu_);
      writes_closed_ = true;
      finished_ = true;
      status_ = setup.problem();
      reads_done_ = true;
      return;
    }
    first_.mutable_args()->insert(args.begin(), args.end());
    first_.mutable_labels()->insert(labels.begin(), labels.end());
    setup.Authorize(context_);
    stream_ = stub_->PredictStream(&context_);
    reader_ = std::thread([this] { ReadAll(); });
  }

  ~Impl() {
    bool finished;
    {
      absl::MutexLock lock(&write_mu_);
      finished = finished_;
    }
    if (!finished) Cancel();
    Finish().IgnoreError();
    if (reader_.joinable()) reader_.join();
  }

  bool Send(int64_t index, const std::string& name, std::string data)
      ABSL_LOCKS_EXCLUDED(write_mu_) {
    absl::MutexLock lock(&write_mu_);
    if (writes_closed_) return false;
    v1::Frame frame;
    if (!first_sent_) {
      frame.Swap(&first_);
      first_sent_ = true;
    }
    frame.set_index(index);
    frame.mutable_image()->set_name(name);
    frame.mutable_image()->set_data(std::move(data));
    if (!stream_->Write(frame)) {
      writes_closed_ = true;  // the call has ended; Finish tells why
      return false;
    }
    return true;
  }

  bool Next(v1::FrameResult* result) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](Impl* impl) ABSL_NO_THREAD_SAFETY_ANALYSIS {
          return !impl->results_.empty() || impl->reads_done_;
        },
        this));
    if (results_.empty()) return false;
    result->Swap(&results_.front());
    results_.pop_front();
    return true;
  }

  absl::Status Finish() ABSL_LOCKS_EXCLUDED(write_mu_, mu_) {
    absl::MutexLock lock(&write_mu_);
    if (finished_) return status_;
    if (!writes_closed_) {
      writes_closed_ = true;
      stream_->WritesDone();  // false: the call ended already
    }
    {
      absl::MutexLock read_lock(&mu_);
      mu_.Await(absl::Condition(&reads_done_));
    }
    const grpc::Status status = stream_->Finish();
    if (cancelled_.load() &&
        status.error_code() == grpc::StatusCode::CANCELLED) {
      status_ = absl::CancelledError("prediction stream cancelled");
    } else {
      status_ = client_internal::FromGrpc(status, target_);
    }
    finished_ = true;
    return status_;
  }

  void Cancel() {
    cancelled_ = true;
    context_.TryCancel();
  }

 private:
  // The reader thread: keeps every result until Next takes it.
  void ReadAll() {
    v1::FrameResult result;
    while (stream_->Read(&result)) {
      absl::MutexLock lock(&mu_);
      results_.push_back(std::move(result));
      result = v1::FrameResult();
    }
    absl::MutexLock lock(&mu_);
    reads_done_ = true;
  }

  const std::string target_;
  std::unique_ptr<v1::PredictService::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::Frame, v1::FrameResult>> stream_;
  std::atomic<bool> cancelled_{false};

  absl::Mutex write_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  // args and labels
  v1::Frame first_ ABSL_GUARDED_BY(write_mu_);
  bool first_sent_ ABSL_GUARDED_BY(write_mu_) = false;
  bool writes_closed_ ABSL_GUARDED_BY(write_mu_) = false;
  bool finished_ ABSL_GUARDED_BY(write_mu_) = false;
  // Finish's, once finished_
  absl::Status status_ ABSL_GUARDED_BY(write_mu_);

  absl::Mutex mu_;
  // not yet taken
  std::deque<v1::FrameResult> results_ ABSL_GUARDED_BY(mu_);
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;

  // last: started after everything it uses
  std::thread reader_;
};

std::unique_ptr<FrameStream> FrameStream::Open(
    std::shared_ptr<grpc::Channel> channel,
    const client_internal::ChannelSetup& setup,
    const std::map<std::string, std::string>& args,
    const std::map<std::string, std::string>& labels) {
  return std::unique_ptr<FrameStream>(new FrameStream(
      std::make_unique<Impl>(std::move(channel), setup, args, labels)));
}

FrameStream::FrameStream(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FrameStream::~FrameStream() = default;

bool FrameStream::Send(int64_t index, const std::string& name,
                       std::string data) {
  return impl_->Send(index, name, std::move(data));
}
bool FrameStream::Next(v1::FrameResult* result) { return impl_->Next(result); }
absl::Status FrameStream::Finish() { return impl_->Finish(); }
void FrameStream::Cancel() { impl_->Cancel(); }

}  // namespace yolohook
