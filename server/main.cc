// yolohookd: the yolohook server.
//
//   yolohookd --listen=127.0.0.1:50051 --data_dir=/var/lib/yolohook --threads=2
//   yolohookd --listen=0.0.0.0:50051 --token_file=/etc/yolohook/tokens.csv
//             --tls_cert=server.pem --tls_key=server.key
//
// SIGTERM or SIGINT drains: health turns NOT_SERVING, running train jobs stop
// at their next batch keeping last.pt (they resume when the server starts
// again), subscriptions end with SHUTDOWN, then the process exits. SIGHUP
// reloads --token_file (it is also reloaded when it changes).
#include <csignal>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"
#include "server/common/log_sink.h"
#include "server/engine/version.h"
#include "server/service/server.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "address to serve on (host:port; port 0 picks a free port)");
ABSL_FLAG(std::string, data_dir, "",
          "job store, datasets and runs (default: $YOLOHOOK_DATA_DIR, else "
          "~/.yolohook)");
ABSL_FLAG(int, threads, 0,
          "LibTorch threads per job (0 = the cores shared among --concurrency "
          "jobs)");
ABSL_FLAG(int, concurrency, 1, "queued jobs running at once");
ABSL_FLAG(int, max_queued, 64,
          "queued jobs before SubmitJob answers RESOURCE_EXHAUSTED");
ABSL_FLAG(absl::Duration, reply_timeout, absl::Seconds(5),
          "how long a job waits for an interceptor that set no reply_timeout");
ABSL_FLAG(absl::Duration, max_reply_timeout, absl::Seconds(60),
          "the longest wait for one interceptor reply, extensions included");
ABSL_FLAG(int, queue_limit, 1024,
          "events queued per subscription before it is ended as lagging");
ABSL_FLAG(int64_t, stream_window, 256,
          "messages a Connect stream whose client acknowledges them may have "
          "in flight; beyond it, events wait in the subscriptions' queues "
          "(--queue_limit)");
ABSL_FLAG(int, max_message_mb, 64,
          "largest gRPC message accepted (inline images), MiB");
ABSL_FLAG(std::string, metrics_listen, "",
          "address serving Prometheus metrics at GET /metrics over plain "
          "HTTP, without authentication (host:port, e.g. 127.0.0.1:9464; "
          "empty: off)");
ABSL_FLAG(std::string, http_listen, "",
          "address of the browser dashboard and its JSON / Server-Sent Events "
          "API (host:port; port 0 picks a free port); empty: off");
ABSL_FLAG(std::string, token_file, "",
          "bearer tokens, one client per line: token,name,role (role: viewer, "
          "operator or admin), or cert:IDENTITY,name,role for a TLS client "
          "certificate with that common name or subject alternative name; "
          "reloaded on SIGHUP and when it changes; empty: no authentication "
          "(everyone is admin)");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain to serve TLS with (needs --tls_key)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA certificate: clients must present a certificate it signed "
          "(mutual TLS; needs --tls_cert)");
ABSL_FLAG(bool, insecure, false,
          "serve a non-loopback --listen or --http_listen address without "
          "--token_file");
ABSL_FLAG(std::vector<std::string>, allowed_roots, {},
          "directories besides --data_dir that jobs may name (datasets, "
          "models), comma-separated; every path a job names must resolve "
          "inside one of them");
ABSL_FLAG(int, max_subscriptions, 64,
          "subscriptions on one Connect stream before Subscribe answers "
          "RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_images, 256,
          "inline images in one SubmitJob or Predict request");
ABSL_FLAG(int64_t, max_image_pixels, 40000000,
          "width x height of an inline image or a PredictStream frame");
ABSL_FLAG(absl::Duration, job_retention, absl::Hours(24 * 30),
          "how long finished jobs and their events are kept (0 = forever)");
ABSL_FLAG(absl::Duration, predict_retention, absl::Minutes(10),
          "how long finished Predict and PredictStream jobs are kept "
          "(0 = as long as other jobs)");
ABSL_FLAG(int64_t, max_finished_jobs, 10000,
          "finished jobs kept, those that ended last (0 = no limit)");
ABSL_FLAG(int64_t, max_store_mb, 4096,
          "the job store's size limit, MiB: the oldest finished jobs are "
          "deleted past 80% of it, writes past it fail (0 = no limit)");
ABSL_FLAG(std::string, log_file, "",
          "write the server's log to this file, rotated by --log_max_mb "
          "(empty: standard output)");
ABSL_FLAG(int64_t, log_max_mb, 64,
          "rotate --log_file when it reaches this size, MiB (0 = never)");
ABSL_FLAG(int, log_files, 3,
          "rotated log files kept besides the current one (FILE.1 ...)");
ABSL_FLAG(std::string, log_format, "text",
          "text, or json for one JSON object per line");
ABSL_FLAG(bool, print_server_info, false,
          "print what GetServerInfo would answer with the other flags (the "
          "event catalogue, job arguments, limits) as JSON, and exit");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "runs YOLO train/val/predict/export jobs and streams their callback "
      "events to gRPC clients.\nUsage: yolohookd [--listen=HOST:PORT] "
      "[--data_dir=DIR] [--threads=N] ...");
  // --help lists this file's flags (absl looks for a file named after the
  // program by default).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "server/main.cc");
  };
  absl::SetFlagsUsageConfig(usage);
  absl::ParseCommandLine(argc, argv);

  // Signals are taken by one thread; every other thread blocks them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  yolohook::service::Server::Options options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.data_dir = absl::GetFlag(FLAGS_data_dir);
  options.threads = absl::GetFlag(FLAGS_threads);
  options.concurrency = absl::GetFlag(FLAGS_concurrency);
  options.max_queued = absl::GetFlag(FLAGS_max_queued);
  options.reply_timeout = absl::GetFlag(FLAGS_reply_timeout);
  options.max_reply_timeout = absl::GetFlag(FLAGS_max_reply_timeout);
  options.queue_limit =
      static_cast<size_t>(std::max(absl::GetFlag(FLAGS_queue_limit), 1));
  options.stream_window =
      std::max<int64_t>(absl::GetFlag(FLAGS_stream_window), 1);
  options.max_message_bytes = std::max(absl::GetFlag(FLAGS_max_message_mb), 1)
                              << 20;
  options.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  options.http_listen = absl::GetFlag(FLAGS_http_listen);
  options.token_file = absl::GetFlag(FLAGS_token_file);
  options.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key = absl::GetFlag(FLAGS_tls_key);
  options.tls_client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  options.insecure = absl::GetFlag(FLAGS_insecure);
  options.allowed_roots = absl::GetFlag(FLAGS_allowed_roots);
  options.max_subscriptions =
      static_cast<size_t>(std::max(absl::GetFlag(FLAGS_max_subscriptions), 1));
  options.max_images = std::max(absl::GetFlag(FLAGS_max_images), 1);
  options.max_image_pixels =
      std::max<int64_t>(absl::GetFlag(FLAGS_max_image_pixels), 1);
  options.job_retention = absl::GetFlag(FLAGS_job_retention);
  options.predict_retention = absl::GetFlag(FLAGS_predict_retention);
  if (options.predict_retention <= absl::ZeroDuration())
    options.predict_retention = options.job_retention;
  options.max_finished_jobs =
      std::max<int64_t>(absl::GetFlag(FLAGS_max_finished_jobs), 0);
  options.max_store_bytes =
      std::max<int64_t>(absl::GetFlag(FLAGS_max_store_mb), 0) << 20;

  if (absl::GetFlag(FLAGS_print_server_info)) {
    google::protobuf::util::JsonPrintOptions print;
    print.preserve_proto_field_names = true;
    print.add_whitespace = true;
    std::string json;
    if (!google::protobuf::util::MessageToJsonString(
             yolohook::service::Server::InfoFor(options), &json, print)
             .ok()) {
      return 1;
    }
    std::fputs(json.c_str(), stdout);
    return 0;
  }

  const std::string log_format = absl::GetFlag(FLAGS_log_format);
  if (log_format != "text" && log_format != "json") {
    std::fprintf(stderr, "yolohookd: --log_format=%s: expected text or json\n",
                 log_format.c_str());
    return 2;
  }
  yolohook::LogSink::Options log_options;
  log_options.path = absl::GetFlag(FLAGS_log_file);
  log_options.max_bytes = std::max<int64_t>(absl::GetFlag(FLAGS_log_max_mb), 0)
                          << 20;
  log_options.max_files = std::max(absl::GetFlag(FLAGS_log_files), 0);
  log_options.json = log_format == "json";
  auto log = yolohook::LogSink::Open(log_options);
  if (!log.ok()) {
    std::fprintf(stderr, "yolohookd: --log_file: %s\n",
                 std::string(log.status().message()).c_str());
    return 1;
  }
  yolohook::LogSink* sink = log->get();
  options.log = [sink](absl::string_view line) { sink->Write(line); };
  auto server = yolohook::service::Server::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "yolohookd: %s\n",
                 std::string(server.status().message()).c_str());
    return 1;
  }
  std::printf("yolohookd %s listening on %s\n", yolohook::kVersion,
              (*server)->address().c_str());
  // Scripts read the address as the last word of the line above.
  std::printf(
      "yolohookd: %s, %s\n",
      options.tls_cert.empty()        ? "plaintext"
      : options.tls_client_ca.empty() ? "TLS"
                                      : "mutual TLS",
      options.token_file.empty() ? "no authentication" : "bearer tokens");
  if ((*server)->metrics_port() != 0) {
    const std::string& listen = options.metrics_listen;
    std::printf("yolohookd: metrics on http://%s:%d/metrics\n",
                listen.substr(0, listen.rfind(':')).c_str(),
                (*server)->metrics_port());
  }
  if (!options.http_listen.empty()) {
    std::printf("yolohookd dashboard on http://%s/\n",
                (*server)->http_address().c_str());
  }
  std::fflush(stdout);

  std::thread waiter([&signals, &server] {
    int sig = 0;
    while (sigwait(&signals, &sig) == 0 && sig == SIGHUP) {
      // The outcome is logged by the server.
      (*server)->ReloadTokens().IgnoreError();
    }
    std::printf("yolohookd: %s, draining\n",
                sig == SIGTERM ? "SIGTERM" : "SIGINT");
    std::fflush(stdout);
    (*server)->Shutdown(absl::Seconds(10));
  });
  (*server)->Wait();
  waiter.join();
  std::printf("yolohookd: stopped\n");
  return 0;
}
