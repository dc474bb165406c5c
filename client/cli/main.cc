// yolohook: the command line. Ultralytics' key=value syntax:
//
//   yolohook train data=shapes model=yolov8n epochs=3 imgsz=320
//   yolohook val model=runs/detect/train/weights/best.pt data=shapes
//   yolohook predict model=best.pt source=images/
//   yolohook export model=best.pt format=onnx
//
// With --server=HOST:PORT (or $YOLOHOOK_SERVER) the same commands run on a
// yolohookd and are followed through their events; jobs, watch and cancel
// need the server.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli/remote.h"
#include "server/engine/config.h"
#include "server/engine/version.h"
#include "server/engine/yolo.h"

namespace {

constexpr char kUsage[] = R"(usage: yolohook [detect] MODE key=value ...

MODE is train, val, predict or export. Arguments use Ultralytics' names and defaults:
  yolohook train data=shapes model=yolov8n epochs=3 imgsz=320
  yolohook val model=RUN/weights/best.pt data=shapes
  yolohook predict model=RUN/weights/best.pt source=image.jpg|folder|'*.jpg'|list.txt|video.mp4
  yolohook export model=RUN/weights/best.pt format=onnx imgsz=640

Other commands:
  yolohook args      every argument with its default and meaning
  yolohook version   the version
  yolohook help      this text

data=shapes is a built-in dataset, generated on first use under the data directory
(data_dir=, else $YOLOHOOK_DATA_DIR, else ~/.yolohook), where runs/ also goes.

Server mode: --server=HOST:PORT (or $YOLOHOOK_SERVER) submits MODE jobs to a yolohookd
and follows them (predict uploads the local images named by source= and streams the
frames of its videos, every vid_stride-th, decoded here; Ctrl-C cancels the job;
--label=KEY=VALUE, repeatable, labels the job for subscriptions). Flags may
come anywhere. Commands that need a server:
  yolohook jobs [state=running,queued] [label=KEY=VALUE] [limit=N]   a table of jobs
  yolohook watch [JOB] [--events=on_train_epoch_end,...] [--from_seq=N]
                     every event as a JSON line: of JOB (from seq 1, until it ends),
                     or of all jobs (new events only, until Ctrl-C)
  yolohook cancel JOB

A server with authentication wants a bearer token: --token_file=FILE (or
$YOLOHOOK_TOKEN_FILE; the file holds the token), or $YOLOHOOK_TOKEN. TLS:
--tls_ca=CA.pem (the CA that signed the server's certificate); mutual TLS adds
--tls_cert=CLIENT.pem --tls_key=CLIENT.key.
)";

yolohook::engine::Yolo* g_running = nullptr;

void OnSignal(int) {
  if (g_running != nullptr) g_running->Cancel();
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "yolohook: %s\n", std::string(status.message()).c_str());
  return status.code() == absl::StatusCode::kCancelled ? 130 : 1;
}

bool g_progress_shown = false;  // a progress line is on the terminal

// Progress lines and the engine's log share the terminal: a log line first
// erases the progress line.
void Log(absl::string_view line) {
  if (g_progress_shown) {
    std::fputs("\r\033[K", stdout);
    g_progress_shown = false;
  }
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

// On a terminal, a live progress line per training batch (Ultralytics users
// are used to a progress bar), drawn by a callback like any integration.
void AddProgressLine(yolohook::engine::Yolo& yolo, bool verbose) {
  if (!verbose || !isatty(fileno(stdout))) return;
  yolo.SetLog(Log);
  (void)yolo.AddCallback("on_train_batch_end", [](yolohook::EventContext& ctx) {
    const yolohook::TrainerState& t = *ctx.trainer;
    const int width = 20;
    const int done =
        t.num_batches > 0 ? (t.batch_index + 1) * width / t.num_batches : 0;
    std::string bar(static_cast<size_t>(done), '#');
    bar.resize(width, '.');
    std::printf("\r%11s %10.4g %10.4g %10.4g  [%s] %d/%d",
                absl::StrCat(t.epoch + 1, "/", t.epochs).c_str(), t.tloss[0],
                t.tloss[1], t.tloss[2], bar.c_str(), t.batch_index + 1,
                t.num_batches);
    std::fflush(stdout);
    g_progress_shown = true;
  });
}

void PrintMetrics(const std::map<std::string, double>& metrics) {
  for (const auto& [k, v] : metrics)
    std::printf("  %-24s %.5g\n", k.c_str(), v);
}

// Takes the --name=value flags out of `words`. Errors name the flag.
absl::Status TakeFlags(std::vector<std::string>& words,
                       yolohook::cli::RemoteFlags& flags) {
  std::vector<std::string> rest;
  for (const std::string& word : words) {
    if (!absl::StartsWith(word, "--") || word == "--help" ||
        word == "--version") {
      rest.push_back(word);
      continue;
    }
    const size_t eq = word.find('=');
    const std::string name = word.substr(0, eq);
    if (eq == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " needs a value: ", name, "=..."));
    }
    const std::string value = word.substr(eq + 1);
    if (name == "--server") {
      if (value.empty())
        return absl::InvalidArgumentError("--server= needs HOST:PORT");
      flags.server = value;
    } else if (name == "--label") {
      const size_t sep = value.find('=');
      if (sep == std::string::npos || sep == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("--label=", value, ": expected KEY=VALUE"));
      }
      flags.labels[value.substr(0, sep)] = value.substr(sep + 1);
    } else if (name == "--token_file") {
      flags.token_file = value;
    } else if (name == "--tls_ca") {
      flags.tls_ca = value;
    } else if (name == "--tls_cert") {
      flags.tls_cert = value;
    } else if (name == "--tls_key") {
      flags.tls_key = value;
    } else if (name == "--events") {
      flags.events = value;
    } else if (name == "--from_seq") {
      if (!absl::SimpleAtoi(value, &flags.from_seq)) {
        return absl::InvalidArgumentError(
            absl::StrCat("--from_seq=", value, ": expected an integer"));
      }
      flags.has_from_seq = true;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag ", name,
                       " (flags: --server, --label, --events, --from_seq, "
                       "--token_file, --tls_ca, --tls_cert, --tls_key)"));
    }
  }
  words = std::move(rest);
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> words(argv + 1, argv + argc);
  yolohook::cli::RemoteFlags flags;
  if (const char* env = std::getenv("YOLOHOOK_SERVER"); env != nullptr)
    flags.server = env;
  if (const char* env = std::getenv("YOLOHOOK_TOKEN"); env != nullptr)
    flags.token = env;
  if (const char* env = std::getenv("YOLOHOOK_TOKEN_FILE"); env != nullptr)
    flags.token_file = env;
  if (absl::Status s = TakeFlags(words, flags); !s.ok()) {
    std::fprintf(stderr, "yolohook: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  if (!words.empty() && words[0] == "detect") words.erase(words.begin());
  if (words.empty() || words[0] == "help" || words[0] == "--help" ||
      words[0] == "-h") {
    std::fputs(kUsage, words.empty() ? stderr : stdout);
    return words.empty() ? 2 : 0;
  }
  if (words[0] == "version" || words[0] == "--version") {
    std::printf("yolohook %s\n", yolohook::kVersion);
    return 0;
  }
  if (words[0] == "args") {
    for (const auto& info : yolohook::ArgInfos()) {
      std::printf(
          "  %-16s %-12s %s\n", info.name.c_str(),
          info.default_value.empty() ? "''" : info.default_value.c_str(),
          info.help.c_str());
    }
    return 0;
  }
  if (words[0] == "jobs" || words[0] == "watch" || words[0] == "cancel") {
    if (flags.server.empty()) {
      std::fprintf(stderr,
                   "yolohook: %s needs a server: --server=HOST:PORT (or "
                   "$YOLOHOOK_SERVER)\n",
                   words[0].c_str());
      return 2;
    }
    const std::string command = words[0];
    words.erase(words.begin());
    if (command == "jobs") return yolohook::cli::RunJobs(flags, words);
    if (command == "watch") return yolohook::cli::RunWatch(flags, words);
    return yolohook::cli::RunCancel(flags, words);
  }
  if (!flags.events.empty() || flags.has_from_seq) {
    std::fprintf(stderr, "yolohook: --events and --from_seq are for watch\n");
    return 2;
  }
  if (!flags.labels.empty() && flags.server.empty()) {
    std::fprintf(stderr,
                 "yolohook: --label needs a server: --server=HOST:PORT\n");
    return 2;
  }
  absl::StatusOr<yolohook::Mode> mode = yolohook::ModeFromName(words[0]);
  if (!mode.ok()) {
    std::fprintf(stderr, "yolohook: %s\n\n%s",
                 std::string(mode.status().message()).c_str(), kUsage);
    return 2;
  }
  words.erase(words.begin());
  auto args = yolohook::ParseKeyValues(words);
  if (!args.ok()) {
    std::fprintf(stderr, "yolohook: %s\n",
                 std::string(args.status().message()).c_str());
    return 2;
  }
  // Check every argument before any work starts.
  auto config = yolohook::MakeConfig(*mode, *args);
  if (!config.ok()) {
    std::fprintf(stderr, "yolohook: %s\n",
                 std::string(config.status().message()).c_str());
    return 2;
  }
  if (!flags.server.empty())
    return yolohook::cli::RunRemoteJob(flags, *mode, *args);

  std::string model = args->count("model") ? args->at("model") : "yolov8n";
  yolohook::engine::Yolo yolo(model);
  g_running = &yolo;
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);

  switch (*mode) {
    case yolohook::Mode::kTrain: {
      AddProgressLine(yolo, config->verbose);
      auto summary = yolo.Train(*args);
      if (!summary.ok()) return Fail(summary.status());
      std::printf("\n%d epochs completed in %.3f hours.\nbest: %s\nlast: %s\n",
                  summary->epochs_completed, summary->seconds / 3600,
                  summary->best.c_str(), summary->last.c_str());
      PrintMetrics(summary->metrics);
      return 0;
    }
    case yolohook::Mode::kVal: {
      auto summary = yolo.Val(*args);
      if (!summary.ok()) return Fail(summary.status());
      return 0;
    }
    case yolohook::Mode::kPredict: {
      auto summary = yolo.Predict(*args);
      if (!summary.ok()) return Fail(summary.status());
      size_t boxes = 0;
      for (const auto& r : summary->results) boxes += r.boxes.size();
      std::printf("%zu images, %zu detections\n", summary->results.size(),
                  boxes);
      return 0;
    }
    case yolohook::Mode::kExport: {
      auto summary = yolo.Export(*args);
      if (!summary.ok()) return Fail(summary.status());
      std::printf("exported %s in %.1fs\n", summary->file.c_str(),
                  summary->seconds);
      return 0;
    }
  }
  return 0;
}
