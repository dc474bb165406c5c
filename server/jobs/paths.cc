#include "server/jobs/paths.h"

#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"
#include "server/engine/data/sources.h"

namespace yolohook {
namespace fs = std::filesystem;
namespace {

// Names the engine builds a model from rather than opening a file.
bool IsBuiltinModel(const std::string& model, Mode mode) {
  for (const char* scale : {"yolov8n", "yolov8s", "yolov8m"}) {
    if (model == scale || model == absl::StrCat(scale, ".yaml")) return true;
    // train makes a new model from "yolov8n.pt"; other modes open the file.
    if (mode == Mode::kTrain && model == absl::StrCat(scale, ".pt"))
      return true;
  }
  return false;
}

bool IsResumeFlag(const std::string& resume) {
  return resume.empty() || resume == "true" || resume == "True" ||
         resume == "false" || resume == "False";
}

}  // namespace

bool IsWithin(const fs::path& path, const fs::path& root) {
  auto p = path.begin();
  for (auto r = root.begin(); r != root.end(); ++r) {
    // A trailing separator of the root ("/data/") is an empty last element.
    if (r->empty() && std::next(r) == root.end()) break;
    if (p == path.end() || *p != *r) return false;
    ++p;
  }
  return true;
}

fs::path ResolvePath(const fs::path& path, const fs::path& base) {
  fs::path current = path.is_absolute() ? path : base / path;
  // weakly_canonical takes the part after the first missing component as
  // written, `..` included; resolving again follows any symlink that this
  // folding brought into the existing prefix ("missing/../link/x").
  for (int i = 0; i < 8; ++i) {
    std::error_code ec;
    fs::path next = fs::weakly_canonical(current, ec);
    if (ec) next = current.lexically_normal();
    if (next == current) break;
    current = std::move(next);
  }
  return current;
}

absl::StatusOr<PathPolicy> PathPolicy::Create(
    const std::string& data_dir, const std::vector<std::string>& roots,
    DatasetFiles dataset_files) {
  if (data_dir.empty()) {
    return absl::InvalidArgumentError("allowed roots: no data directory");
  }
  std::error_code ec;
  const fs::path cwd = fs::current_path(ec);
  PathPolicy policy;
  policy.dataset_files_ = std::move(dataset_files);
  policy.data_dir_ = ResolvePath(data_dir, cwd);
  policy.roots_.push_back(policy.data_dir_.string());
  for (const std::string& root : roots) {
    if (root.empty()) {
      return absl::InvalidArgumentError(
          "--allowed_roots: an empty root (check for a stray comma)");
    }
    policy.roots_.push_back(ResolvePath(root, cwd).string());
  }
  return policy;
}

absl::Status PathPolicy::Check(absl::string_view arg, absl::string_view path,
                               const fs::path& resolved) const {
  for (const std::string& root : roots_) {
    if (IsWithin(resolved, root)) return absl::OkStatus();
  }
  std::string shown = absl::StrCat(arg, "=", path);
  if (resolved.string() != path) {
    absl::StrAppend(&shown, " (resolves to ", resolved.string(), ")");
  }
  return absl::InvalidArgumentError(absl::StrCat(
      shown, " is outside the server's allowed roots (",
      absl::StrJoin(roots_, ", "),
      "); relative paths start at the data directory, and yolohookd "
      "--allowed_roots adds roots"));
}

absl::StatusOr<std::string> PathPolicy::Resolve(absl::string_view arg,
                                                absl::string_view path) const {
  const fs::path resolved = ResolvePath(fs::path(std::string(path)), data_dir_);
  YH_RETURN_IF_ERROR(Check(arg, path, resolved));
  return resolved.string();
}

absl::StatusOr<std::map<std::string, std::string>> PathPolicy::ConfineArgs(
    Mode mode, const std::map<std::string, std::string>& args) const {
  // The values as the engine will read them (trimmed, None for empty).
  absl::StatusOr<Config> parsed = MakeConfig(mode, args);
  if (!parsed.ok())
    return absl::InvalidArgumentError(parsed.status().message());
  const Config& config = *parsed;
  std::map<std::string, std::string> out = args;
  auto confine = [&](const std::string& key,
                     const std::string& value) -> absl::Status {
    if (args.count(key) == 0 || value.empty()) return absl::OkStatus();
    YH_ASSIGN_OR_RETURN(out[key], Resolve(key, value));
    return absl::OkStatus();
  };
  if (!IsBuiltinModel(config.model, mode))
    YH_RETURN_IF_ERROR(confine("model", config.model));
  if (config.data != "shapes") {
    YH_RETURN_IF_ERROR(confine("data", config.data));
    if (dataset_files_ && args.count("data") != 0 && !config.data.empty()) {
      absl::StatusOr<std::vector<std::string>> files =
          dataset_files_(out["data"]);
      if (files.ok()) {
        const std::string arg = absl::StrCat("data ", config.data, ": path");
        for (const std::string& file : *files) {
          YH_RETURN_IF_ERROR(Check(arg, file, ResolvePath(file, data_dir_)));
        }
      }
    }
  }
  YH_RETURN_IF_ERROR(confine("data_dir", config.data_dir));
  if (!IsResumeFlag(config.resume))
    YH_RETURN_IF_ERROR(confine("resume", config.resume));
  YH_RETURN_IF_ERROR(confine("project", config.project));

  YH_RETURN_IF_ERROR(confine("source", config.source));
  if (args.count("source") != 0 && !config.source.empty()) {
    // What a folder, a glob or a list names now. A source that does not
    // resolve fails the job later with the engine's own error.
    absl::StatusOr<ResolvedSource> files = ResolveSource(out["source"]);
    if (files.ok()) {
      for (const SourceFile& file : files->files) {
        YH_RETURN_IF_ERROR(
            Check(absl::StrCat("source ", config.source, ": file"), file.path,
                  ResolvePath(file.path, data_dir_)));
      }
    }
  }

  if (args.count("name") != 0 && !config.name.empty()) {
    // The run directory is {project}/{name}: check it whole, and keep name a
    // single component inside the project.
    const fs::path data_dir =
        out.count("data_dir") != 0 && !config.data_dir.empty()
            ? fs::path(out["data_dir"])
            : data_dir_;
    const fs::path project =
        out.count("project") != 0 && !config.project.empty()
            ? fs::path(out["project"])
            : data_dir / "runs" / "detect";
    const fs::path run = ResolvePath(project / config.name, data_dir_);
    YH_RETURN_IF_ERROR(Check("name", config.name, run));
    if (run.parent_path() != project || run.filename() != config.name) {
      out["project"] = run.parent_path().string();
      out["name"] = run.filename().string();
    }
  }
  return out;
}

}  // namespace yolohook
