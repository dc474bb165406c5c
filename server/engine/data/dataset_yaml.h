// Dataset descriptions: Ultralytics' data.yaml, the built-in `shapes` dataset,
// and where an image's label file lives.
#ifndef YOLOHOOK_SERVER_ENGINE_DATA_DATASET_YAML_H_
#define YOLOHOOK_SERVER_ENGINE_DATA_DATASET_YAML_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace yolohook::data {

// A parsed data.yaml with every split expanded to its image files.
struct DatasetSpec {
  // absolute path of data.yaml
  std::string yaml_path;
  // resolved `path`
  std::string root;
  // image files, absolute, sorted, deduplicated
  std::vector<std::string> train;
  // image files, absolute, sorted, deduplicated
  std::vector<std::string> val;
  // image files (empty when no `test` split)
  std::vector<std::string> test;
  // class names, index = class id
  std::vector<std::string> names;
};

// The image extensions a split directory or list contributes (lower case, with
// the dot): .jpg .jpeg .png .bmp .tif .tiff .webp. Matching ignores case.
const std::vector<std::string>& ImageExtensions();

// True if `path` ends in one of ImageExtensions(), ignoring case.
bool HasImageExtension(const std::string& path);

// Parses an Ultralytics data.yaml.
//
// `path` is the dataset root: relative to the yaml's directory, default that
// directory. `train` and `val` are required, `test` is optional. Each split is
// a directory (searched recursively for image files), a .txt file listing one
// image path per line, or a YAML list of such entries; relative entries are
// relative to the root. Relative lines of a .txt list are relative to the
// dataset root too (for the usual list in the root, "./images/a.jpg" means the
// same as in Ultralytics, which resolves "./" against the list's directory).
// Listed files that do not exist are kept: VerifyDataset reports them.
// `names` is a list or an {id: name} map with ids 0..nc-1 without gaps; `nc`,
// if present, must agree with it.
//
// Errors (each names the yaml file and the key): NOT_FOUND for a missing yaml,
// or a missing split directory or list; INVALID_ARGUMENT for a file that is not
// a YAML mapping, a missing `train`/`val`/`names`, bad names or nc, or a train
// or val split without images.
absl::StatusOr<DatasetSpec> LoadDatasetYaml(const std::string& path);

// "shapes" generates the built-in dataset once under
// {data_dir}/datasets/shapes (see GenerateShapes) and returns its data.yaml;
// anything else is a data.yaml path that must exist, returned absolute.
// Errors: NOT_FOUND (no such file), or GenerateShapes' errors.
absl::StatusOr<std::string> ResolveDataYaml(const std::string& data,
                                            const std::string& data_dir);

// Every file a data.yaml at `path` names: the dataset root, each split's
// images and the label files beside them (for checking that a job's data
// stays within the directories it may read). Errors: LoadDatasetYaml's.
absl::StatusOr<std::vector<std::string>> DatasetFiles(const std::string& path);

// The label file of an image, by Ultralytics' rule: the last "/images/"
// component becomes "/labels/" and the extension ".txt". An image outside any
// "images" directory has its label file beside it.
std::string LabelPathFor(const std::string& image_path);

}  // namespace yolohook::data

#endif  // YOLOHOOK_SERVER_ENGINE_DATA_DATASET_YAML_H_
