// Client: the typed calls (jobs, prediction) and the front of the callback
// stream. How it connects is connection.h; the Connect stream, its
// subscriptions and their resumption are callback_stream.h and
// subscriptions.h; a callback's view of an event is remote_state.h.
#include "client/cpp/client.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/cpp/callback_stream.h"
#include "client/cpp/connection.h"
#include "server/engine/config.h"
#include "server/wire/conversions.h"
#include "yolohook/v1/jobs.grpc.pb.h"
#include "yolohook/v1/predict.grpc.pb.h"

namespace yolohook {
namespace {

using client_internal::CallUnary;

bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED ||
         state == v1::JOB_STATE_CANCELLED || state == v1::JOB_STATE_INTERRUPTED;
}

absl::StatusOr<v1::Mode> ModeToWire(absl::string_view name) {
  absl::StatusOr<Mode> mode = ModeFromName(name);
  if (!mode.ok()) return mode.status();
  return wire::ModeToWire(*mode);
}

}  // namespace

// What a Client holds: its options, how it connects, the stubs of the typed
// calls and the callback stream. Declared in this order so that the stream
// (which refers to the options and the setup) goes first.
class Client::Impl {
 public:
  explicit Impl(Options options)
      : options(std::move(options)),
        setup(this->options),
        channel(setup.NewChannel()),
        jobs(v1::JobService::NewStub(channel)),
        predict(v1::PredictService::NewStub(channel)),
        callbacks(this->options, setup) {}

  const Options options;
  const client_internal::ChannelSetup setup;
  const std::shared_ptr<grpc::Channel> channel;
  const std::unique_ptr<v1::JobService::Stub> jobs;
  const std::unique_ptr<v1::PredictService::Stub> predict;
  client_internal::CallbackStream callbacks;
};

Client::Client() : Client(Options()) {}
Client::Client(Options options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}
Client::~Client() = default;

// --- Jobs and prediction ----------------------------------------------------

absl::StatusOr<v1::Job> Client::Submit(
    absl::string_view mode, const std::map<std::string, std::string>& args,
    const std::map<std::string, std::string>& labels,
    const std::vector<v1::Image>& images) {
  absl::StatusOr<v1::Mode> wire = ModeToWire(mode);
  if (!wire.ok()) return wire.status();
  return Submit(*wire, args, labels, images);
}

absl::StatusOr<v1::Job> Client::Submit(
    v1::Mode mode, const std::map<std::string, std::string>& args,
    const std::map<std::string, std::string>& labels,
    const std::vector<v1::Image>& images) {
  v1::SubmitJobRequest request;
  request.set_mode(mode);
  request.mutable_args()->insert(args.begin(), args.end());
  request.mutable_labels()->insert(labels.begin(), labels.end());
  for (const v1::Image& image : images) *request.add_images() = image;
  return CallUnary(impl_->setup, impl_->options.rpc_timeout, *impl_->jobs,
                   &v1::JobService::Stub::SubmitJob, request);
}

absl::StatusOr<v1::Job> Client::Get(const std::string& id) {
  v1::GetJobRequest request;
  request.set_id(id);
  return CallUnary(impl_->setup, impl_->options.rpc_timeout, *impl_->jobs,
                   &v1::JobService::Stub::GetJob, request);
}

absl::StatusOr<v1::ListJobsResponse> Client::List(const ListQuery& query) {
  v1::ListJobsRequest request;
  for (v1::JobState s : query.states) request.add_states(s);
  request.mutable_match_labels()->insert(query.labels.begin(),
                                         query.labels.end());
  request.set_page_size(query.page_size);
  request.set_page_token(query.page_token);
  return CallUnary(impl_->setup, impl_->options.rpc_timeout, *impl_->jobs,
                   &v1::JobService::Stub::ListJobs, request);
}

absl::StatusOr<v1::Job> Client::Cancel(const std::string& id) {
  v1::CancelJobRequest request;
  request.set_id(id);
  return CallUnary(impl_->setup, impl_->options.rpc_timeout, *impl_->jobs,
                   &v1::JobService::Stub::CancelJob, request);
}

absl::StatusOr<v1::Job> Client::Wait(const std::string& id,
                                     absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::Duration pause = absl::Milliseconds(20);
  while (true) {
    absl::StatusOr<v1::Job> job = Get(id);
    if (!job.ok() || IsTerminal(job->state())) return job;
    const absl::Time now = absl::Now();
    if (now >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("job ", id, " still ", v1::JobState_Name(job->state()),
                       " after ", absl::FormatDuration(timeout)));
    }
    absl::SleepFor(std::min(pause, deadline - now));
    pause = std::min(pause * 2, absl::Milliseconds(500));
  }
}

absl::StatusOr<v1::PredictResponse> Client::Predict(
    const std::map<std::string, std::string>& args,
    const std::vector<v1::Image>& images,
    const std::map<std::string, std::string>& labels) {
  v1::PredictRequest request;
  request.mutable_args()->insert(args.begin(), args.end());
  request.mutable_labels()->insert(labels.begin(), labels.end());
  for (const v1::Image& image : images) *request.add_images() = image;
  return CallUnary(impl_->setup, impl_->options.rpc_timeout, *impl_->predict,
                   &v1::PredictService::Stub::Predict, request);
}

std::unique_ptr<FrameStream> Client::PredictStream(
    const std::map<std::string, std::string>& args,
    const std::map<std::string, std::string>& labels) {
  return FrameStream::Open(impl_->channel, impl_->setup, args, labels);
}

// --- Remote callbacks -------------------------------------------------------

absl::Status Client::AddCallback(absl::string_view event, Callback fn,
                                 CallbackOptions options) {
  return impl_->callbacks
      .Subscribe({std::string(event)}, std::move(fn), std::move(options))
      .status();
}

absl::StatusOr<std::string> Client::Subscribe(
    const std::vector<std::string>& events, Callback fn,
    CallbackOptions options) {
  return impl_->callbacks.Subscribe(events, std::move(fn), std::move(options));
}

absl::Status Client::Unsubscribe(const std::string& subscription_id) {
  return impl_->callbacks.Unsubscribe(subscription_id);
}

absl::Status Client::WaitEnded(const std::string& subscription_id,
                               absl::Duration timeout) {
  return impl_->callbacks.WaitEnded(subscription_id, timeout);
}

const v1::Event* Client::CurrentEvent() {
  return client_internal::CallbackStream::CurrentEvent();
}

void Client::Start() { impl_->callbacks.Start(); }
void Client::Stop() { impl_->callbacks.Stop(); }

absl::StatusOr<v1::Image> ImageFromFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read image file '", path, "'"));
  }
  std::ostringstream bytes;
  bytes << in.rdbuf();
  v1::Image image;
  image.set_name(path);
  image.set_data(bytes.str());
  if (image.data().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("image file '", path, "' is empty"));
  }
  return image;
}

}  // namespace yolohook
