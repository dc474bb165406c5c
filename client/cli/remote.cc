#include "client/cli/remote.h"

#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <memory>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/videoio.hpp>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "client/cpp/client.h"
#include "server/engine/data/sources.h"

namespace yolohook::cli {
namespace {

std::atomic<int> g_interrupts{0};
void OnSignal(int) { ++g_interrupts; }

void InstallSignals() {
  g_interrupts = 0;
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "yolohook: %s\n", std::string(status.message()).c_str());
  return 1;
}

Client::Options ClientOptions(const RemoteFlags& flags) {
  Client::Options options;
  options.target = flags.server;
  options.token = flags.token;
  if (!flags.token_file.empty()) {
    options.token.clear();
    options.token_file = flags.token_file;
  }
  options.tls_ca_file = flags.tls_ca;
  options.tls_cert_file = flags.tls_cert;
  options.tls_key_file = flags.tls_key;
  options.subscribe_timeout = absl::Seconds(30);
  return options;
}

std::string Lower(absl::string_view prefix, const std::string& enum_name) {
  return absl::AsciiStrToLower(absl::StripPrefix(enum_name, prefix));
}
std::string StateName(v1::JobState state) {
  return Lower("JOB_STATE_", v1::JobState_Name(state));
}
std::string ModeWireName(v1::Mode mode) {
  return Lower("MODE_", v1::Mode_Name(mode));
}

// "2 circles, 1 star" in class id order, as Ultralytics writes it.
// `name_of(cls)`: the class's name, "" when unknown.
template <typename NameOf>
std::string DetectionCounts(const std::map<int, int>& counts,
                            const NameOf& name_of) {
  std::string out;
  for (const auto& [cls, n] : counts) {
    std::string name = name_of(cls);
    if (name.empty()) name = absl::StrCat("class", cls);
    absl::StrAppend(&out, out.empty() ? "" : ", ", n, " ", name,
                    n > 1 ? "s" : "");
  }
  return out.empty() ? "(no detections)" : out;
}

// Prints a job's events the way a local run logs them. Lines and the live
// progress line share the terminal: a line first erases the progress line.
class Printer {
 public:
  Printer() : terminal_(isatty(fileno(stdout)) != 0) {}

  void Line(absl::string_view line) {
    absl::MutexLock lock(&mu_);
    LineLocked(line);
  }

  void OnEvent(EventContext& ctx) {
    absl::MutexLock lock(&mu_);
    if (ctx.trainer != nullptr) best_ = ctx.trainer->best;
    switch (ctx.event) {
      case Event::kOnTrainStart: {
        const TrainerState& t = *ctx.trainer;
        LineLocked(absl::StrFormat(
            "Training %d epochs of %d batches (batch %d, imgsz %d) in %s",
            t.epochs, t.num_batches, t.batch_size, t.imgsz, t.save_dir));
        break;
      }
      case Event::kOnTrainEpochStart:
        LineLocked(absl::StrFormat("\n%11s %10s %10s %10s %10s", "Epoch",
                                   "box_loss", "cls_loss", "dfl_loss", "Size"));
        break;
      case Event::kOnTrainBatchEnd:
        if (terminal_) ProgressLocked(*ctx.trainer);
        break;
      case Event::kOnTrainEpochEnd: {
        const TrainerState& t = *ctx.trainer;
        const std::vector<double> l = Loss(t);
        LineLocked(absl::StrFormat("%11s %10.4g %10.4g %10.4g %10d",
                                   absl::StrCat(t.epoch + 1, "/", t.epochs),
                                   l[0], l[1], l[2], t.imgsz));
        break;
      }
      case Event::kOnParamsUpdate: {
        std::string line = "hyperparameters:";
        for (const auto& [k, v] : ctx.trainer->hyperparameters)
          absl::StrAppend(&line, " ", k, "=", v);
        LineLocked(line);
        break;
      }
      case Event::kOnValStart:
        // A train job's final validation, of best.pt.
        if (ctx.validator->epoch < 0 && !best_.empty())
          LineLocked(absl::StrCat("\nValidating ", best_, "..."));
        break;
      case Event::kOnValEnd:
        ValTableLocked(*ctx.validator);
        break;
      case Event::kOnPredictBatchEnd: {
        // The engine's lines are written before interceptors run: rebuild
        // the detections part from the final results.
        const PredictorState& p = *ctx.predictor;
        for (size_t i = 0; i < p.results.size(); ++i) {
          const Result& r = p.results[i];
          std::string prefix = r.path;
          if (i < p.strings.size()) {
            const size_t colon = p.strings[i].find(": ");
            if (colon != std::string::npos)
              prefix = p.strings[i].substr(0, colon);
          }
          LineLocked(absl::StrFormat("%s: %dx%d %s, %.1fms", prefix,
                                     r.orig_width, r.orig_height, Detections(r),
                                     r.speed.inference_ms));
        }
        break;
      }
      case Event::kOnExportEnd:
        LineLocked(absl::StrCat("exported ", ctx.exporter->output));
        break;
      default:
        break;
    }
  }

 private:
  static std::string Detections(const Result& r) {
    std::map<int, int> counts;
    for (const Box& b : r.boxes) ++counts[b.cls];
    return DetectionCounts(counts, [&r](int cls) {
      return cls >= 0 && static_cast<size_t>(cls) < r.names.size()
                 ? r.names[static_cast<size_t>(cls)]
                 : std::string();
    });
  }

  static std::vector<double> Loss(const TrainerState& t) {
    std::vector<double> l = t.tloss;
    l.resize(3, 0.0);
    return l;
  }

  void LineLocked(absl::string_view line) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (progress_shown_) {
      std::fputs("\r\033[K", stdout);
      progress_shown_ = false;
    }
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
  }

  void ProgressLocked(const TrainerState& t)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const int width = 20;
    const int done =
        t.num_batches > 0 ? (t.batch_index + 1) * width / t.num_batches : 0;
    std::string bar(static_cast<size_t>(std::clamp(done, 0, width)), '#');
    bar.resize(width, '.');
    const std::vector<double> l = Loss(t);
    std::printf("\r%11s %10.4g %10.4g %10.4g  [%s] %d/%d",
                absl::StrCat(t.epoch + 1, "/", t.epochs).c_str(), l[0], l[1],
                l[2], bar.c_str(), t.batch_index + 1, t.num_batches);
    std::fflush(stdout);
    progress_shown_ = true;
  }

  void ValTableLocked(const ValidatorState& v)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto metric = [&v](const char* key) {
      auto it = v.metrics.find(key);
      return it == v.metrics.end() ? 0.0 : it->second;
    };
    int64_t instances = 0;
    for (const ClassMetrics& c : v.per_class) instances += c.instances;
    LineLocked(absl::StrFormat("%22s%11s%11s%11s%11s%11s%11s", "Class",
                               "Images", "Instances", "P", "R", "mAP50",
                               "mAP50-95"));
    LineLocked(absl::StrFormat(
        "%22s%11d%11d%11.3g%11.3g%11.3g%11.3g", "all", v.seen, instances,
        metric("metrics/precision(B)"), metric("metrics/recall(B)"),
        metric("metrics/mAP50(B)"), metric("metrics/mAP50-95(B)")));
    if (v.training && v.epoch >= 0) return;  // per class: final tables only
    for (const ClassMetrics& c : v.per_class) {
      LineLocked(absl::StrFormat("%22s%11d%11d%11.3g%11.3g%11.3g%11.3g", c.name,
                                 c.images, c.instances, c.precision, c.recall,
                                 c.map50, c.map50_95));
    }
  }

  const bool terminal_;
  absl::Mutex mu_;
  bool progress_shown_ ABSL_GUARDED_BY(mu_) = false;
  std::string best_ ABSL_GUARDED_BY(mu_);  // a train job's best.pt
};

void PrintSummary(const v1::Job& job, Printer& out) {
  const absl::Duration took =
      job.has_start_time() && job.has_end_time()
          ? absl::Seconds(job.end_time().seconds() -
                          job.start_time().seconds()) +
                absl::Nanoseconds(job.end_time().nanos() -
                                  job.start_time().nanos())
          : absl::ZeroDuration();
  out.Line(absl::StrFormat("\njob %s %s %s in %.1fs", job.id(),
                           ModeWireName(job.mode()), StateName(job.state()),
                           absl::ToDoubleSeconds(took)));
  if (job.mode() == v1::MODE_PREDICT) {
    size_t boxes = 0;
    for (const v1::Result& r : job.results()) boxes += r.boxes_size();
    out.Line(
        absl::StrFormat("%d images, %d detections", job.results_size(), boxes));
  }
  if (!job.save_dir().empty())
    out.Line(absl::StrCat("Results saved to ", job.save_dir()));
  for (const v1::Artifact& a : job.artifacts())
    out.Line(absl::StrFormat("  %-24s %s", a.kind(), a.path()));
  std::map<std::string, double> metrics(job.metrics().begin(),
                                        job.metrics().end());
  for (const auto& [k, v] : metrics)
    out.Line(absl::StrFormat("  %-24s %.5g", k, v));
}

// Splits "k=v"; INVALID_ARGUMENT naming `what` otherwise.
absl::Status SplitPair(absl::string_view word, absl::string_view what,
                       std::string& key, std::string& value) {
  const size_t eq = word.find('=');
  if (eq == absl::string_view::npos || eq == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": '", word, "' is not KEY=VALUE"));
  }
  key = std::string(word.substr(0, eq));
  value = std::string(word.substr(eq + 1));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PredictSource> LoadPredictSource(const std::string& source) {
  absl::StatusOr<ResolvedSource> resolved = ResolveSource(source);
  if (!resolved.ok()) return resolved.status();
  PredictSource out;
  for (const SourceFile& file : resolved->files) {
    if (file.video) {
      out.videos.push_back(file.path);
      continue;
    }
    absl::StatusOr<v1::Image> image = ImageFromFile(file.path);
    if (!image.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("source=", source, ": ", image.status().message()));
    }
    out.images.push_back(std::move(*image));
  }
  return out;
}

namespace {

// Submits the job and follows its events until it ends; returns the exit code.
int FollowJob(Client& client, const RemoteFlags& flags, Mode mode,
              const std::map<std::string, std::string>& args,
              const std::vector<v1::Image>& images, Printer& printer) {
  absl::StatusOr<v1::Job> job =
      client.Submit(ModeName(mode), args, flags.labels, images);
  if (!job.ok()) return Fail(job.status());
  printer.Line(absl::StrFormat("job %s %s on %s (%s)", job->id(),
                               ModeName(mode), flags.server,
                               StateName(job->state())));

  CallbackOptions follow;
  follow.job_ids = {job->id()};
  follow.from_seq = 1;
  absl::StatusOr<std::string> sub = client.Subscribe(
      {}, [&printer](EventContext& ctx) { printer.OnEvent(ctx); }, follow);
  if (!sub.ok()) return Fail(sub.status());

  int handled = 0;
  while (true) {
    absl::Status ended = client.WaitEnded(*sub, absl::Milliseconds(100));
    if (ended.ok()) break;
    if (ended.code() != absl::StatusCode::kDeadlineExceeded) return Fail(ended);
    const int interrupts = g_interrupts.load();
    if (interrupts == handled) continue;
    handled = interrupts;
    if (interrupts > 1) {
      std::fprintf(stderr, "yolohook: stopped following job %s\n",
                   job->id().c_str());
      return 130;
    }
    printer.Line(absl::StrCat("cancelling job ", job->id(),
                              " (Ctrl-C again to stop following)"));
    absl::StatusOr<v1::Job> cancelled = client.Cancel(job->id());
    if (!cancelled.ok() &&
        cancelled.status().code() != absl::StatusCode::kFailedPrecondition) {
      return Fail(cancelled.status());
    }
  }
  absl::StatusOr<v1::Job> done = client.Wait(job->id(), absl::Minutes(1));
  if (!done.ok()) return Fail(done.status());
  PrintSummary(*done, printer);
  switch (done->state()) {
    case v1::JOB_STATE_SUCCEEDED:
      return 0;
    case v1::JOB_STATE_CANCELLED:
      std::fprintf(stderr, "yolohook: job %s cancelled\n", done->id().c_str());
      return 130;
    default:
      std::fprintf(stderr, "yolohook: job %s %s: %s\n", done->id().c_str(),
                   StateName(done->state()).c_str(), done->error().c_str());
      return 1;
  }
}

// Decodes video `n` of `total` locally and streams every `stride`-th frame,
// JPEG-encoded, through one PredictStream job, printing a line per frame's
// result like a local run; returns the exit code. Ctrl-C cancels the stream.
int StreamVideo(Client& client, const RemoteFlags& flags,
                const std::map<std::string, std::string>& args,
                const std::string& path, size_t n, size_t total, int stride,
                Printer& printer) {
  cv::VideoCapture capture;
  try {
    capture.open(path);
  } catch (const cv::Exception& e) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("video ", path, " cannot be opened: ", e.what())));
  }
  if (!capture.isOpened()) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("video ", path, " cannot be opened")));
  }
  const int64_t frames =
      static_cast<int64_t>(capture.get(cv::CAP_PROP_FRAME_COUNT));
  const absl::Time start = absl::Now();
  std::unique_ptr<FrameStream> stream =
      client.PredictStream(args, flags.labels);

  // Results are printed as they come, while frames are still being sent.
  std::string job_id;
  int64_t predicted = 0;
  int64_t boxes = 0;
  std::thread reader([&] {
    v1::FrameResult r;
    while (stream->Next(&r)) {
      if (job_id.empty()) {
        job_id = r.job_id();
        printer.Line(absl::StrFormat("job %s predict on %s (streaming %s)",
                                     job_id, flags.server, path));
      }
      ++predicted;
      boxes += r.result().boxes_size();
      const v1::Result& result = r.result();
      std::map<int, int> counts;
      for (const v1::Box& b : result.boxes()) ++counts[b.cls()];
      const std::string detections =
          DetectionCounts(counts, [&result](int cls) {
            auto it = result.names().find(cls);
            return it == result.names().end() ? std::string() : it->second;
          });
      printer.Line(absl::StrFormat(
          "video %d/%d (frame %d/%d) %s: %dx%d %s, %.1fms", n, total,
          r.index() + 1, frames, path, result.orig_width(),
          result.orig_height(), detections, result.speed().inference_ms()));
    }
  });
  absl::Notification finished;
  std::thread watcher([&] {
    while (!finished.WaitForNotificationWithTimeout(absl::Milliseconds(100))) {
      if (g_interrupts.load() > 0) {
        printer.Line(absl::StrCat("cancelling the prediction of ", path));
        stream->Cancel();
        return;
      }
    }
  });

  absl::Status local;
  cv::Mat image;
  std::vector<uchar> jpeg;
  for (int64_t index = 0; g_interrupts.load() == 0; ++index) {
    try {
      if (!capture.read(image)) break;
      if (index % stride != 0) continue;
      if (!cv::imencode(".jpg", image, jpeg)) {
        local = absl::InternalError(absl::StrCat(
            "frame ", index + 1, " of ", path, " cannot be encoded as JPEG"));
      }
    } catch (const cv::Exception& e) {
      local = absl::InvalidArgumentError(absl::StrCat(
          "frame ", index + 1, " of ", path, " cannot be read: ", e.what()));
    }
    if (!local.ok()) {
      stream->Cancel();
      break;
    }
    if (!stream->Send(index, path, std::string(jpeg.begin(), jpeg.end())))
      break;  // the stream ended: Finish tells why
  }
  const absl::Status status = stream->Finish();
  finished.Notify();
  watcher.join();
  reader.join();

  if (!local.ok()) return Fail(local);
  if (status.code() == absl::StatusCode::kCancelled &&
      g_interrupts.load() > 0) {
    std::fprintf(stderr, "yolohook: prediction of %s cancelled\n",
                 path.c_str());
    return 130;
  }
  if (!status.ok()) return Fail(status);
  printer.Line(absl::StrFormat(
      "\njob %s predict succeeded in %.1fs\n%d frames of %s, %d detections",
      job_id.empty() ? "(none)" : job_id,
      absl::ToDoubleSeconds(absl::Now() - start), predicted, path, boxes));
  return 0;
}

}  // namespace

int RunRemoteJob(const RemoteFlags& flags, Mode mode,
                 std::map<std::string, std::string> args) {
  InstallSignals();
  Printer printer;
  if (mode != Mode::kPredict) {
    Client client(ClientOptions(flags));
    return FollowJob(client, flags, mode, args, {}, printer);
  }
  auto source = args.find("source");
  if (source == args.end() || source->second.empty()) {
    return Fail(absl::InvalidArgumentError(
        "predict needs source=: an image, a video, a folder, a glob or a .txt "
        "list (images are uploaded, videos streamed frame by frame)"));
  }
  absl::StatusOr<PredictSource> loaded = LoadPredictSource(source->second);
  if (!loaded.ok()) return Fail(loaded.status());
  args.erase(source);
  int stride = 1;
  if (auto it = args.find("vid_stride"); it != args.end()) {
    if (!absl::SimpleAtoi(it->second, &stride) || stride < 1) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "vid_stride=", it->second, ": expected a positive integer")));
    }
  }

  Client client(ClientOptions(flags));
  if (!loaded->images.empty()) {
    const int rc =
        FollowJob(client, flags, mode, args, loaded->images, printer);
    if (rc != 0) return rc;
  }
  args.erase("vid_stride");  // frames are picked here, not by the server
  for (size_t i = 0; i < loaded->videos.size(); ++i) {
    const int rc = StreamVideo(client, flags, args, loaded->videos[i], i + 1,
                               loaded->videos.size(), stride, printer);
    if (rc != 0) return rc;
  }
  return 0;
}

int RunJobs(const RemoteFlags& flags, const std::vector<std::string>& words) {
  Client::ListQuery query;
  query.page_size = 50;
  query.labels = flags.labels;
  for (const std::string& word : words) {
    std::string key, value;
    absl::Status s = SplitPair(word, "jobs", key, value);
    if (!s.ok()) return Fail(s);
    if (key == "state") {
      for (absl::string_view name : absl::StrSplit(value, ',')) {
        v1::JobState state;
        const std::string wire =
            absl::StrCat("JOB_STATE_", absl::AsciiStrToUpper(name));
        if (name.empty() || !v1::JobState_Parse(wire, &state) ||
            state == v1::JOB_STATE_UNSPECIFIED) {
          return Fail(absl::InvalidArgumentError(absl::StrCat(
              "state=", value, ": '", name,
              "' is not a job state (queued, running, succeeded, failed, "
              "cancelled, interrupted)")));
        }
        query.states.push_back(state);
      }
    } else if (key == "label") {
      std::string k, v;
      s = SplitPair(value, "label=", k, v);
      if (!s.ok()) return Fail(s);
      query.labels[k] = v;
    } else if (key == "limit") {
      if (!absl::SimpleAtoi(value, &query.page_size) || query.page_size < 1) {
        return Fail(absl::InvalidArgumentError(
            absl::StrCat("limit=", value, ": expected a positive integer")));
      }
    } else {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "jobs: unknown argument '", key, "' (state=, label=k=v, limit=)")));
    }
  }
  Client client(ClientOptions(flags));
  absl::StatusOr<v1::ListJobsResponse> page = client.List(query);
  if (!page.ok()) return Fail(page.status());
  std::printf("%-20s %-8s %-12s %-19s %9s  %s\n", "ID", "MODE", "STATE",
              "CREATED", "LAST_SEQ", "ERROR");
  for (const v1::Job& job : page->jobs()) {
    const absl::Time created =
        absl::FromUnixSeconds(job.create_time().seconds());
    std::printf(
        "%-20s %-8s %-12s %-19s %9lld  %s\n", job.id().c_str(),
        ModeWireName(job.mode()).c_str(), StateName(job.state()).c_str(),
        absl::FormatTime("%Y-%m-%d %H:%M:%S", created, absl::LocalTimeZone())
            .c_str(),
        static_cast<long long>(job.last_seq()), job.error().c_str());
  }
  if (!page->next_page_token().empty())
    std::printf("(more: limit=%d shows the newest only)\n", query.page_size);
  return 0;
}

int RunWatch(const RemoteFlags& flags, const std::vector<std::string>& words) {
  if (words.size() > 1) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("watch takes at most one JOB, got '", words[1], "'")));
  }
  CallbackOptions options;
  if (!words.empty()) {
    options.job_ids = {words[0]};
    options.from_seq = flags.has_from_seq ? flags.from_seq : 1;
  } else if (flags.has_from_seq) {
    return Fail(absl::InvalidArgumentError(
        "--from_seq needs a JOB (without one, watch shows new events of all "
        "jobs)"));
  }
  if (flags.has_from_seq && flags.from_seq < 1) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--from_seq=", flags.from_seq, ": expected a seq >= 1")));
  }
  std::vector<std::string> events;
  if (!flags.events.empty()) {
    for (absl::string_view name : absl::StrSplit(flags.events, ',')) {
      if (!EventFromName(name).ok()) {
        return Fail(absl::InvalidArgumentError(
            absl::StrCat("--events: unknown event '", name,
                         "'; valid events: ", AllEventNames())));
      }
      events.emplace_back(name);
    }
  }
  Client client(ClientOptions(flags));
  InstallSignals();
  absl::Mutex out_mu;
  absl::StatusOr<std::string> sub = client.Subscribe(
      events,
      [&out_mu](EventContext&) {
        const v1::Event* event = Client::CurrentEvent();
        std::string json;
        google::protobuf::util::JsonPrintOptions print;
        print.preserve_proto_field_names = true;
        if (!google::protobuf::util::MessageToJsonString(*event, &json, print)
                 .ok())
          return;
        absl::MutexLock lock(&out_mu);
        std::fwrite(json.data(), 1, json.size(), stdout);
        std::fputc('\n', stdout);
        std::fflush(stdout);
      },
      options);
  if (!sub.ok()) return Fail(sub.status());
  while (g_interrupts.load() == 0) {
    absl::Status ended = client.WaitEnded(*sub, absl::Milliseconds(100));
    if (ended.ok()) return 0;
    if (ended.code() != absl::StatusCode::kDeadlineExceeded) return Fail(ended);
  }
  return 130;
}

int RunCancel(const RemoteFlags& flags, const std::vector<std::string>& words) {
  if (words.size() != 1) {
    return Fail(absl::InvalidArgumentError(
        words.empty()
            ? "cancel needs a JOB id"
            : absl::StrCat("cancel takes one JOB, got '", words[1], "' too")));
  }
  Client client(ClientOptions(flags));
  absl::StatusOr<v1::Job> job = client.Cancel(words[0]);
  if (!job.ok()) return Fail(job.status());
  // A running job stops at its next callback event: report the state it ends
  // in, not the one it had when asked.
  if (job->state() != v1::JOB_STATE_CANCELLED) {
    std::fprintf(stderr, "yolohook: cancelling job %s (%s)\n",
                 job->id().c_str(), StateName(job->state()).c_str());
    job = client.Wait(words[0], absl::Minutes(5));
    if (!job.ok()) return Fail(job.status());
  }
  std::printf("job %s %s\n", job->id().c_str(),
              StateName(job->state()).c_str());
  return job->state() == v1::JOB_STATE_CANCELLED ? 0 : 1;
}

}  // namespace yolohook::cli
