// The yolohook command's server mode: jobs run on a yolohookd, followed
// through their events, and the commands that only make sense with a server
// (jobs, watch, cancel).
#ifndef YOLOHOOK_CLIENT_CLI_REMOTE_H_
#define YOLOHOOK_CLIENT_CLI_REMOTE_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/config.h"
#include "yolohook/v1/types.pb.h"

namespace yolohook::cli {

// Flags of the server-mode commands ("--name=value" anywhere on the line).
struct RemoteFlags {
  // HOST:PORT ("" = run locally)
  std::string server;
  // jobs: labels to submit with
  std::map<std::string, std::string> labels;
  // watch: comma-separated event names ("" = all)
  std::string events;
  // watch: first seq (0 = the command's default)
  int64_t from_seq = 0;
  bool has_from_seq = false;
  // bearer token ($YOLOHOOK_TOKEN)
  std::string token;
  // file holding it (--token_file, $YOLOHOOK_TOKEN_FILE); wins over token
  std::string token_file;
  // PEM CA of the server's certificate: TLS
  std::string tls_ca;
  // PEM client certificate (mutual TLS)
  std::string tls_cert;
  // its PEM private key
  std::string tls_key;
};

// Submits a train/val/predict/export job and follows it, printing what a local
// run prints; returns the exit code (0 succeeded, 130 cancelled, 1 otherwise).
// Ctrl-C cancels the remote job. Predict uploads the source's images as one
// job, then decodes each video locally and streams every vid_stride-th frame
// (JPEG) through PredictStream, one job per video, printing a line per frame.
int RunRemoteJob(const RemoteFlags& flags, Mode mode,
                 std::map<std::string, std::string> args);

// `yolohook jobs [state=...] [label=k=v] [limit=N]`: a table of jobs.
int RunJobs(const RemoteFlags& flags, const std::vector<std::string>& words);
// `yolohook watch [JOB]`: every event as one JSON line.
int RunWatch(const RemoteFlags& flags, const std::vector<std::string>& words);
// `yolohook cancel JOB`.
int RunCancel(const RemoteFlags& flags, const std::vector<std::string>& words);

// What a predict source= names (an image, a video, a folder, a glob or a .txt
// list of them), in order: images read for upload, videos by path (decoded
// locally and streamed frame by frame).
struct PredictSource {
  std::vector<v1::Image> images;
  std::vector<std::string> videos;
};
// The files are found as the engine finds them (ResolveSource,
// server/engine/data/sources.h), with its errors; INVALID_ARGUMENT naming
// source= for an image that cannot be read.
absl::StatusOr<PredictSource> LoadPredictSource(const std::string& source);

}  // namespace yolohook::cli

#endif  // YOLOHOOK_CLIENT_CLI_REMOTE_H_
