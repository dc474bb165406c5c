// Confines the files and directories that a remote client's job names to the
// server's allowed roots, so that a client cannot read or write outside them
// with an absolute path, `..` or a symlink. The server applies it to every job
// it accepts; local command-line runs do not use it.
#ifndef YOLOHOOK_SERVER_JOBS_PATHS_H_
#define YOLOHOOK_SERVER_JOBS_PATHS_H_

#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/engine/config.h"

namespace yolohook {

// Whether `path` is `root` or lies inside it, comparing whole components of
// the two paths as given (make both absolute and normal first): /data2 is not
// inside /data.
bool IsWithin(const std::filesystem::path& path,
              const std::filesystem::path& root);

// `path` made absolute (against `base` when relative) with the symlinks of its
// longest existing prefix resolved and `.` and `..` folded; the part that does
// not exist yet is taken as written.
std::filesystem::path ResolvePath(const std::filesystem::path& path,
                                  const std::filesystem::path& base);

// The allowed roots: the server's data directory, plus dataset and model
// directories configured with --allowed_roots. Immutable after Create;
// thread-safe.
//
// Refused paths are INVALID_ARGUMENT errors naming the argument, the path as
// sent, what it resolves to and the roots.
class PathPolicy {
 public:
  // Every file a dataset description names: its root, each split's
  // directories, lists and images, and the images' label files. Supplied by
  // the layer that can parse data.yaml; an error means the engine will
  // report the dataset itself, and the policy checks only the yaml's path.
  using DatasetFiles = std::function<absl::StatusOr<std::vector<std::string>>(
      const std::string& data_yaml)>;

  // `data_dir` is the first root and the base of relative paths; `roots` adds
  // more (relative ones are taken against the working directory). Each root
  // is resolved like a path (see ResolvePath). With `dataset_files`, a
  // data.yaml's own paths must lie inside the roots too (a description inside
  // a root cannot point outside it). Errors: INVALID_ARGUMENT for an empty
  // data_dir or root.
  static absl::StatusOr<PathPolicy> Create(
      const std::string& data_dir, const std::vector<std::string>& roots,
      DatasetFiles dataset_files = nullptr);

  // `path` resolved against the data directory (see ResolvePath). Errors:
  // INVALID_ARGUMENT naming `arg` when it lies outside every root.
  absl::StatusOr<std::string> Resolve(absl::string_view arg,
                                      absl::string_view path) const;

  // A job's arguments with every one that names a file or directory resolved
  // (see Resolve) and checked: model, data, source (a glob's pattern, and
  // each file the source names now: a folder's, a glob's or a .txt list's),
  // data_dir, project, name (as a directory under the project) and resume;
  // for data, also every file its description names (see Create).
  // Built-in names stay as they are: data=shapes, model=yolov8n (n, s, m;
  // also .yaml, and .pt for train, which builds a new model from the name),
  // resume=true/false. Errors: INVALID_ARGUMENT for a bad argument (as
  // MakeConfig) or a path outside the roots.
  absl::StatusOr<std::map<std::string, std::string>> ConfineArgs(
      Mode mode, const std::map<std::string, std::string>& args) const;

  // The roots, resolved; the data directory first.
  const std::vector<std::string>& roots() const { return roots_; }

 private:
  PathPolicy() = default;
  absl::Status Check(absl::string_view arg, absl::string_view path,
                     const std::filesystem::path& resolved) const;

  std::filesystem::path data_dir_;
  std::vector<std::string> roots_;
  DatasetFiles dataset_files_;
};

}  // namespace yolohook

#endif  // YOLOHOOK_SERVER_JOBS_PATHS_H_
