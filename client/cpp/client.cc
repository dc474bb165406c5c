#include "client/cpp/client.h"

#include <google/protobuf/util/message_differencer.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <deque>
#include <fstream>
#include <limits>
#include <opencv2/imgcodecs.hpp>
#include <sstream>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "server/engine/config.h"
#include "server/wire/conversions.h"
#include "yolohook/v1/callbacks.grpc.pb.h"
#include "yolohook/v1/jobs.grpc.pb.h"
#include "yolohook/v1/predict.grpc.pb.h"

namespace yolohook {
namespace {

using Stream = grpc::ClientReaderWriter<v1::ClientMessage, v1::ServerMessage>;

thread_local const v1::Event* current_event = nullptr;

absl::Status FromGrpc(const grpc::Status& status, const std::string& target) {
  if (status.ok()) return absl::OkStatus();
  std::string message = status.error_message();
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
      status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    message = absl::StrCat("yolohookd at ", target, ": ", message);
  }
  if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED &&
      absl::StrContains(message, "message larger than max")) {
    // gRPC's own words name neither limit.
    absl::StrAppend(&message,
                    " (bytes; requests are limited by yolohookd "
                    "--max_message_mb, this client by "
                    "Client::Options::max_message_bytes: send fewer or "
                    "smaller images per request, or raise the limits)");
  }
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      message);
}

// A file's contents, for option `option`. INVALID_ARGUMENT naming both when
// it cannot be read or lacks `must_contain`.
absl::StatusOr<std::string> ReadOptionFile(absl::string_view option,
                                           const std::string& path,
                                           absl::string_view must_contain,
                                           absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Client::Options::", option, " ", path, ": cannot be read"));
  }
  std::stringstream text;
  text << in.rdbuf();
  std::string data = text.str();
  if (!absl::StrContains(data, must_contain)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Client::Options::", option, " ", path, ": not ", what));
  }
  return data;
}

// The bearer token and credentials the options ask for.
absl::Status SetUpSecurity(const Client::Options& options, std::string& token,
                           std::shared_ptr<grpc::ChannelCredentials>& creds,
                           grpc::ChannelArguments& args) {
  token = options.token;
  if (token.empty() && !options.token_file.empty()) {
    absl::StatusOr<std::string> text =
        ReadOptionFile("token_file", options.token_file, "", "");
    if (!text.ok()) return text.status();
    for (absl::string_view line : absl::StrSplit(*text, '\n')) {
      line = absl::StripAsciiWhitespace(line);
      if (!line.empty()) {
        token = std::string(line);
        break;
      }
    }
    if (token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("Client::Options::token_file ", options.token_file,
                       ": holds no token"));
    }
  }
  if (options.credentials != nullptr) {
    creds = options.credentials;
    return absl::OkStatus();
  }
  const bool tls = options.tls || !options.tls_ca_file.empty() ||
                   !options.tls_cert_file.empty() ||
                   !options.tls_key_file.empty() ||
                   !options.tls_server_name.empty();
  if (!tls) {
    creds = grpc::InsecureChannelCredentials();
    return absl::OkStatus();
  }
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "Client::Options::tls_cert_file and tls_key_file go together (mutual "
        "TLS needs both)");
  }
  grpc::SslCredentialsOptions ssl;
  if (!options.tls_ca_file.empty()) {
    absl::StatusOr<std::string> ca =
        ReadOptionFile("tls_ca_file", options.tls_ca_file,
                       "-----BEGIN CERTIFICATE-----", "a PEM certificate");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *std::move(ca);
  }
  if (!options.tls_cert_file.empty()) {
    absl::StatusOr<std::string> cert =
        ReadOptionFile("tls_cert_file", options.tls_cert_file,
                       "-----BEGIN CERTIFICATE-----", "a PEM certificate");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key =
        ReadOptionFile("tls_key_file", options.tls_key_file, "PRIVATE KEY-----",
                       "a PEM private key");
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *std::move(cert);
    ssl.pem_private_key = *std::move(key);
  }
  if (!options.tls_server_name.empty()) {
    args.SetSslTargetNameOverride(options.tls_server_name);
  }
  creds = grpc::SslCredentials(ssl);
  return absl::OkStatus();
}

bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED ||
         state == v1::JOB_STATE_CANCELLED || state == v1::JOB_STATE_INTERRUPTED;
}

absl::StatusOr<v1::Mode> ModeToWire(absl::string_view name) {
  absl::StatusOr<Mode> mode = ModeFromName(name);
  if (!mode.ok()) return mode.status();
  return wire::ModeToWire(*mode);
}

void FillPredictor(const v1::PredictorState& s, bool decode_images,
                   PredictorState& out, std::vector<std::string>& pixels) {
  out.source_type = s.source_type();
  out.save_dir = s.save_dir();
  out.batch_index = s.batch_index();
  out.seen = s.seen();
  out.paths.assign(s.paths().begin(), s.paths().end());
  out.strings.assign(s.strings().begin(), s.strings().end());
  out.frame_indices.assign(s.frame_indices().begin(), s.frame_indices().end());
  for (const v1::Result& r : s.results())
    out.results.push_back(wire::FromWire(r));
  if (!decode_images) return;
  // Decode every frame first: FrameViews point into `pixels`, which must not
  // reallocate afterwards.
  pixels.reserve(static_cast<size_t>(s.images_size()));
  std::vector<cv::Size> sizes;
  for (const v1::Image& image : s.images()) {
    const std::string& data = image.data();
    cv::Mat mat;
    if (!data.empty()) {
      try {
        mat = cv::imdecode(cv::Mat(1, static_cast<int>(data.size()), CV_8UC1,
                                   const_cast<char*>(data.data())),
                           cv::IMREAD_COLOR);
      } catch (const cv::Exception&) {
        mat = cv::Mat();
      }
    }
    if (!mat.empty() && !mat.isContinuous()) mat = mat.clone();
    pixels.emplace_back(
        mat.empty()
            ? std::string()
            : std::string(mat.ptr<char>(), mat.total() * mat.elemSize()));
    sizes.push_back(mat.empty() ? cv::Size() : mat.size());
  }
  for (size_t i = 0; i < pixels.size(); ++i) {
    FrameView view;
    if (!pixels[i].empty()) {
      view.height = sizes[i].height;
      view.width = sizes[i].width;
      view.step = static_cast<int64_t>(sizes[i].width) * 3;
      view.bgr = reinterpret_cast<const uint8_t*>(pixels[i].data());
    }
    out.frames.push_back(view);
  }
}

ExporterState ExporterFromWire(const v1::ExporterState& s) {
  ExporterState out;
  out.file = s.file();
  out.format = s.format();
  out.imgsz = s.imgsz();
  out.metadata.insert(s.metadata().begin(), s.metadata().end());
  out.output = s.output();
  return out;
}

absl::Status FillState(const v1::Event& event, bool decode_images,
                       RemoteEventState& state) {
  absl::StatusOr<Event> e = EventFromName(event.name());
  if (!e.ok()) return e.status();
  state.ctx = EventContext();
  state.ctx.event = *e;
  const std::map<std::string, std::string> args(event.args().begin(),
                                                event.args().end());
  const Stage stage = StageOf(*e);
  auto mismatch = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("event ", event.name(), " (job ", event.job_id(), ", seq ",
                     event.seq(), ") carries the state of another stage"));
  };
  switch (stage) {
    case Stage::kTrainer:
      if (event.has_validator() || event.has_predictor() ||
          event.has_exporter())
        return mismatch();
      state.trainer = wire::TrainerFromWire(event.trainer());
      state.trainer.args = args;
      state.ctx.trainer = &state.trainer;
      break;
    case Stage::kValidator:
      if (event.has_trainer() || event.has_predictor() || event.has_exporter())
        return mismatch();
      state.validator = wire::ValidatorFromWire(event.validator());
      state.validator.args = args;
      state.ctx.validator = &state.validator;
      break;
    case Stage::kPredictor:
      if (event.has_trainer() || event.has_validator() || event.has_exporter())
        return mismatch();
      state.predictor = PredictorState();
      FillPredictor(event.predictor(), decode_images, state.predictor,
                    state.frame_pixels);
      state.predictor.args = args;
      state.ctx.predictor = &state.predictor;
      break;
    case Stage::kExporter:
      if (event.has_trainer() || event.has_validator() || event.has_predictor())
        return mismatch();
      state.exporter = ExporterFromWire(event.exporter());
      state.exporter.args = args;
      state.ctx.exporter = &state.exporter;
      break;
  }
  return absl::OkStatus();
}

// Keys of `after` that are new or changed relative to `before`.
template <typename M>
void ChangedValues(const std::map<std::string, double>& before,
                   const std::map<std::string, double>& after, M* out) {
  for (const auto& [key, value] : after) {
    auto it = before.find(key);
    // NaN is never equal to itself: a callback leaving NaN in place is no
    // change.
    if (it != before.end() &&
        (it->second == value || (value != value && it->second != it->second)))
      continue;
    (*out)[key] = value;
  }
}

bool SameResults(const std::vector<Result>& a, const std::vector<Result>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!google::protobuf::util::MessageDifferencer::Equals(wire::ToWire(a[i]),
                                                            wire::ToWire(b[i])))
      return false;
  }
  return true;
}

}  // namespace

absl::Status StateFromEvent(const v1::Event& event, RemoteEventState& state) {
  return FillState(event, /*decode_images=*/true, state);
}

std::vector<v1::Mutation> DiffMutations(const RemoteEventState& before,
                                        const RemoteEventState& after) {
  std::vector<v1::Mutation> out;
  const EventContext& b = before.ctx;
  const EventContext& a = after.ctx;
  if (a.predictor != nullptr && b.predictor != nullptr &&
      !SameResults(b.predictor->results, a.predictor->results)) {
    v1::Mutation m;
    for (const Result& r : a.predictor->results)
      *m.mutable_replace_results()->add_results() = wire::ToWire(r);
    out.push_back(std::move(m));
  }
  if (a.trainer != nullptr && b.trainer != nullptr) {
    if (a.trainer->stop && !b.trainer->stop) {
      v1::Mutation m;
      m.mutable_stop_training()->set_reason(
          absl::StrCat("stopped by a remote callback at ", EventName(a.event)));
      out.push_back(std::move(m));
    }
    v1::Mutation hyp;
    ChangedValues(b.trainer->hyperparameters, a.trainer->hyperparameters,
                  hyp.mutable_set_hyperparameters()->mutable_values());
    if (!hyp.set_hyperparameters().values().empty())
      out.push_back(std::move(hyp));
    v1::Mutation log;
    ChangedValues(b.trainer->logged_metrics, a.trainer->logged_metrics,
                  log.mutable_log_metrics()->mutable_metrics());
    if (!log.log_metrics().metrics().empty()) out.push_back(std::move(log));
  }
  if (a.fail_reason && !b.fail_reason) {
    v1::Mutation m;
    m.mutable_fail_job()->set_reason(*a.fail_reason);
    out.push_back(std::move(m));
  }
  return out;
}

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

// ---------------------------------------------------------------------------

// One PredictStream call. The reader thread owns stream reads; writes,
// WritesDone and grpc's Finish are serialised by write_mu_, and Finish runs
// only after the reader saw the end of the stream.
class FrameStream::Impl {
 public:
  // `setup`: the client's option errors; when not OK the stream ends with it
  // at once, without a call.
  Impl(std::shared_ptr<grpc::Channel> channel, std::string target,
       const absl::Status& setup, const std::string& token,
       const std::map<std::string, std::string>& args,
       const std::map<std::string, std::string>& labels)
      : target_(std::move(target)),
        stub_(v1::PredictService::NewStub(std::move(channel))) {
    if (!setup.ok()) {
      absl::MutexLock write_lock(&write_mu_);
      absl::MutexLock lock(&mu_);
      writes_closed_ = true;
      finished_ = true;
      status_ = setup;
      reads_done_ = true;
      return;
    }
    first_.mutable_args()->insert(args.begin(), args.end());
    first_.mutable_labels()->insert(labels.begin(), labels.end());
    if (!token.empty()) {
      context_.AddMetadata("authorization", absl::StrCat("Bearer ", token));
    }
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
      status_ = FromGrpc(status, target_);
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
  v1::Frame first_ ABSL_GUARDED_BY(write_mu_);  // args and labels
  bool first_sent_ ABSL_GUARDED_BY(write_mu_) = false;
  bool writes_closed_ ABSL_GUARDED_BY(write_mu_) = false;
  bool finished_ ABSL_GUARDED_BY(write_mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(write_mu_);  // Finish's, once finished_

  absl::Mutex mu_;
  std::deque<v1::FrameResult> results_ ABSL_GUARDED_BY(mu_);  // not yet taken
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;

  std::thread reader_;  // last: started after everything it uses
};

class Client::Impl {
 public:
  explicit Impl(Options options) : options_(std::move(options)) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(options_.max_message_bytes);
    args.SetMaxSendMessageSize(options_.max_message_bytes);
    // gRPC's own reconnect backoff (up to two minutes by default) would
    // outlast ours: keep them in step.
    const int initial = static_cast<int>(std::max<int64_t>(
        1, absl::ToInt64Milliseconds(options_.reconnect_initial_backoff)));
    const int max_backoff = static_cast<int>(std::max<int64_t>(
        initial, absl::ToInt64Milliseconds(options_.reconnect_max_backoff)));
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, initial);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, initial);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, max_backoff);
    setup_ = SetUpSecurity(options_, token_, credentials_, args);
    if (!setup_.ok()) credentials_ = grpc::InsecureChannelCredentials();
    channel_args_ = args;
    channel_ =
        grpc::CreateCustomChannel(options_.target, credentials_, channel_args_);
    jobs_ = v1::JobService::NewStub(channel_);
    predict_ = v1::PredictService::NewStub(channel_);
  }

  ~Impl() { Stop(); }

  // --- Jobs.

  void Authorize(grpc::ClientContext& context) const {
    if (!token_.empty()) {
      context.AddMetadata("authorization", absl::StrCat("Bearer ", token_));
    }
  }

  void Prepare(grpc::ClientContext& context) const {
    Authorize(context);
    if (options_.rpc_timeout != absl::InfiniteDuration())
      context.set_deadline(
          absl::ToChronoTime(absl::Now() + options_.rpc_timeout));
  }

  absl::StatusOr<v1::Job> Submit(
      v1::Mode mode, const std::map<std::string, std::string>& args,
      const std::map<std::string, std::string>& labels,
      const std::vector<v1::Image>& images) {
    v1::SubmitJobRequest request;
    request.set_mode(mode);
    request.mutable_args()->insert(args.begin(), args.end());
    request.mutable_labels()->insert(labels.begin(), labels.end());
    for (const v1::Image& image : images) *request.add_images() = image;
    if (!setup_.ok()) return setup_;
    grpc::ClientContext context;
    Prepare(context);
    v1::Job job;
    grpc::Status status = jobs_->SubmitJob(&context, request, &job);
    if (!status.ok()) return FromGrpc(status, options_.target);
    return job;
  }

  absl::StatusOr<v1::Job> Get(const std::string& id) {
    v1::GetJobRequest request;
    request.set_id(id);
    if (!setup_.ok()) return setup_;
    grpc::ClientContext context;
    Prepare(context);
    v1::Job job;
    grpc::Status status = jobs_->GetJob(&context, request, &job);
    if (!status.ok()) return FromGrpc(status, options_.target);
    return job;
  }

  absl::StatusOr<v1::ListJobsResponse> List(const ListQuery& query) {
    v1::ListJobsRequest request;
    for (v1::JobState s : query.states) request.add_states(s);
    request.mutable_match_labels()->insert(query.labels.begin(),
                                           query.labels.end());
    request.set_page_size(query.page_size);
    request.set_page_token(query.page_token);
    if (!setup_.ok()) return setup_;
    grpc::ClientContext context;
    Prepare(context);
    v1::ListJobsResponse response;
    grpc::Status status = jobs_->ListJobs(&context, request, &response);
    if (!status.ok()) return FromGrpc(status, options_.target);
    return response;
  }

  absl::StatusOr<v1::Job> Cancel(const std::string& id) {
    v1::CancelJobRequest request;
    request.set_id(id);
    if (!setup_.ok()) return setup_;
    grpc::ClientContext context;
    Prepare(context);
    v1::Job job;
    grpc::Status status = jobs_->CancelJob(&context, request, &job);
    if (!status.ok()) return FromGrpc(status, options_.target);
    return job;
  }

  absl::StatusOr<v1::PredictResponse> Predict(
      const std::map<std::string, std::string>& args,
      const std::vector<v1::Image>& images,
      const std::map<std::string, std::string>& labels) {
    v1::PredictRequest request;
    request.mutable_args()->insert(args.begin(), args.end());
    request.mutable_labels()->insert(labels.begin(), labels.end());
    for (const v1::Image& image : images) *request.add_images() = image;
    if (!setup_.ok()) return setup_;
    grpc::ClientContext context;
    Prepare(context);
    v1::PredictResponse response;
    grpc::Status status = predict_->Predict(&context, request, &response);
    if (!status.ok()) return FromGrpc(status, options_.target);
    return response;
  }

  std::unique_ptr<FrameStream> PredictStream(
      const std::map<std::string, std::string>& args,
      const std::map<std::string, std::string>& labels) {
    return std::unique_ptr<FrameStream>(
        new FrameStream(std::make_unique<FrameStream::Impl>(
            channel_, options_.target, setup_, token_, args, labels)));
  }

  // --- Subscriptions.

  absl::StatusOr<std::string> Subscribe(const std::vector<std::string>& names,
                                        Callback fn, CallbackOptions options) {
    if (!setup_.ok()) return setup_;
    if (!fn) return absl::InvalidArgumentError("empty callback function");
    for (const std::string& name : names) {
      absl::StatusOr<Event> e = EventFromName(name);
      if (!e.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "unknown event '", name, "'; valid events: ", AllEventNames()));
      }
    }
    if (options.from_seq < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("from_seq ", options.from_seq, " is negative"));
    }
    if (options.from_seq > 0 && options.job_ids.empty()) {
      return absl::InvalidArgumentError(
          "from_seq needs job_ids (replays follow particular jobs)");
    }
    if (options.from_seq > 0 && options.mode == CallbackOptions::kIntercept) {
      return absl::InvalidArgumentError(
          "from_seq is for observers: interceptors only see new events");
    }
    auto sub = std::make_shared<Sub>();
    sub->events = names;
    sub->options = std::move(options);
    sub->fn = std::move(fn);
    std::shared_ptr<Connection> conn;
    v1::ClientMessage message;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_)
        return absl::FailedPreconditionError("the client was stopped");
      sub->id = absl::StrCat("cb", ++next_sub_);
      subs_[sub->id] = sub;
      if (current_ != nullptr) {
        conn = current_;
        message = BuildSubscribeLocked(*sub, conn->generation);
      }
    }
    if (conn != nullptr) Send(conn, std::move(message));
    Start();

    absl::MutexLock lock(&mu_);
    auto answered = [&sub]() { return sub->ever_acked || sub->ending; };
    mu_.AwaitWithTimeout(absl::Condition(&answered),
                         options_.subscribe_timeout);
    if (sub->ever_acked) return sub->id;
    subs_.erase(sub->id);
    if (sub->ending) return sub->end_status;
    sub->ending = true;
    return absl::UnavailableError(
        absl::StrCat("yolohookd at ", options_.target,
                     " did not acknowledge the subscription within ",
                     absl::FormatDuration(options_.subscribe_timeout)));
  }

  absl::Status Unsubscribe(const std::string& id) {
    std::shared_ptr<Connection> conn;
    v1::ClientMessage message;
    std::shared_ptr<Sub> sub;
    {
      absl::MutexLock lock(&mu_);
      auto it = subs_.find(id);
      if (it == subs_.end())
        return absl::NotFoundError(absl::StrCat("no subscription '", id, "'"));
      sub = it->second;
      if (sub->ending) return absl::OkStatus();
      sub->ending = true;
      if (current_ != nullptr && sub->sent_generation == current_->generation) {
        conn = current_;
        message.mutable_unsubscribe()->set_subscription_id(sub->wire_id);
      }
    }
    // The server's SubscriptionEnded ends it after its queued events; without
    // a stream (or if it breaks first), it is ended here or by the reader.
    if (conn == nullptr) {
      Enqueue(Item{Item::kEnded, sub, nullptr, {}, absl::OkStatus()},
              /*wait=*/false);
    } else {
      Send(conn, std::move(message));
    }
    return absl::OkStatus();
  }

  absl::Status WaitEnded(const std::string& id, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto it = subs_.find(id);
    if (it == subs_.end())
      return absl::NotFoundError(absl::StrCat("no subscription '", id, "'"));
    std::shared_ptr<Sub> sub = it->second;
    auto ended = [&sub]() { return sub->ended; };
    if (!mu_.AwaitWithTimeout(absl::Condition(&ended), timeout)) {
      return absl::DeadlineExceededError(
          absl::StrCat("subscription ", id, " still running after ",
                       absl::FormatDuration(timeout)));
    }
    return sub->end_status;
  }

  void Start() {
    absl::MutexLock lock(&mu_);
    if (started_ || stopping_) return;
    started_ = true;
    reader_ = std::thread([this] { ReadLoop(); });
    writer_ = std::thread([this] { WriteLoop(); });
    dispatcher_ = std::thread([this] { DispatchLoop(); });
  }

  void Stop() {
    std::shared_ptr<Connection> conn;
    std::shared_ptr<Connection> connecting;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_ && !started_) return;
      // Let the callback running now finish and its reply go out, so that a
      // program stopping after its last event does not drop that reply.
      if (started_) {
        mu_.AwaitWithTimeout(absl::Condition(this, &Impl::IdleLocked),
                             absl::Seconds(2));
      }
      stopping_ = true;
      conn = current_;
      connecting = connecting_;
    }
    if (conn != nullptr) conn->context.TryCancel();
    if (connecting != nullptr) connecting->context.TryCancel();
    if (reader_.joinable()) reader_.join();
    if (writer_.joinable()) writer_.join();
    if (dispatcher_.joinable()) dispatcher_.join();
    absl::MutexLock lock(&mu_);
    started_ = false;
    // Nobody will end the remaining subscriptions now.
    for (auto& [id, sub] : subs_) {
      if (!sub->ended) {
        sub->ended = true;
        sub->end_status = absl::CancelledError("the client was stopped");
      }
    }
  }

 private:
  // One Connect stream. Writes are serialised here; `closed` keeps writes away
  // once the reader finishes the call.
  struct Connection {
    uint64_t generation = 0;
    std::shared_ptr<grpc::Channel> channel;  // kept alive with its call
    grpc::ClientContext context;
    std::unique_ptr<Stream> stream;
    absl::Mutex write_mu;
    bool closed ABSL_GUARDED_BY(write_mu) = false;

    bool Write(const v1::ClientMessage& message) {
      absl::MutexLock lock(&write_mu);
      if (closed) return false;
      return stream->Write(message);
    }
  };

  // One subscription, across reconnects. Fields other than the immutable
  // events/options/fn are guarded by Impl::mu_.
  struct Sub {
    std::string id;                   // the client's name for it
    std::vector<std::string> events;  // empty: all
    CallbackOptions options;
    Callback fn;
    std::string wire_id;           // the id on the current stream
    int attempts = 0;              // Subscribes sent so far
    uint64_t sent_generation = 0;  // the stream the last Subscribe went to
    absl::Time sent_at;            // when the last Subscribe was queued
    bool acked = false;            // the last Subscribe was acknowledged
    bool ever_acked = false;       // the server accepted it once
    // Per job: the next seq expected; lower ones are duplicates.
    std::map<std::string, int64_t> next_seq;
    bool ending = false;  // no more Subscribes (ended, or on its way out)
    bool ended = false;   // its end was handled after its last event
    absl::Status end_status;
  };

  struct Item {
    enum Kind { kEvent, kEnded };
    Kind kind = kEvent;
    std::shared_ptr<Sub> sub;
    std::shared_ptr<Connection> conn;  // where a reply goes
    v1::Event event;
    absl::Status end_status;
  };

  void ReportError(const absl::Status& status) const {
    if (options_.on_error) {
      options_.on_error(status);
    } else {
      std::fprintf(stderr, "yolohook client: %s\n",
                   std::string(status.message()).c_str());
    }
  }

  v1::ClientMessage BuildSubscribeLocked(Sub& sub, uint64_t generation)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ++sub.attempts;
    sub.wire_id = absl::StrCat(sub.id, ".", sub.attempts);
    sub.sent_generation = generation;
    sub.sent_at = absl::Now();
    sub.acked = false;
    const CallbackOptions& o = sub.options;
    v1::ClientMessage message;
    v1::Subscribe* s = message.mutable_subscribe();
    s->set_subscription_id(sub.wire_id);
    for (const std::string& id : o.job_ids) s->add_job_ids(id);
    s->mutable_match_labels()->insert(o.match_labels.begin(),
                                      o.match_labels.end());
    for (const std::string& e : sub.events) s->add_events(e);
    s->set_include_images(o.include_images);
    if (o.mode == CallbackOptions::kIntercept) {
      s->set_mode(v1::SUBSCRIPTION_MODE_INTERCEPT);
      s->set_priority(o.priority);
      const absl::Duration timeout = o.reply_timeout > absl::ZeroDuration()
                                         ? o.reply_timeout
                                         : options_.reply_timeout;
      if (timeout > absl::ZeroDuration())
        *s->mutable_reply_timeout() = wire::ToDurationProto(timeout);
      s->set_failure_mode(o.failure_mode != v1::FAILURE_MODE_UNSPECIFIED
                              ? o.failure_mode
                              : options_.failure_mode);
      return message;
    }
    s->set_mode(v1::SUBSCRIPTION_MODE_OBSERVE);
    if (o.job_ids.empty()) return message;
    // Resume after the last event received from each job; duplicates of the
    // jobs further ahead are dropped on arrival.
    int64_t from = o.from_seq;
    if (sub.ever_acked) {
      from = std::numeric_limits<int64_t>::max();
      for (const std::string& job : o.job_ids) {
        auto it = sub.next_seq.find(job);
        from =
            std::min(from, it == sub.next_seq.end() ? int64_t{1} : it->second);
      }
      from = std::max<int64_t>(from, 1);
    }
    s->set_from_seq(from);
    return message;
  }

  std::shared_ptr<Sub> FindWireLocked(const std::string& wire_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const std::string id = wire_id.substr(0, wire_id.rfind('.'));
    auto it = subs_.find(id);
    if (it == subs_.end() || it->second->wire_id != wire_id) return nullptr;
    return it->second;
  }

  bool CanQueueLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || queue_.size() < options_.max_pending_events;
  }
  bool HasWorkLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || !queue_.empty();
  }
  bool IdleLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !dispatching_ && !writing_ && outbox_.empty();
  }
  bool HasOutgoingLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || !outbox_.empty();
  }

  // Queues a message for the writer thread: nobody else blocks on a write.
  void Send(std::shared_ptr<Connection> conn, v1::ClientMessage message)
      ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    outbox_.emplace_back(std::move(conn), std::move(message));
  }

  // The writer thread: one write in flight, in queue order. Writes to a
  // stream that broke meanwhile fail and are dropped (the reconnect sends
  // what is still needed).
  void WriteLoop() {
    while (true) {
      std::pair<std::shared_ptr<Connection>, v1::ClientMessage> next;
      std::shared_ptr<Connection> stale;
      {
        absl::MutexLock lock(&mu_);
        mu_.AwaitWithTimeout(absl::Condition(this, &Impl::HasOutgoingLocked),
                             absl::Milliseconds(250));
        if (stopping_) return;
        stale = UnansweredLocked();
      }
      if (stale != nullptr) {
        ReportError(absl::UnavailableError(
            absl::StrCat("yolohookd at ", options_.target,
                         " did not acknowledge a subscription within ",
                         absl::FormatDuration(options_.subscribe_timeout),
                         "; reconnecting on a new connection")));
        stale->context.TryCancel();
      }
      {
        absl::MutexLock lock(&mu_);
        if (outbox_.empty()) continue;
        next = std::move(outbox_.front());
        outbox_.pop_front();
        writing_ = true;
      }
      next.first->Write(next.second);
      absl::MutexLock lock(&mu_);
      writing_ = false;
    }
  }

  // The current stream if it left a Subscribe unanswered for longer than
  // subscribe_timeout: the connection may lead nowhere (a peer that vanished
  // without closing it), so the reader reopens the stream on a new channel.
  std::shared_ptr<Connection> UnansweredLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (current_ == nullptr || fresh_channel_) return nullptr;
    const absl::Time now = absl::Now();
    for (const auto& [id, sub] : subs_) {
      if (!sub->ending && !sub->acked &&
          sub->sent_generation == current_->generation &&
          now - sub->sent_at > options_.subscribe_timeout) {
        fresh_channel_ = true;
        return current_;
      }
    }
    return nullptr;
  }

  void Enqueue(Item item, bool wait) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (wait) mu_.Await(absl::Condition(this, &Impl::CanQueueLocked));
    if (stopping_) return;
    queue_.push_back(std::move(item));
  }

  // The reader thread: (re)connects, (re)subscribes, reads.
  void ReadLoop() {
    absl::Duration backoff = options_.reconnect_initial_backoff;
    bool reported = false;  // the current outage was reported
    while (true) {
      auto conn = std::make_shared<Connection>();
      conn->context.set_wait_for_ready(true);
      Authorize(conn->context);
      std::vector<v1::ClientMessage> subscribes;
      bool fresh;
      {
        absl::MutexLock lock(&mu_);
        if (stopping_) return;
        conn->generation = ++generation_;
        connecting_ = conn;  // Stop() cancels a connect that waits
        fresh = fresh_channel_ || callbacks_ == nullptr;
        fresh_channel_ = false;
      }
      if (fresh) {
        // The stream has a channel of its own, with its own connections, so
        // that a new channel means a new connection.
        grpc::ChannelArguments args = channel_args_;
        args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
        stream_channel_ =
            grpc::CreateCustomChannel(options_.target, credentials_, args);
        callbacks_ = v1::HookService::NewStub(stream_channel_);
      }
      conn->channel = stream_channel_;
      conn->stream = callbacks_->Connect(&conn->context);
      {
        // Published only with its stream: writers may use it from now on.
        absl::MutexLock lock(&mu_);
        connecting_ = nullptr;
        if (stopping_) conn->context.TryCancel();
        current_ = conn;
        for (auto& [id, sub] : subs_) {
          if (!sub->ending && sub->sent_generation != conn->generation)
            subscribes.push_back(BuildSubscribeLocked(*sub, conn->generation));
        }
      }
      for (v1::ClientMessage& m : subscribes) Send(conn, std::move(m));

      v1::ServerMessage message;
      while (conn->stream->Read(&message)) {
        backoff = options_.reconnect_initial_backoff;
        reported = false;
        Handle(conn, message);
      }
      std::vector<Item> unsubscribed;
      {
        absl::MutexLock lock(&mu_);
        current_ = nullptr;
        // Subscriptions on their way out whose end the server did not send.
        for (auto& [id, sub] : subs_) {
          if (sub->ending && !sub->ended)
            unsubscribed.push_back(
                Item{Item::kEnded, sub, nullptr, {}, sub->end_status});
        }
      }
      for (Item& item : unsubscribed) Enqueue(std::move(item), /*wait=*/false);
      // A write still in flight is cancelled so that it returns; otherwise
      // the call is left alone, so that Finish reports the server's status
      // (e.g. UNAUTHENTICATED) rather than a local CANCELLED.
      if (!conn->write_mu.TryLock()) {
        conn->context.TryCancel();
        conn->write_mu.Lock();
      }
      conn->closed = true;
      conn->write_mu.Unlock();
      grpc::Status status = conn->stream->Finish();
      if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
          status.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
        // Retrying with the same token cannot help: the subscriptions end
        // with the refusal (AddCallback returns it).
        EndAll(FromGrpc(status, options_.target));
      }
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      if (!reported) {
        reported = true;
        const absl::Status broken = FromGrpc(status, options_.target);
        mu_.Unlock();
        ReportError(absl::UnavailableError(absl::StrCat(
            "callback stream closed (",
            broken.ok() ? std::string("by the server") : broken.ToString(),
            "); reconnecting")));
        mu_.Lock();
      }
      mu_.AwaitWithTimeout(absl::Condition(&stopping_), backoff);
      if (stopping_) return;
      backoff = std::min(backoff * options_.reconnect_multiplier,
                         options_.reconnect_max_backoff);
    }
  }

  // Ends every subscription not yet ending with `status`.
  void EndAll(const absl::Status& status) ABSL_LOCKS_EXCLUDED(mu_) {
    std::vector<Item> ended;
    {
      absl::MutexLock lock(&mu_);
      for (auto& [id, sub] : subs_) {
        if (sub->ending) continue;
        sub->ending = true;
        sub->end_status = status;
        ended.push_back(Item{Item::kEnded, sub, nullptr, {}, status});
      }
    }
    for (Item& item : ended) Enqueue(std::move(item), /*wait=*/false);
  }

  void Handle(const std::shared_ptr<Connection>& conn,
              v1::ServerMessage& message) ABSL_LOCKS_EXCLUDED(mu_) {
    switch (message.kind_case()) {
      case v1::ServerMessage::kSubscribed: {
        const v1::Subscribed& ack = message.subscribed();
        absl::MutexLock lock(&mu_);
        std::shared_ptr<Sub> sub = FindWireLocked(ack.subscription_id());
        if (sub == nullptr) return;
        for (const auto& [job, last] : ack.last_seq()) {
          if (sub->next_seq.count(job) > 0) continue;
          sub->next_seq[job] =
              sub->options.from_seq > 0 ? sub->options.from_seq : last + 1;
        }
        sub->ever_acked = true;
        sub->acked = true;
        return;
      }
      case v1::ServerMessage::kEvent: {
        std::shared_ptr<Sub> sub;
        {
          absl::MutexLock lock(&mu_);
          sub = FindWireLocked(message.event().subscription_id());
          if (sub == nullptr || sub->ending) return;
          const v1::Event& event = message.event();
          auto it = sub->next_seq.find(event.job_id());
          if (it != sub->next_seq.end() && event.seq() < it->second) return;
          sub->next_seq[event.job_id()] = event.seq() + 1;
        }
        Item item;
        item.kind = Item::kEvent;
        item.sub = std::move(sub);
        item.conn = conn;
        item.event.Swap(message.mutable_event());
        Enqueue(std::move(item), /*wait=*/true);
        return;
      }
      case v1::ServerMessage::kReplyResult: {
        const v1::ReplyResult& r = message.reply_result();
        if (!r.applied()) {
          ReportError(absl::FailedPreconditionError(
              absl::StrCat("reply to job ", r.job_id(), " seq ", r.seq(),
                           " not applied: ", r.reason())));
        }
        return;
      }
      case v1::ServerMessage::kSubscriptionEnded:
        HandleEnded(conn, message.subscription_ended());
        return;
      case v1::ServerMessage::kError: {
        const v1::StreamError& error = message.error();
        const absl::Status status(static_cast<absl::StatusCode>(error.code()),
                                  error.message());
        std::shared_ptr<Sub> sub;
        bool acked = true;
        {
          absl::MutexLock lock(&mu_);
          sub = FindWireLocked(error.subscription_id());
          if (sub != nullptr && !sub->ending) {
            sub->ending = true;
            sub->end_status = status;
            acked = sub->ever_acked;
          } else {
            sub = nullptr;
          }
        }
        if (sub != nullptr) {
          Enqueue(Item{Item::kEnded, sub, nullptr, {}, status},
                  /*wait=*/false);
          if (!acked) return;  // Subscribe returns it
        }
        ReportError(status);
        return;
      }
      case v1::ServerMessage::KIND_NOT_SET:
        return;
    }
  }

  void HandleEnded(const std::shared_ptr<Connection>& conn,
                   const v1::SubscriptionEnded& ended) {
    std::shared_ptr<Sub> sub;
    v1::ClientMessage resubscribe;
    absl::Status problem;
    {
      absl::MutexLock lock(&mu_);
      sub = FindWireLocked(ended.subscription_id());
      if (sub == nullptr) return;
      switch (ended.reason()) {
        case v1::END_REASON_JOBS_DONE:
        case v1::END_REASON_UNSUBSCRIBED:
          sub->ending = true;
          break;
        case v1::END_REASON_SHUTDOWN:
          // The stream closes next; the reconnect subscribes again.
          sub->sent_generation = 0;
          return;
        case v1::END_REASON_LAGGING:
        case v1::END_REASON_COMPACTED: {
          if (sub->ending) return;
          for (const auto& [job, seq] : ended.resume_seq()) {
            auto it = sub->next_seq.find(job);
            if (ended.reason() == v1::END_REASON_COMPACTED &&
                it != sub->next_seq.end() && seq > it->second) {
              problem = absl::DataLossError(absl::StrCat(
                  "subscription ", sub->id, ": events ", it->second, "..",
                  seq - 1, " of job ", job, " are no longer retained"));
            }
            if (it == sub->next_seq.end() || seq > it->second)
              sub->next_seq[job] = seq;
          }
          if (sub->options.job_ids.empty() ||
              sub->options.mode == CallbackOptions::kIntercept) {
            problem = absl::DataLossError(absl::StrCat(
                "subscription ", sub->id, " fell behind (", ended.message(),
                "); events may have been missed"));
          }
          resubscribe = BuildSubscribeLocked(*sub, conn->generation);
          break;
        }
        default:
          sub->ending = true;
          sub->end_status = absl::InternalError(absl::StrCat(
              "subscription ", sub->id, " ended: ", ended.message()));
          break;
      }
    }
    if (resubscribe.has_subscribe()) {
      if (!problem.ok()) ReportError(problem);
      Send(conn, std::move(resubscribe));
      return;
    }
    absl::Status status;
    {
      absl::MutexLock lock(&mu_);
      status = sub->end_status;
    }
    Enqueue(Item{Item::kEnded, sub, nullptr, {}, status}, /*wait=*/false);
  }

  // The dispatcher thread: runs callbacks, sends interceptors' replies.
  void DispatchLoop() {
    while (true) {
      Item item;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(this, &Impl::HasWorkLocked));
        if (stopping_) return;
        item = std::move(queue_.front());
        queue_.pop_front();
        dispatching_ = item.kind == Item::kEvent;
      }
      if (item.kind == Item::kEnded) {
        absl::MutexLock lock(&mu_);
        item.sub->ended = true;
        item.sub->end_status = item.end_status;
        continue;
      }
      Dispatch(item);
      absl::MutexLock lock(&mu_);
      dispatching_ = false;
    }
  }

  void Dispatch(Item& item) {
    const v1::Event& event = item.event;
    const bool intercept =
        item.sub->options.mode == CallbackOptions::kIntercept;
    RemoteEventState after;
    absl::Status status =
        FillState(event, item.sub->options.include_images, after);
    std::vector<v1::Mutation> mutations;
    if (status.ok()) {
      RemoteEventState before;
      if (intercept) (void)FillState(event, /*decode_images=*/false, before);
      current_event = &event;
      item.sub->fn(after.ctx);
      current_event = nullptr;
      if (intercept) mutations = DiffMutations(before, after);
    } else {
      ReportError(status);
    }
    if (!intercept || !event.reply_required()) return;
    v1::ClientMessage message;
    v1::Reply* reply = message.mutable_reply();
    reply->set_subscription_id(event.subscription_id());
    reply->set_job_id(event.job_id());
    reply->set_seq(event.seq());
    for (v1::Mutation& m : mutations) reply->add_mutations()->Swap(&m);
    // A reply for an event of a stream that broke meanwhile is not sent: the
    // server has applied the failure mode already.
    Send(item.conn, std::move(message));
  }

  const Options options_;
  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  absl::Status setup_;  // the options' problem (files), reported by each call
  std::string token_;   // the bearer token ("" = none)
  grpc::ChannelArguments channel_args_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::JobService::Stub> jobs_;
  std::unique_ptr<v1::PredictService::Stub> predict_;
  // The Connect stream's channel and stub; used by the reader thread only.
  std::shared_ptr<grpc::Channel> stream_channel_;
  std::unique_ptr<v1::HookService::Stub> callbacks_;

  absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool dispatching_ ABSL_GUARDED_BY(mu_) = false;  // a callback is running
  bool writing_ ABSL_GUARDED_BY(mu_) = false;      // a write is in flight
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  std::shared_ptr<Connection> current_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<Connection> connecting_ ABSL_GUARDED_BY(mu_);
  bool fresh_channel_ ABSL_GUARDED_BY(mu_) = false;  // next stream: new channel
  int next_sub_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, std::shared_ptr<Sub>> subs_ ABSL_GUARDED_BY(mu_);
  std::deque<Item> queue_ ABSL_GUARDED_BY(mu_);
  std::deque<std::pair<std::shared_ptr<Connection>, v1::ClientMessage>> outbox_
      ABSL_GUARDED_BY(mu_);
  std::thread reader_;
  std::thread writer_;
  std::thread dispatcher_;
};

Client::Client() : Client(Options()) {}
Client::Client(Options options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}
Client::~Client() = default;

absl::StatusOr<v1::Job> Client::Submit(
    absl::string_view mode, const std::map<std::string, std::string>& args,
    const std::map<std::string, std::string>& labels,
    const std::vector<v1::Image>& images) {
  absl::StatusOr<v1::Mode> wire = ModeToWire(mode);
  if (!wire.ok()) return wire.status();
  return impl_->Submit(*wire, args, labels, images);
}

absl::StatusOr<v1::Job> Client::Submit(
    v1::Mode mode, const std::map<std::string, std::string>& args,
    const std::map<std::string, std::string>& labels,
    const std::vector<v1::Image>& images) {
  return impl_->Submit(mode, args, labels, images);
}

absl::StatusOr<v1::Job> Client::Get(const std::string& id) {
  return impl_->Get(id);
}

absl::StatusOr<v1::ListJobsResponse> Client::List(const ListQuery& query) {
  return impl_->List(query);
}

absl::StatusOr<v1::Job> Client::Cancel(const std::string& id) {
  return impl_->Cancel(id);
}

absl::StatusOr<v1::Job> Client::Wait(const std::string& id,
                                     absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::Duration pause = absl::Milliseconds(20);
  while (true) {
    absl::StatusOr<v1::Job> job = impl_->Get(id);
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
  return impl_->Predict(args, images, labels);
}

std::unique_ptr<FrameStream> Client::PredictStream(
    const std::map<std::string, std::string>& args,
    const std::map<std::string, std::string>& labels) {
  return impl_->PredictStream(args, labels);
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

absl::Status Client::AddCallback(absl::string_view event, Callback fn,
                                 CallbackOptions options) {
  return impl_
      ->Subscribe({std::string(event.data(), event.size())}, std::move(fn),
                  std::move(options))
      .status();
}

absl::StatusOr<std::string> Client::Subscribe(
    const std::vector<std::string>& events, Callback fn,
    CallbackOptions options) {
  return impl_->Subscribe(events, std::move(fn), std::move(options));
}

absl::Status Client::Unsubscribe(const std::string& subscription_id) {
  return impl_->Unsubscribe(subscription_id);
}

absl::Status Client::WaitEnded(const std::string& subscription_id,
                               absl::Duration timeout) {
  return impl_->WaitEnded(subscription_id, timeout);
}

const v1::Event* Client::CurrentEvent() { return current_event; }

void Client::Start() { impl_->Start(); }
void Client::Stop() { impl_->Stop(); }

}  // namespace yolohook
