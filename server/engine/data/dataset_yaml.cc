#include "server/engine/data/dataset_yaml.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "server/common/status_macros.h"
#include "server/engine/data/shapes.h"

namespace yolohook::data {
namespace {

namespace fs = std::filesystem;

std::string Lower(std::string s) {
  for (char& c : s) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return s;
}

// Where a split entry is resolved against.
struct SplitContext {
  std::string yaml;  // the data.yaml, for messages
  std::string key;   // "train", "val" or "test"
  fs::path root;     // dataset root
};

fs::path Resolve(const fs::path& base, const std::string& entry) {
  fs::path p(entry);
  if (p.is_relative()) p = base / p;
  return p.lexically_normal();
}

absl::Status AddDirectory(const SplitContext& ctx, const fs::path& dir,
                          std::vector<std::string>* out) {
  std::error_code ec;
  fs::recursive_directory_iterator it(
      dir, fs::directory_options::skip_permission_denied, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat(ctx.yaml, ": key '", ctx.key, "': cannot list directory ",
                     dir.string(), ": ", ec.message()));
  }
  for (const fs::recursive_directory_iterator end; it != end;
       it.increment(ec)) {
    if (ec) {
      return absl::InvalidArgumentError(absl::StrCat(
          ctx.yaml, ": key '", ctx.key, "': cannot list directory ",
          dir.string(), ": ", ec.message()));
    }
    std::error_code file_ec;
    if (it->is_regular_file(file_ec) &&
        HasImageExtension(it->path().string())) {
      out->push_back(it->path().lexically_normal().string());
    }
  }
  return absl::OkStatus();
}

absl::Status AddList(const SplitContext& ctx, const fs::path& list,
                     std::vector<std::string>* out) {
  std::ifstream in(list);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(ctx.yaml, ": key '", ctx.key,
                                            "': cannot read image list ",
                                            list.string()));
  }
  std::string line;
  while (std::getline(in, line)) {
    std::string entry(absl::StripAsciiWhitespace(line));
    if (entry.empty() || !HasImageExtension(entry)) continue;
    out->push_back(Resolve(ctx.root, entry).string());
  }
  return absl::OkStatus();
}

absl::Status AddEntry(const SplitContext& ctx, const std::string& entry,
                      std::vector<std::string>* out) {
  const fs::path p = Resolve(ctx.root, entry);
  std::error_code ec;
  const fs::file_status st = fs::status(p, ec);
  if (fs::is_directory(st)) return AddDirectory(ctx, p, out);
  if (fs::is_regular_file(st)) {
    if (Lower(p.extension().string()) == ".txt") return AddList(ctx, p, out);
    if (HasImageExtension(p.string())) {
      out->push_back(p.string());
      return absl::OkStatus();
    }
    return absl::InvalidArgumentError(absl::StrCat(
        ctx.yaml, ": key '", ctx.key, "': ", p.string(),
        " is neither a directory, a .txt image list nor an image"));
  }
  return absl::NotFoundError(
      absl::StrCat(ctx.yaml, ": key '", ctx.key,
                   "': no such directory or list: ", p.string()));
}

// Expands one split. `node` is defined and not null.
absl::StatusOr<std::vector<std::string>> LoadSplit(const SplitContext& ctx,
                                                   const YAML::Node& node) {
  std::vector<std::string> entries;
  if (node.IsScalar()) {
    entries.push_back(node.Scalar());
  } else if (node.IsSequence()) {
    for (const YAML::Node& item : node) {
      if (!item.IsScalar()) {
        return absl::InvalidArgumentError(absl::StrCat(
            ctx.yaml, ": key '", ctx.key, "' (line ", item.Mark().line + 1,
            "): list entries must be paths"));
      }
      entries.push_back(item.Scalar());
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        ctx.yaml, ": key '", ctx.key, "' (line ", node.Mark().line + 1,
        "): expected a directory, a .txt list or a list of them"));
  }
  std::vector<std::string> images;
  for (const std::string& entry : entries) {
    if (entry.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(ctx.yaml, ": key '", ctx.key, "': empty path"));
    }
    YH_RETURN_IF_ERROR(AddEntry(ctx, entry, &images));
  }
  std::sort(images.begin(), images.end());
  images.erase(std::unique(images.begin(), images.end()), images.end());
  return images;
}

absl::StatusOr<std::vector<std::string>> LoadNames(const std::string& yaml,
                                                   const YAML::Node& node) {
  const std::string where =
      absl::StrCat(yaml, ": key 'names' (line ", node.Mark().line + 1, ")");
  std::vector<std::string> names;
  if (node.IsSequence()) {
    for (const YAML::Node& item : node) {
      if (!item.IsScalar()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": class ", names.size(), " is not a name"));
      }
      names.push_back(item.Scalar());
    }
  } else if (node.IsMap()) {
    std::map<int, std::string> by_id;
    for (const auto& kv : node) {
      int id = -1;
      if (!kv.first.IsScalar() || !absl::SimpleAtoi(kv.first.Scalar(), &id) ||
          id < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": class id '",
                         kv.first.IsScalar() ? kv.first.Scalar() : "?",
                         "' is not a non-negative integer"));
      }
      if (!kv.second.IsScalar()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": class ", id, " has no name"));
      }
      if (!by_id.emplace(id, kv.second.Scalar()).second) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": class id ", id, " appears twice"));
      }
    }
    int expected = 0;
    for (const auto& [id, name] : by_id) {
      if (id != expected) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": class ids must be 0..", by_id.size() - 1,
                         " without gaps; id ", expected, " is missing"));
      }
      names.push_back(name);
      ++expected;
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": expected a list of names or an {id: name} map"));
  }
  if (names.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": no classes"));
  }
  return names;
}

absl::StatusOr<DatasetSpec> Parse(const std::string& yaml_path,
                                  const YAML::Node& doc) {
  if (!doc.IsMap()) {
    return absl::InvalidArgumentError(absl::StrCat(
        yaml_path,
        ": not a dataset description (expected a YAML mapping with keys path, "
        "train, val, names)"));
  }
  DatasetSpec spec;
  spec.yaml_path = yaml_path;
  const fs::path yaml_dir = fs::path(yaml_path).parent_path();

  fs::path root = yaml_dir;
  if (const YAML::Node path = doc["path"]; path && !path.IsNull()) {
    if (!path.IsScalar()) {
      return absl::InvalidArgumentError(
          absl::StrCat(yaml_path, ": key 'path' (line ", path.Mark().line + 1,
                       "): expected a directory"));
    }
    if (!path.Scalar().empty()) root = Resolve(yaml_dir, path.Scalar());
  }
  spec.root = root.lexically_normal().string();
  if (spec.root.size() > 1 && spec.root.back() == '/') spec.root.pop_back();

  const YAML::Node names = doc["names"];
  if (!names || names.IsNull()) {
    return absl::InvalidArgumentError(
        absl::StrCat(yaml_path, ": missing key 'names' (the class names)"));
  }
  YH_ASSIGN_OR_RETURN(spec.names, LoadNames(yaml_path, names));
  if (const YAML::Node nc = doc["nc"]; nc && !nc.IsNull()) {
    int value = -1;
    if (!nc.IsScalar() || !absl::SimpleAtoi(nc.Scalar(), &value)) {
      return absl::InvalidArgumentError(
          absl::StrCat(yaml_path, ": key 'nc' (line ", nc.Mark().line + 1,
                       "): expected an integer"));
    }
    if (value != static_cast<int>(spec.names.size())) {
      return absl::InvalidArgumentError(absl::StrCat(
          yaml_path, ": key 'nc' (line ", nc.Mark().line + 1, ") is ", value,
          " but 'names' has ", spec.names.size(), " classes"));
    }
  }

  for (const char* key : {"train", "val", "test"}) {
    const YAML::Node node = doc[key];
    const bool required = std::string(key) != "test";
    if (!node || node.IsNull()) {
      if (required) {
        return absl::InvalidArgumentError(
            absl::StrCat(yaml_path, ": missing key '", key, "'"));
      }
      continue;
    }
    SplitContext ctx{yaml_path, key, root};
    YH_ASSIGN_OR_RETURN(std::vector<std::string> images, LoadSplit(ctx, node));
    if (images.empty() && required) {
      return absl::InvalidArgumentError(absl::StrCat(
          yaml_path, ": key '", key, "': no images found in ",
          node.IsScalar() ? Resolve(root, node.Scalar()).string()
                          : std::string("the listed entries"),
          " (extensions: ", absl::StrJoin(ImageExtensions(), " "), ")"));
    }
    if (std::string(key) == "train") {
      spec.train = std::move(images);
    } else if (std::string(key) == "val") {
      spec.val = std::move(images);
    } else {
      spec.test = std::move(images);
    }
  }
  return spec;
}

}  // namespace

const std::vector<std::string>& ImageExtensions() {
  static const auto* const kExtensions = new std::vector<std::string>{
      ".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"};
  return *kExtensions;
}

bool HasImageExtension(const std::string& path) {
  const std::string ext = Lower(fs::path(path).extension().string());
  const auto& all = ImageExtensions();
  return std::find(all.begin(), all.end(), ext) != all.end();
}

absl::StatusOr<DatasetSpec> LoadDatasetYaml(const std::string& path) {
  std::error_code ec;
  const fs::path abs = fs::absolute(fs::path(path), ec).lexically_normal();
  const std::string yaml_path = ec ? path : abs.string();
  if (!fs::is_regular_file(abs, ec)) {
    return absl::NotFoundError(
        absl::StrCat("dataset yaml not found: ", yaml_path));
  }
  try {
    std::ifstream in(abs);
    if (!in) {
      return absl::NotFoundError(
          absl::StrCat("cannot read dataset yaml: ", yaml_path));
    }
    const YAML::Node doc = YAML::Load(in);
    return Parse(yaml_path, doc);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(yaml_path, ": not valid YAML (line ", e.mark.line + 1,
                     ", column ", e.mark.column + 1, "): ", e.msg));
  } catch (const fs::filesystem_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(yaml_path, ": ", e.what()));
  }
}

absl::StatusOr<std::string> ResolveDataYaml(const std::string& data,
                                            const std::string& data_dir) {
  if (data == "shapes") {
    const fs::path dir = (fs::path(data_dir) / "datasets" / "shapes");
    YH_RETURN_IF_ERROR(GenerateShapes(dir.string(), ShapesOptions()));
    std::error_code ec;
    fs::path yaml = fs::absolute(dir / "data.yaml", ec);
    if (ec) yaml = dir / "data.yaml";
    return yaml.lexically_normal().string();
  }
  std::error_code ec;
  if (data.empty() || !fs::is_regular_file(fs::path(data), ec)) {
    return absl::NotFoundError(absl::StrCat(
        "data '", data, "' is neither \"shapes\" nor an existing data.yaml"));
  }
  fs::path abs = fs::absolute(fs::path(data), ec);
  if (ec) abs = fs::path(data);
  return abs.lexically_normal().string();
}

std::string LabelPathFor(const std::string& image_path) {
  static constexpr absl::string_view kImages = "/images/";
  static constexpr absl::string_view kLabels = "/labels/";
  std::string path = image_path;
  const size_t pos =
      path.rfind(kImages.data(), std::string::npos, kImages.size());
  if (pos != std::string::npos) {
    path.replace(pos, kImages.size(), kLabels.data(), kLabels.size());
  }
  const size_t slash = path.rfind('/');
  const size_t dot = path.rfind('.');
  if (dot != std::string::npos && (slash == std::string::npos || dot > slash)) {
    path.erase(dot);
  }
  return path + ".txt";
}

absl::StatusOr<std::vector<std::string>> DatasetFiles(const std::string& path) {
  YH_ASSIGN_OR_RETURN(DatasetSpec spec, LoadDatasetYaml(path));
  std::vector<std::string> files = {spec.root};
  for (const std::vector<std::string>* split :
       {&spec.train, &spec.val, &spec.test}) {
    for (const std::string& image : *split) {
      files.push_back(image);
      files.push_back(LabelPathFor(image));
    }
  }
  return files;
}

}  // namespace yolohook::data
