// yolohook_keep_confident: an interceptor that replaces prediction results.
//
//   yolohook_keep_confident --server=127.0.0.1:50051 --label=app=demo
//       --min_conf=0.5 --rename=circle=ball
//
// Subscribes (intercept) to on_predict_postprocess_end of the jobs carrying
// the label, drops boxes below --min_conf, renames classes, and prints one
// line per image it changed. Runs until SIGINT/SIGTERM or --count batches.
#include "client/cpp/keep_confident.h"

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/notification.h"
#include "client/cpp/client.h"

namespace {

constexpr char kUsage[] =
    R"(usage: yolohook_keep_confident [--server=HOST:PORT] [--label=KEY=VALUE]
                               [--min_conf=0.5] [--rename=OLD=NEW] [--count=N]
                               [--token_file=FILE] [--tls_ca=CA.pem]
                               [--tls_cert=CLIENT.pem --tls_key=CLIENT.key]

Intercepts on_predict_postprocess_end of the jobs carrying the label (every
job without --label), drops boxes below --min_conf and renames classes.
--server defaults to $YOLOHOOK_SERVER, else 127.0.0.1:50051. --rename and
--label may repeat. Stops on Ctrl-C or after --count batches.

Authentication and TLS as for yolohook: --token_file=FILE (or
$YOLOHOOK_TOKEN_FILE, $YOLOHOOK_TOKEN; intercepting needs role operator),
--tls_ca=CA.pem, and for mutual TLS --tls_cert=CLIENT.pem --tls_key=CLIENT.key.
)";

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

int Usage(const std::string& error) {
  std::fprintf(stderr, "yolohook_keep_confident: %s\n\n%s", error.c_str(),
               kUsage);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  yolohook::Client::Options options;
  if (const char* env = std::getenv("YOLOHOOK_SERVER"); env != nullptr && *env)
    options.target = env;
  if (const char* env = std::getenv("YOLOHOOK_TOKEN"); env != nullptr && *env)
    options.token = env;
  if (const char* env = std::getenv("YOLOHOOK_TOKEN_FILE");
      env != nullptr && *env) {
    options.token.clear();
    options.token_file = env;
  }
  yolohook::KeepConfidentOptions keep;
  yolohook::CallbackOptions callback;
  callback.mode = yolohook::CallbackOptions::kIntercept;
  int64_t count = 0;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    const size_t eq = arg.find('=');
    if (arg.substr(0, 2) != "--" || eq == absl::string_view::npos)
      return Usage(absl::StrCat("unexpected argument '", arg, "'"));
    const absl::string_view key = arg.substr(2, eq - 2);
    const absl::string_view value = arg.substr(eq + 1);
    if (key == "server") {
      options.target = std::string(value);
    } else if (key == "token_file") {
      options.token.clear();
      options.token_file = std::string(value);
    } else if (key == "tls_ca") {
      options.tls_ca_file = std::string(value);
    } else if (key == "tls_cert") {
      options.tls_cert_file = std::string(value);
    } else if (key == "tls_key") {
      options.tls_key_file = std::string(value);
    } else if (key == "label") {
      const size_t e = value.find('=');
      if (e == absl::string_view::npos || e == 0)
        return Usage(absl::StrCat("--label=", value, ": expected KEY=VALUE"));
      callback.match_labels[std::string(value.substr(0, e))] =
          std::string(value.substr(e + 1));
    } else if (key == "min_conf") {
      if (!absl::SimpleAtof(value, &keep.min_conf) || keep.min_conf < 0 ||
          keep.min_conf > 1)
        return Usage(absl::StrCat("--min_conf=", value,
                                  ": expected a number in [0, 1]"));
    } else if (key == "rename") {
      absl::Status s = yolohook::ParseRename(value, keep.renames);
      if (!s.ok()) return Usage(std::string(s.message()));
    } else if (key == "count") {
      if (!absl::SimpleAtoi(value, &count) || count < 1)
        return Usage(
            absl::StrCat("--count=", value, ": expected a positive integer"));
    } else {
      return Usage(absl::StrCat("unknown flag --", key));
    }
  }

  yolohook::Client client(options);
  std::atomic<int64_t> batches{0};
  absl::Notification done;
  absl::Status added = client.AddCallback(
      "on_predict_postprocess_end",
      [&](yolohook::EventContext& ctx) {
        const yolohook::v1::Event* event = yolohook::Client::CurrentEvent();
        for (const std::string& line :
             yolohook::KeepConfident(keep, ctx.predictor->results)) {
          std::printf("[%s] %s\n", event->job_id().c_str(), line.c_str());
        }
        std::fflush(stdout);
        if (++batches == count && !done.HasBeenNotified()) done.Notify();
      },
      callback);
  if (!added.ok()) {
    std::fprintf(stderr, "yolohook_keep_confident: %s\n",
                 std::string(added.message()).c_str());
    return 1;
  }
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  std::printf("intercepting on_predict_postprocess_end at %s (min_conf %g)\n",
              options.target.c_str(), keep.min_conf);
  std::fflush(stdout);
  while (!g_stop &&
         !done.WaitForNotificationWithTimeout(absl::Milliseconds(100))) {
  }
  client.Stop();  // sends the last batch's reply first
  return 0;
}
